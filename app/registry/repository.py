"""All SQL of the model registry: versions and their activation events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.registry.models import ModelEvent, ModelVersion
from app.training.models import TrainingRun

ACTIVATION_EVENTS = ("activated", "rolled_back")


def lock_segment(session: Session, segment: str) -> None:
    """Serialise registry writes for one segment until the transaction ends.

    SQLite write transactions are already serial (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock keyed by the segment name.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"model-registry:{segment}"},
        )


def get_active(session: Session, segment: str) -> ModelVersion | None:
    statement = select(ModelVersion).where(
        ModelVersion.segment == segment, ModelVersion.status == "active"
    )
    return session.scalars(statement).first()


def get_version(session: Session, segment: str, version: int) -> ModelVersion | None:
    statement = select(ModelVersion).where(
        ModelVersion.segment == segment, ModelVersion.version == version
    )
    return session.scalars(statement).first()


def next_version_number(session: Session, segment: str) -> int:
    statement = select(func.coalesce(func.max(ModelVersion.version), 0)).where(
        ModelVersion.segment == segment
    )
    return int(session.execute(statement).scalar_one()) + 1


def add_version(session: Session, **fields: Any) -> ModelVersion:
    model = ModelVersion(**fields)
    session.add(model)
    session.flush()
    return model


def set_status(
    session: Session, model: ModelVersion, status: str, *, activated_at: datetime | None = None
) -> None:
    model.status = status
    if activated_at is not None:
        model.activated_at = activated_at
    # Flushed one by one: the partial unique index must see the old active row archived first.
    session.flush()


def add_event(session: Session, **fields: Any) -> ModelEvent:
    event = ModelEvent(**fields)
    session.add(event)
    session.flush()
    return event


def list_versions(
    session: Session,
    *,
    segment: str | None,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[ModelVersion]:
    """Newest first; ``before_id`` continues a previous page."""
    statement = select(ModelVersion).order_by(ModelVersion.id.desc()).limit(limit)
    if segment is not None:
        statement = statement.where(ModelVersion.segment == segment)
    if status is not None:
        statement = statement.where(ModelVersion.status == status)
    if before_id is not None:
        statement = statement.where(ModelVersion.id < before_id)
    return list(session.scalars(statement))


def activation_events(
    session: Session, *, segment: str | None, before_id: int | None, limit: int
) -> Sequence[ModelEvent]:
    """Activation and rollback events, newest first."""
    statement = (
        select(ModelEvent)
        .where(ModelEvent.event.in_(ACTIVATION_EVENTS))
        .order_by(ModelEvent.id.desc())
        .limit(limit)
    )
    if segment is not None:
        statement = statement.where(ModelEvent.segment == segment)
    if before_id is not None:
        statement = statement.where(ModelEvent.id < before_id)
    return session.scalars(statement).all()


def next_activation_after(session: Session, event: ModelEvent) -> ModelEvent | None:
    """The activation that ended ``event``'s live period in its segment, if any."""
    statement = (
        select(ModelEvent)
        .where(
            ModelEvent.segment == event.segment,
            ModelEvent.event.in_(ACTIVATION_EVENTS),
            ModelEvent.id > event.id,
        )
        .order_by(ModelEvent.id)
        .limit(1)
    )
    return session.scalars(statement).first()


def event_segments(session: Session) -> list[str]:
    """Every segment that has had an activation."""
    statement = select(ModelEvent.segment).distinct().order_by(ModelEvent.segment)
    return list(session.scalars(statement))


def activation_live_at(session: Session, segment: str, at: datetime) -> ModelEvent | None:
    """The last activation in ``segment`` at or before ``at``."""
    statement = (
        select(ModelEvent)
        .where(
            ModelEvent.segment == segment,
            ModelEvent.event.in_(ACTIVATION_EVENTS),
            ModelEvent.occurred_at <= at,
        )
        .order_by(ModelEvent.occurred_at.desc(), ModelEvent.id.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def list_active(session: Session) -> list[ModelVersion]:
    """The active version of every segment that has one."""
    statement = select(ModelVersion).where(ModelVersion.status == "active")
    return list(session.scalars(statement.order_by(ModelVersion.segment)))


def training_run_results(session: Session, run_id: int) -> dict[str, Any] | None:
    """The stored ``evaluation_results`` of a training run (None when absent)."""
    statement = select(TrainingRun.evaluation_results).where(TrainingRun.id == run_id)
    return session.execute(statement).scalar_one_or_none()
