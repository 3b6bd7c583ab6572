"""All SQL of shadow comparisons."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.shadow.models import ShadowComparison


def insert_running(session: Session, **fields: Any) -> ShadowComparison | None:
    """Store a running comparison; ``None`` when the segment already has one (the index says)."""
    comparison = ShadowComparison(status="running", **fields)
    try:
        with session.begin_nested():
            session.add(comparison)
            session.flush()
    except IntegrityError:
        return None
    return comparison


def latest(session: Session, segment: str) -> ShadowComparison | None:
    statement = (
        select(ShadowComparison)
        .where(ShadowComparison.segment == segment)
        .order_by(ShadowComparison.id.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def running(session: Session, segment: str | None = None) -> list[ShadowComparison]:
    statement = select(ShadowComparison).where(ShadowComparison.status == "running")
    if segment is not None:
        statement = statement.where(ShadowComparison.segment == segment)
    return list(session.scalars(statement.order_by(ShadowComparison.id)))


def latest_per_segment(session: Session) -> list[ShadowComparison]:
    """The newest comparison of every segment that has had one."""
    newest = select(func.max(ShadowComparison.id)).group_by(ShadowComparison.segment)
    statement = select(ShadowComparison).where(ShadowComparison.id.in_(newest))
    return list(session.scalars(statement.order_by(ShadowComparison.segment)))


def advance(session: Session, comparison_id: int, *, from_feedback_id: int, **fields: Any) -> bool:
    """Write new sums and maybe a decision, if nobody moved the watermark or decided meanwhile."""
    statement = (
        update(ShadowComparison)
        .where(
            ShadowComparison.id == comparison_id,
            ShadowComparison.status == "running",
            ShadowComparison.last_feedback_id == from_feedback_id,
        )
        .values(**fields)
    )
    return session.execute(statement).rowcount == 1


def end(session: Session, comparison_id: int, **fields: Any) -> bool:
    """Close a running comparison (stopped, or decided without new records)."""
    statement = (
        update(ShadowComparison)
        .where(ShadowComparison.id == comparison_id, ShadowComparison.status == "running")
        .values(**fields)
    )
    return session.execute(statement).rowcount == 1


def get(session: Session, comparison_id: int) -> ShadowComparison | None:
    return session.get(ShadowComparison, comparison_id)
