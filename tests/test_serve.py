"""``calibration-service serve`` as an operator runs it: its log lines, read from the process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

COMMAND = str(Path(sys.executable).parent / "calibration-service")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_and_stop(tmp_path: Path, **env: str) -> list[str]:
    """Start the server (migrating first), make one request, stop it; every line it wrote."""
    port = free_port()
    environment = os.environ | {
        "CALIB_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "CALIB_SCHEDULER_ENABLED": "true",
        **env,
    }
    environment.pop("CALIB_API_KEYS", None)
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [COMMAND, "serve", "--migrate", "--port", str(port)],
            cwd=tmp_path,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, log.read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert httpx.get(f"http://127.0.0.1:{port}/v1/feedback/stats").status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)
    return [line for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_every_line_is_printed_once(tmp_path: Path) -> None:
    lines = serve_and_stop(tmp_path)
    for text in (
        "no API keys configured",
        "Application startup complete",
        "database at revision head",
        "GET /v1/feedback/stats",
    ):
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert not any("setup plugin" in line for line in lines)


@pytest.mark.slow
def test_json_logs_are_one_object_per_line_from_every_library(tmp_path: Path) -> None:
    lines = serve_and_stop(tmp_path, CALIB_LOG_JSON="true")
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all(
        isinstance(e, dict) and {"time", "level", "logger", "message"} <= set(e) for e in entries
    )
    loggers = {entry["logger"].split(".")[0] for entry in entries}
    assert {"app", "uvicorn", "apscheduler", "alembic"} <= loggers, loggers
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert any("GET /v1/feedback/stats" in e["message"] for e in access)
    assert sum("no API keys configured" in e["message"] for e in entries) == 1
