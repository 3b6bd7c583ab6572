"""Runs training off the request path: worker threads, heartbeats, and a reaper for dead runs."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from app.db import Database
from app.training import service
from app.training.pipeline import TrainingPolicy

logger = logging.getLogger(__name__)

_STOP = -1


class TrainingRunner:
    """A small pool of daemon threads executing queued runs, one heartbeat per running run.

    A run whose heartbeat is older than ``stale_after`` belongs to a worker that died: the
    reaper (every ``reap_every``, and once at start) marks it failed so the segment is free.
    """

    def __init__(
        self,
        database: Database,
        policy: TrainingPolicy,
        *,
        workers: int = 2,
        heartbeat_every: float = 5.0,
        stale_after: float = 30.0,
        reap_every: float = 10.0,
    ) -> None:
        self.database = database
        self.policy = policy
        self.heartbeat_every = heartbeat_every
        self.stale_after = timedelta(seconds=stale_after)
        self.reap_every = reap_every
        self._queue: queue.Queue[int] = queue.Queue()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"training-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        self._threads.append(
            threading.Thread(target=self._reap_forever, name="training-reaper", daemon=True)
        )

    def start(self) -> None:
        try:
            self.recover()
        except SQLAlchemyError as exc:
            # Not fatal: the service must come up (and report not-ready) without its database.
            logger.warning("could not recover abandoned training runs at startup: %s", exc)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop taking work. A run in progress is abandoned and later reaped as failed."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(_STOP)

    def submit(self, run_id: int) -> None:
        self._queue.put(run_id)

    def recover(self) -> list[int]:
        """Mark failed the runs left open by dead workers.

        On SQLite the service is a single process, so at start every open run is an orphan;
        on PostgreSQL other replicas may be working, so only stale heartbeats count.
        """
        stale_after = timedelta(0) if self.database.settings.is_sqlite else self.stale_after
        return self._fail_abandoned(stale_after)

    def _fail_abandoned(self, stale_after: timedelta) -> list[int]:
        reason = "abandoned: the worker running it stopped (process died or was restarted)"
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
            try:
                with self._heartbeat(run_id):
                    service.execute_run(self.database, self.policy, run_id)
            except Exception:
                logger.exception("training run %s crashed the worker", run_id)

    @contextmanager
    def _heartbeat(self, run_id: int) -> Iterator[None]:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat_every):
                try:
                    with self.database.session_scope() as session:
                        service.heartbeat(session, run_id=run_id)
                except Exception:
                    logger.exception("heartbeat of training run %s failed", run_id)

        thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
