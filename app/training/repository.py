"""All SQL of the training_run table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.training.models import OPEN_STATUSES, TRAINED_STATUSES, RunStatus, TrainingRun


def insert_run(session: Session, **fields: Any) -> TrainingRun | None:
    """Insert a queued run; ``None`` when the segment already has an open run."""
    run = TrainingRun(**fields)
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        return None
    return run


def open_run(session: Session, segment: str) -> TrainingRun | None:
    statement = select(TrainingRun).where(
        TrainingRun.segment == segment, TrainingRun.status.in_(OPEN_STATUSES)
    )
    return session.scalars(statement).first()


def get_run(session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def list_runs(
    session: Session,
    *,
    segment: str | None,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[TrainingRun]:
    statement = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    if segment is not None:
        statement = statement.where(TrainingRun.segment == segment)
    if status is not None:
        statement = statement.where(TrainingRun.status == status)
    if before_id is not None:
        statement = statement.where(TrainingRun.id < before_id)
    return list(session.scalars(statement))


def claim_run(session: Session, run_id: int, now: datetime) -> bool:
    """Move a queued run to running; ``False`` if someone else already did."""
    statement = (
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.QUEUED)
        .values(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now)
    )
    return session.execute(statement).rowcount == 1


def touch_heartbeats(session: Session, run_ids: Sequence[int], now: datetime) -> None:
    """Prove the holder of these open runs is alive."""
    statement = (
        update(TrainingRun)
        .where(TrainingRun.id.in_(run_ids), TrainingRun.status.in_(OPEN_STATUSES))
        .values(heartbeat_at=now)
    )
    session.execute(statement)


def finish_run(session: Session, run_id: int, **fields: Any) -> bool:
    """Close a running run; ``False`` if it is no longer running (e.g. declared dead)."""
    statement = (
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status.in_(OPEN_STATUSES))
        .values(**fields)
    )
    return session.execute(statement).rowcount == 1


def fail_abandoned_runs(
    session: Session, *, stale_before: datetime, now: datetime, reason: str
) -> Sequence[int]:
    """Mark failed the open runs whose worker stopped heartbeating before ``stale_before``."""
    abandoned = TrainingRun.status.in_(OPEN_STATUSES) & (
        func.coalesce(TrainingRun.heartbeat_at, TrainingRun.created_at) < stale_before
    )
    ids = session.scalars(select(TrainingRun.id).where(abandoned)).all()
    if ids:
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id.in_(ids), TrainingRun.status.in_(OPEN_STATUSES))
            .values(status=RunStatus.FAILED, reason=reason, error=reason, finished_at=now)
        )
    return ids


def last_trained_run(session: Session, segment: str) -> TrainingRun | None:
    """The newest run that fitted a calibrator (deployed or rejected)."""
    statement = (
        select(TrainingRun)
        .where(TrainingRun.segment == segment, TrainingRun.status.in_(TRAINED_STATUSES))
        .order_by(TrainingRun.finished_at.desc(), TrainingRun.id.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def latest_finished_runs(session: Session) -> dict[str, TrainingRun]:
    """Per segment, the newest run that reached a final status."""
    newest = (
        select(TrainingRun.segment, func.max(TrainingRun.id).label("id"))
        .where(TrainingRun.status.not_in(OPEN_STATUSES))
        .group_by(TrainingRun.segment)
        .subquery()
    )
    statement = select(TrainingRun).join(newest, TrainingRun.id == newest.c.id)
    return {run.segment: run for run in session.scalars(statement)}


def count_runs_by_status(session: Session) -> dict[str, int]:
    statement = select(TrainingRun.status, func.count()).group_by(TrainingRun.status)
    return {status: count for status, count in session.execute(statement)}


def training_watermarks(session: Session) -> dict[str, int]:
    """Per segment, the last feedback id that a completed training run used."""
    statement = (
        select(TrainingRun.segment, func.max(TrainingRun.last_feedback_id))
        .where(TrainingRun.status.in_(TRAINED_STATUSES))
        .group_by(TrainingRun.segment)
    )
    return {segment: last_id for segment, last_id in session.execute(statement) if last_id}


def run_results(session: Session, run_id: int) -> dict[str, Any] | None:
    """The stored ``evaluation_results`` of a training run (None when absent)."""
    statement = select(TrainingRun.evaluation_results).where(TrainingRun.id == run_id)
    return session.execute(statement).scalar_one_or_none()
