"""All SQL of monitoring: health snapshots, recent feedback for drift, metric counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.feedback.models import Feedback
from app.health.models import HealthCheck

feedback_table = Feedback.__table__


def ping(session: Session) -> None:
    """One round trip to the database."""
    session.execute(select(1))


def add_snapshot(session: Session, *, status: str, report: dict[str, Any], now: datetime) -> int:
    snapshot = HealthCheck(status=status, report=report, checked_at=now)
    session.add(snapshot)
    session.flush()
    return snapshot.id


def snapshots(session: Session, *, before_id: int | None, limit: int) -> list[HealthCheck]:
    statement = select(HealthCheck).order_by(HealthCheck.id.desc()).limit(limit)
    if before_id is not None:
        statement = statement.where(HealthCheck.id < before_id)
    return list(session.scalars(statement))


def recent_feedback(
    session: Session, *, segment: str, after_id: int, limit: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scores and labels of the newest ``limit`` records of a segment after ``after_id``."""
    statement = (
        select(feedback_table.c.score, feedback_table.c.label)
        .where(feedback_table.c.segment == segment, feedback_table.c.id > after_id)
        .order_by(feedback_table.c.id.desc())
        .limit(limit)
    )
    rows = [(score, float(label)) for score, label in session.execute(statement)]
    array = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return array[:, 0].copy(), array[:, 1].copy()


def feedback_counts_after(session: Session, after_id: int) -> list[tuple[str, bool, int, int]]:
    """(segment, label, count, max id) of records after ``after_id``: an index range scan."""
    statement = (
        select(
            feedback_table.c.segment,
            feedback_table.c.label,
            func.count(),
            func.max(feedback_table.c.id),
        )
        .where(feedback_table.c.id > after_id)
        .group_by(feedback_table.c.segment, feedback_table.c.label)
    )
    return [(segment, bool(label), n, top) for segment, label, n, top in session.execute(statement)]
