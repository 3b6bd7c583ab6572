"""Fixtures: a migrated database per backend (SQLite, PostgreSQL), cleaned between tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import DroppingListener
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


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The test's app served over real HTTP on a loopback port."""
    from app.devserver import serve_in_thread

    with serve_in_thread(app) as base_url:
        yield base_url


@pytest.fixture
def dropping_listener() -> Iterator[DroppingListener]:
    listener = DroppingListener()
    try:
        yield listener
    finally:
        listener.close()
