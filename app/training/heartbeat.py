"""The one heartbeat of training runs: proves, every few seconds, that their holder is alive."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.db import Database, utcnow
from app.training import repository

logger = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread touching ``heartbeat_at`` of every run this process holds.

    A run whose heartbeat is older than ``CALIB_RUN_STALE_AFTER_SECONDS`` is declared dead by
    any replica, so a run is held from the moment it is queued here until it is closed.
    """

    def __init__(self, database: Database, *, every: float) -> None:
        self.database = database
        self.every = every
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat_forever, name="training-heartbeat", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def hold(self, run_id: int) -> None:
        with self._lock:
            self._held.add(run_id)

    def release(self, run_id: int) -> None:
        with self._lock:
            self._held.discard(run_id)

    @contextmanager
    def holding(self, run_id: int) -> Iterator[None]:
        """Heartbeat ``run_id`` while the block runs (starting the thread if needed)."""
        self.hold(run_id)
        self.start()
        try:
            yield
        finally:
            self.release(run_id)

    def beat(self) -> None:
        """Touch every held run now."""
        with self._lock:
            held = sorted(self._held)
        if not held:
            return
        try:
            with self.database.session_scope() as session:
                repository.touch_heartbeats(session, held, utcnow())
        except Exception:
            logger.exception("heartbeat of training runs %s failed", held)

    def _beat_forever(self) -> None:
        while not self._stopping.wait(self.every):
            self.beat()
