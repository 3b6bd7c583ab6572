"""The activation log read as live periods: which version was live when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from app.params import cursor_id, page_of
from app.registry import repository
from app.registry.schemas import LivePeriod, LivePeriodPage


def _period(row: Row[Any]) -> LivePeriod:
    return LivePeriod(
        segment=row.segment,
        version=row.version,
        event=row.event,
        actor=row.actor,
        reason=row.reason,
        previous_version=row.previous_version,
        live_from=row.occurred_at,
        live_until=row.live_until,
    )


def history(
    session: Session,
    *,
    segment: str | None,
    at: datetime | None,
    limit: int,
    cursor: str | None,
) -> LivePeriodPage:
    """Activation periods, newest first, or only those live at ``at`` (one per segment)."""
    if at is not None:
        rows = repository.live_periods(session, segment=segment, at=at, before_id=None, limit=0)
        return LivePeriodPage(items=[_period(row) for row in rows], next_cursor=None)
    rows = repository.live_periods(
        session, segment=segment, at=None, before_id=cursor_id(cursor), limit=limit + 1
    )
    rows, next_cursor = page_of(rows, limit)
    return LivePeriodPage(items=[_period(row) for row in rows], next_cursor=next_cursor)
