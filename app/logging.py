"""Logging setup: one handler for the whole process, plain lines or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Libraries whose lines go through our handler: uvicorn and Alembic install handlers of their
# own (printing each line twice, and never as JSON), APScheduler is listed for completeness.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler", "alembic")
# Chatty at INFO without telling an operator anything: Alembic's plugin set-up (seven lines at
# every migration check) and httpx's line per request.
_QUIET_LOGGERS = ("alembic.runtime.plugins", "httpx")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _ServiceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the ``sys.stderr`` of the moment, so a replaced stream is never written to."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(*, json_lines: bool, level: int = logging.INFO) -> None:
    """Send every logger's lines through one root handler; repeated calls replace it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ServiceHandler):
            root.removeHandler(handler)
    handler = _ServiceHandler()
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("app", *_LIBRARY_LOGGERS):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
