"""Fixtures: a migrated database per backend (SQLite, PostgreSQL), cleaned between tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app import migrations
from app.config import Settings
from app.main import create_app
from app.models import Base

PG_ADMIN_DSN = os.environ.get("CALIB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(database: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def _postgres_or_skip() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable at {PG_ADMIN_DSN}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database migrated to head by Alembic, for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'calibration.db'}"
        migrations.upgrade(url)
        yield url
        return
    name = f"calib_test_{uuid.uuid4().hex[:12]}"
    with _postgres_or_skip() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clean_database(database_url: str) -> str:
    """The session's database with every table emptied before the test."""
    engine = create_engine(database_url)
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Connections a previous test's threads left open must not hold locks on the tables.
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))
    engine.dispose()
    return database_url


@pytest.fixture
def settings(clean_database: str) -> Settings:
    return Settings(database_url=clean_database, env="test", scheduler_enabled=False)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def overconfident_feedback(n: int, *, seed: int = 0, segment: str = "default") -> list[dict]:
    """Feedback from an analyzer whose scores are more extreme than its real accuracy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 1.0, n)
    truth = 0.5 + (scores - 0.5) * 0.4
    labels = rng.uniform(0.0, 1.0, n) < truth
    return [
        {"score": float(s), "label": bool(y), "segment": segment}
        for s, y in zip(scores, labels, strict=True)
    ]


def wait_for_run(client: httpx.Client, run_id: int, timeout: float = 60.0) -> dict:
    """Poll a training run, as a user would, until it leaves queued/running."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/v1/training-runs/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")
        time.sleep(0.05)


def train(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/training-runs", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return wait_for_run(client, response.json()["id"])


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The test's app served over real HTTP on a loopback port."""
    from app.devserver import serve_in_thread

    with serve_in_thread(app) as base_url:
        yield base_url


class DroppingListener:
    """A loopback port that accepts and at once closes every connection, counting them."""

    def __init__(self) -> None:
        import socket
        import threading

        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._drop, daemon=True).start()

    def _drop(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def dropping_listener() -> Iterator[DroppingListener]:
    listener = DroppingListener()
    try:
        yield listener
    finally:
        listener.close()
