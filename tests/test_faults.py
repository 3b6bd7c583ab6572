"""Faults: the database vanishing under load, and a worker killed in the middle of training."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import overconfident_feedback, wait_for_run
from sqlalchemy import create_engine, select

from app import migrations
from app.config import Settings
from app.devserver import serve_in_thread
from app.feedback.models import Feedback
from app.main import create_app

# Slow: subprocess faults: a killed server, a stopped database.
pytestmark = pytest.mark.slow


class TcpProxy:
    """A loopback TCP proxy that can cut every connection and refuse new ones, then recover."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _free_port()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                if self._listener is not listener:  # cut while this one was being accepted
                    client.close()
                    upstream.close()
                    continue
                self._pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and reset the open ones, as a dead database host would."""
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for end in pair:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                    end.close()
                except OSError:
                    pass

    def restore(self) -> None:
        self.start()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_database_outage_answers_503_and_loses_no_acknowledged_record(
    clean_database: str,
) -> None:
    proxy = TcpProxy(5432)
    proxy.start()
    proxied = clean_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert proxied != clean_database
    app = create_app(Settings(database_url=proxied, run_reap_interval_seconds=0.5))
    acknowledged: list[str] = []
    statuses: list[int] = []
    retry_after: list[str] = []
    stop = threading.Event()

    with serve_in_thread(app) as base_url:

        def post_forever() -> None:
            with httpx.Client(base_url=base_url, timeout=15) as http:
                n = 0
                while not stop.is_set():
                    n += 1
                    external_id = f"outage-{threading.get_ident()}-{n}"
                    body = {"score": 0.5, "label": n % 2 == 0, "external_id": external_id}
                    response = http.post("/v1/feedback", json=body)
                    statuses.append(response.status_code)
                    if response.status_code in (200, 201):
                        acknowledged.append(external_id)
                    elif response.status_code == 503:
                        retry_after.append(response.headers.get("Retry-After", ""))
                    time.sleep(0.005)

        posters = [threading.Thread(target=post_forever) for _ in range(3)]
        for poster in posters:
            poster.start()
        # Posts are acknowledged before the cut: wait for the first (a loaded machine may take
        # over a second for it), then let them go on a moment.
        deadline = time.monotonic() + 30
        while not acknowledged and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        before_cut = len(acknowledged)
        proxy.cut()
        time.sleep(1.0)
        with httpx.Client(base_url=base_url, timeout=15) as http:
            health = http.get("/health")
            ready = http.get("/health/ready")
            stats = http.get("/v1/feedback/stats")
        time.sleep(1.0)
        during_cut = len(acknowledged)
        proxy.restore()
        time.sleep(2.0)
        stop.set()
        for poster in posters:
            poster.join()

    proxy.cut()
    assert before_cut > 0
    assert 500 not in statuses and set(statuses) <= {200, 201, 503}
    assert statuses.count(503) > 0 and all(value.isdigit() for value in retry_after)
    assert (health.status_code, health.json()["status"]) == (503, "unhealthy")
    assert ready.status_code == 503 and ready.json()["database"] == "unreachable"
    assert stats.status_code == 503 and stats.headers["Retry-After"].isdigit()
    assert len(acknowledged) > during_cut, "the service did not recover without a restart"

    engine = create_engine(clean_database)
    with engine.connect() as connection:
        stored = set(connection.execute(select(Feedback.external_id)).scalars())
    engine.dispose()
    assert set(acknowledged) <= stored


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def service_process(database_url: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "CALIB_DATABASE_URL": database_url, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"service did not start: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    try:
        yield base_url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def _bulk_load(database_path: Path, n: int) -> None:
    rng = np.random.default_rng(5)
    scores = rng.uniform(0, 1, n)
    labels = rng.uniform(0, 1, n) < 0.5 + (scores - 0.5) * 0.4
    now = "2026-11-26 00:00:00.000000"
    with sqlite3.connect(database_path) as connection:
        connection.executemany(
            "INSERT INTO feedback (segment, score, label, occurred_at, received_at)"
            " VALUES ('default', ?, ?, ?, ?)",
            ((float(s), bool(y), now, now) for s, y in zip(scores, labels, strict=True)),
        )


def test_killed_training_is_failed_on_restart_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    migrations.upgrade(url)
    with service_process(url) as (base_url, _):
        http = httpx.Client(base_url=base_url, timeout=30)
        http.post("/v1/feedback/batch", json={"items": overconfident_feedback(300)})
        first = http.post("/v1/training-runs", json={}).json()
        first = wait_for_run(http, first["id"], timeout=120)
        assert first["status"] == "deployed"
        http.close()

    _bulk_load(path, 800_000)
    with service_process(url) as (base_url, process):
        http = httpx.Client(base_url=base_url, timeout=30)
        total_before = http.get("/v1/feedback/stats").json()["total"]
        run = http.post("/v1/training-runs", json={"force": True}).json()
        deadline = time.monotonic() + 60
        while http.get(f"/v1/training-runs/{run['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        http.close()

    with service_process(url) as (base_url, _):
        http = httpx.Client(base_url=base_url, timeout=30)
        killed = http.get(f"/v1/training-runs/{run['id']}").json()
        assert killed["status"] == "failed"
        assert "abandoned" in killed["reason"]
        active = http.get("/v1/models/active").json()
        assert active["version"] == 1
        assert http.get("/v1/feedback/stats").json()["total"] == total_before == 800_300
        assert [m["version"] for m in http.get("/v1/models").json()["items"]] == [1]
        again = http.post("/v1/training-runs", json={"force": True})
        assert again.status_code == 202
        http.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgres_a_dead_replicas_run_is_reaped_by_another(clean_database: str) -> None:
    fast = {"CALIB_RUN_STALE_AFTER_SECONDS": "2", "CALIB_RUN_REAP_INTERVAL_SECONDS": "0.5"}
    with service_process(clean_database, **fast) as (base_url, process):
        http = httpx.Client(base_url=base_url, timeout=30)
        http.post("/v1/feedback/batch", json={"items": overconfident_feedback(8000)})
        run = http.post("/v1/training-runs", json={"force": True}).json()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        http.close()
    settings = Settings(
        database_url=clean_database, run_stale_after_seconds=2, run_reap_interval_seconds=0.5
    )
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings)) as client:
        reaped = wait_for_run(client, run["id"], timeout=30)
        assert reaped["status"] == "failed" and "abandoned" in reaped["reason"]
        assert client.post("/v1/training-runs", json={"force": True}).status_code == 202
