"""Shared infrastructure of the benches: fresh databases, a free port, the service in a subprocess.

The benches run as scripts (``python bench/ingest.py``), so Python puts this folder first on
``sys.path`` and ``from support import ...`` finds this module from any working directory.
Importing it also puts the project root on ``sys.path``, so ``from app import ...`` works.

``app.migrations`` and ``httpx`` are imported inside the functions that need them: the phase
subprocesses of ``training.py`` import this module and measure their own peak memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
STARTUP_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10

# argv: database URL, port, API key, then the key's scopes.
SERVER = """
import gc, sys, uvicorn
from app.config import Settings
from app.main import create_app
settings = Settings(
    database_url=sys.argv[1],
    env="test",
    scheduler_enabled=False,
    api_keys={sys.argv[3]: sys.argv[4:]},
)
app = create_app(settings)
gc.freeze()  # as `calibration-service serve` does
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), workers=1, log_level="warning")
"""


# --- fresh databases -------------------------------------------------------------------------


@dataclass(frozen=True)
class SqliteDatabase:
    url: str  # SQLAlchemy URL, sqlite:///...
    path: Path


@dataclass(frozen=True)
class PostgresDatabase:
    url: str  # SQLAlchemy URL, postgresql+psycopg://...
    dsn: str  # libpq/psycopg DSN
    name: str


@contextlib.contextmanager
def sqlite_database(
    prefix: str = "calib_bench_", filename: str = "bench.db"
) -> Iterator[SqliteDatabase]:
    """A migrated, empty SQLite file in a temporary folder, removed on exit."""
    from app import migrations

    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        path = Path(folder) / filename
        url = f"sqlite:///{path}"
        migrations.upgrade(url)
        yield SqliteDatabase(url=url, path=path)


@contextlib.contextmanager
def postgres_database(
    admin_dsn: str = DEFAULT_ADMIN_DSN, prefix: str = "calib_bench_"
) -> Iterator[PostgresDatabase]:
    """A migrated, empty PostgreSQL database ``<prefix><random>`` on the server of
    ``admin_dsn`` (a connection allowed to create databases), dropped on exit."""
    from app import migrations

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
        url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        migrations.upgrade(url)
        yield PostgresDatabase(url=url, dsn=dsn, name=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- the service in a subprocess -------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``STOP_TIMEOUT_S``."""
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_service(
    database_url: str,
    api_key: str,
    scopes: Sequence[str],
    *,
    deadline: float | None = None,
    stderr_path: Path | None = None,
) -> Iterator[str]:
    """The real service under uvicorn (one worker) on a free loopback port; yields its base URL
    once ``/health/live`` answers 200, and stops the process on exit.

    ``api_key`` is accepted with ``scopes``. Start-up fails after ``STARTUP_TIMEOUT_S`` or at
    ``deadline`` (``time.monotonic()``), whichever comes first. With ``stderr_path`` the
    server's stdout is discarded and its stderr written to that file (quoted if it exits
    early); otherwise both are inherited.
    """
    import httpx

    port = free_port()
    command = [sys.executable, "-c", SERVER, database_url, str(port), api_key, *scopes]
    with contextlib.ExitStack() as stack:
        output: dict[str, object] = {}
        if stderr_path is not None:
            output = {
                "stdout": subprocess.DEVNULL,
                "stderr": stack.enter_context(stderr_path.open("wb")),
            }
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            **output,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            while True:
                if process.poll() is not None:
                    message = f"the service exited with code {process.returncode}"
                    if stderr_path is not None:
                        message += ":\n" + stderr_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(message)
                now = time.monotonic()
                if now - started > STARTUP_TIMEOUT_S or (deadline is not None and now > deadline):
                    raise RuntimeError(f"the service did not start within {STARTUP_TIMEOUT_S} s")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            yield base_url
        finally:
            stop_process(process)


# --- what a server process costs ----------------------------------------------------------


def server_pid(base_url: str) -> int:
    """The process listening on the URL's port (``ss`` from iproute2)."""
    import httpx

    port = httpx.URL(base_url).port
    listing = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"pid=(\d+)", listing)
    if match is None:
        raise RuntimeError(f"no process found listening on port {port}")
    return int(match.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
