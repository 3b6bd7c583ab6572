"""All SQL of the model registry: versions and their activation events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, func, select, text, type_coerce
from sqlalchemy.orm import Session, defer

from app.calibration.segments import POOLED_SEGMENT
from app.db import HotPath, UTCDateTime
from app.registry.models import ACTIVATION_EVENTS, ModelEvent, ModelStatus, ModelVersion


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


def get_active(
    session: Session, segment: str, *, with_artifact: bool = True
) -> ModelVersion | None:
    """The segment's active version; without the artifact, it loads when first read."""
    statement = select(ModelVersion).where(
        ModelVersion.segment == segment, ModelVersion.status == ModelStatus.ACTIVE
    )
    if not with_artifact:
        statement = statement.options(defer(ModelVersion.artifact))
    return session.scalars(statement).first()


class ServingDigest(NamedTuple):
    """What the serving path needs of the model that answers for a segment (no artifact)."""

    segment: str
    version: int
    method: str
    artifact_sha256: str


# The segment's own active version first (True sorts after False), else the pooled one.
_SERVING = (
    "SELECT segment, version, method, artifact_sha256 FROM model_version"
    " WHERE status = 'active' AND segment IN (?, ?) ORDER BY segment = ? DESC LIMIT 1"
)


async def serving_digest(hot_path: HotPath, segment: str) -> ServingDigest | None:
    """The active version of ``segment``, else of ``_pooled``; read on the event loop."""
    found = await hot_path.read_one(_SERVING, [segment, POOLED_SEGMENT, segment])
    return ServingDigest(*found[0]) if found else None


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


def live_periods(
    session: Session,
    *,
    segment: str | None,
    at: datetime | None,
    before_id: int | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """Activation events with the moment the next one in their segment ended them.

    One query: ``live_until`` is a window function (the next activation's time, by event id)
    over the segment's activations. Newest first, continuing before ``before_id``; with ``at``,
    only the period live at that instant in each segment, by segment name.
    """
    events = ModelEvent.__table__
    next_activation = func.lead(events.c.occurred_at).over(
        partition_by=events.c.segment, order_by=events.c.id
    )
    live_until = type_coerce(next_activation, UTCDateTime()).label("live_until")
    periods = select(events, live_until).where(events.c.event.in_(ACTIVATION_EVENTS))
    if segment is not None:
        periods = periods.where(events.c.segment == segment)
    periods = periods.subquery()
    statement = select(periods)
    if at is not None:
        live = (periods.c.occurred_at <= at) & (
            periods.c.live_until.is_(None) | (periods.c.live_until > at)
        )
        return session.execute(statement.where(live).order_by(periods.c.segment)).all()
    if before_id is not None:
        statement = statement.where(periods.c.id < before_id)
    return session.execute(statement.order_by(periods.c.id.desc()).limit(limit)).all()


def list_active(session: Session) -> list[ModelVersion]:
    """The active version of every segment that has one."""
    statement = select(ModelVersion).where(ModelVersion.status == ModelStatus.ACTIVE)
    return list(session.scalars(statement.order_by(ModelVersion.segment)))
