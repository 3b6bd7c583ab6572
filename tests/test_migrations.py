"""Alembic owns the schema: it matches the models, goes down and up, and enforces the rules."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect
from sqlalchemy.exc import IntegrityError

from app import migrations
from app.db import utcnow
from app.models import Base, ModelVersion, TrainingRun


def test_schema_matches_the_models(clean_database: str) -> None:
    engine = create_engine(clean_database)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_back(clean_database: str) -> None:
    engine = create_engine(clean_database)
    migrations.downgrade(clean_database, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrations.upgrade(clean_database)
    assert {"feedback", "model_version", "training_run", "model_event"} <= set(
        inspect(engine).get_table_names()
    )
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()


def _model(segment: str, version: int, status: str) -> dict[str, object]:
    return {
        "segment": segment,
        "version": version,
        "method": "identity",
        "params": {},
        "metrics": {},
        "status": status,
        "n_train": 0,
        "n_validation": 0,
        "artifact": {},
        "artifact_sha256": "0" * 64,
        "created_at": utcnow(),
    }


def test_database_allows_one_active_model_per_segment(clean_database: str) -> None:
    engine = create_engine(clean_database)
    with engine.begin() as connection:
        connection.execute(
            insert(ModelVersion), [_model("a", 1, "active"), _model("b", 1, "active")]
        )
        connection.execute(insert(ModelVersion), [_model("a", 2, "archived")])
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(ModelVersion), [_model("a", 3, "active")])
    engine.dispose()


def _run(segment: str, status: str) -> dict[str, object]:
    return {
        "segment": segment,
        "trigger": "api",
        "status": status,
        "force": False,
        "created_at": utcnow(),
    }


def test_database_allows_one_open_run_per_segment(clean_database: str) -> None:
    engine = create_engine(clean_database)
    with engine.begin() as connection:
        connection.execute(
            insert(TrainingRun),
            [_run("a", "running"), _run("a", "deployed"), _run("a", "failed"), _run("b", "queued")],
        )
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(TrainingRun), [_run("a", "queued")])
    engine.dispose()
