"""All SQL of shadow comparisons, and the read of the fresh feedback they score."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.feedback.models import Feedback
from app.shadow.models import ShadowComparison

feedback_table = Feedback.__table__


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


def max_feedback_id(session: Session) -> int:
    return int(
        session.execute(select(func.coalesce(func.max(feedback_table.c.id), 0))).scalar_one()
    )


def feedback_after(
    session: Session, *, segment: str, after_id: int, limit: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Ids, scores and labels of the oldest ``limit`` records of a segment after ``after_id``."""
    statement = (
        select(feedback_table.c.id, feedback_table.c.score, feedback_table.c.label)
        .where(feedback_table.c.segment == segment, feedback_table.c.id > after_id)
        .order_by(feedback_table.c.id)
        .limit(limit)
    )
    rows = session.execute(statement).all()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    scores = np.fromiter((row[1] for row in rows), dtype=np.float64, count=len(rows))
    labels = np.fromiter((row[2] for row in rows), dtype=np.float64, count=len(rows))
    return ids, scores, labels


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
