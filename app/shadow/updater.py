"""Keeps comparisons current as feedback arrives, off the request path and coalesced.

After a feedback post has been answered, ``FeedbackHookMiddleware`` tells the process's
``ShadowUpdater``; the updater scores new records in one background thread. Posts that arrive
while it works only set a flag, so a burst of posts costs one pass, not one per post, and the
single post's own cost is a lock and a flag.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.types import ASGIApp, Receive, Scope, Send

from app.db import Database
from app.shadow import service
from app.shadow.service import ShadowPolicy

logger = logging.getLogger(__name__)

FEEDBACK_PATHS = frozenset({"/v1/feedback", "/v1/feedback/batch"})
# After a pass found nothing running, posts skip the database for this long: a comparison that
# another replica starts is scored from its watermark up to a second later, nothing is lost.
IDLE_RECHECK_SECONDS = 1.0
# Passes start at most this often: posts in between are scored together by the next pass, so a
# running comparison costs one pass per interval, not one per post (which tripled a single
# post's median time on SQLite, measured).
MIN_PASS_INTERVAL_SECONDS = 0.5


class ShadowUpdater:
    """One background pass at a time per process; a request during a pass asks for another."""

    def __init__(self, database: Database, policy: ShadowPolicy) -> None:
        self.database = database
        self.policy = policy
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._lock = threading.Lock()
        self._scheduled = False
        self._again = False
        self._idle_until = 0.0
        self._idle_starts = -1
        self._stopping = threading.Event()

    def notify(self) -> None:
        """New feedback is stored: make sure a pass runs after it."""
        with self._lock:
            if (
                time.monotonic() < self._idle_until
                and service.starts_in_process() == self._idle_starts
            ):
                return
            if self._scheduled:
                self._again = True
                return
            self._scheduled = True
        self._executor.submit(self._run)

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                starts = service.starts_in_process()
                if service.advance(self.database, self.policy) == 0:
                    with self._lock:
                        self._idle_until = time.monotonic() + IDLE_RECHECK_SECONDS
                        self._idle_starts = starts
            except Exception:
                # The records stay after the watermark; the next pass retries them.
                logger.exception("shadow comparison update failed")
            self._stopping.wait(max(0.0, started + MIN_PASS_INTERVAL_SECONDS - time.monotonic()))
            with self._lock:
                if not self._again:
                    self._scheduled = False
                    return
                self._again = False

    def shutdown(self) -> None:
        self._stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=True)


class FeedbackHookMiddleware:
    """Notifies the app's ``ShadowUpdater`` once a feedback post has been answered.

    Refused posts notify too: a pass that finds nothing new costs less than watching statuses.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in FEEDBACK_PATHS
        ):
            updater: ShadowUpdater | None = getattr(scope["app"].state, "shadow_updater", None)
            if updater is not None:
                updater.notify()
