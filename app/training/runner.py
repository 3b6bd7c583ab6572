"""Runs training off the request path: worker threads, heartbeats, and a reaper for dead runs."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from app.db import Database
from app.training import service
from app.training.heartbeat import Heartbeat
from app.training.models import RunStatus

logger = logging.getLogger(__name__)

_STOP = -1


class TrainingRunner:
    """Daemon threads executing queued runs, and a heartbeat for every run this process holds.

    ``execute(run_id)`` runs one queued run to its end and returns its final status (``None``
    when another worker claimed it); the pipeline's ``execute`` is the usual one. A run whose
    heartbeat is older than ``stale_after`` belongs to a worker that died: the reaper (every
    ``reap_every``, and once at start) marks it failed so the segment is free.
    ``on_finished(status, seconds)`` is called after each run this process executed.
    """

    def __init__(
        self,
        execute: Callable[[int], str | None],
        database: Database,
        *,
        workers: int = 2,
        heartbeat_every: float = 5.0,
        stale_after: float = 30.0,
        reap_every: float = 10.0,
        on_finished: Callable[[str, float], None] | None = None,
    ) -> None:
        self.execute = execute
        self.database = database
        self.heartbeat = Heartbeat(database, every=heartbeat_every)
        self.stale_after = timedelta(seconds=stale_after)
        self.reap_every = reap_every
        self.on_finished = on_finished
        self._queue: queue.Queue[int] = queue.Queue()
        self._stopping = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, name=f"training-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        self._reaper = threading.Thread(
            target=self._reap_forever, name="training-reaper", daemon=True
        )

    def start(self) -> None:
        try:
            self.recover()
        except SQLAlchemyError as exc:
            # Not fatal: the service must come up (and report not-ready) without its database.
            logger.warning("could not recover abandoned training runs at startup: %s", exc)
        self.heartbeat.start()
        for thread in [*self._workers, self._reaper]:
            thread.start()

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking work and give runs in progress ``grace`` seconds to finish.

        A run still going after that is abandoned with the process and reaped as failed.
        """
        self._stopping.set()
        for _ in self._workers:
            self._queue.put(_STOP)
        deadline = time.monotonic() + grace
        for thread in self._workers:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.heartbeat.stop()

    def submit(self, run_id: int) -> None:
        # Held while queued too: a run waiting behind others must not look abandoned.
        self.heartbeat.hold(run_id)
        self._queue.put(run_id)

    def recover(self) -> list[int]:
        """Mark failed the runs left open by dead workers.

        On SQLite the service is a single process, so at start every open run is an orphan;
        on PostgreSQL other replicas may be working, so only stale heartbeats count.
        """
        stale_after = timedelta(0) if self.database.settings.is_sqlite else self.stale_after
        return self._fail_abandoned(stale_after)

    def _fail_abandoned(self, stale_after: timedelta) -> list[int]:
        reason = "abandoned: the worker holding it stopped (process died or was restarted)"
        with self.database.session_scope() as session:
            ids = service.fail_abandoned_runs(session, stale_after=stale_after, reason=reason)
        for run_id in ids:
            logger.warning("training run %s marked failed: %s", run_id, reason)
        return ids

    def _reap_forever(self) -> None:
        while not self._stopping.wait(self.reap_every):
            try:
                self._fail_abandoned(self.stale_after)
            except Exception:
                logger.exception("reaping abandoned training runs failed")

    def _work(self) -> None:
        while True:
            run_id = self._queue.get()
            if run_id == _STOP or self._stopping.is_set():
                return
            started = time.perf_counter()
            try:
                status = self.execute(run_id)
            except Exception:
                logger.exception("training run %s crashed the worker", run_id)
                status = RunStatus.FAILED
            finally:
                self.heartbeat.release(run_id)
            if status is not None and self.on_finished is not None:
                self.on_finished(status, time.perf_counter() - started)
