"""All SQL of the health_check table, and the database ping."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.health.models import HealthCheck


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
