"""All SQL touching the feedback table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Row, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.feedback.models import Feedback
from app.training.models import TrainingRun

_LOOKUP_CHUNK = 1000
# Runs that fitted a calibrator on the data up to their watermark.
TRAINED_STATUSES = ("deployed", "rejected")

feedback_table = Feedback.__table__


def _insert_skipping_known_ids(session: Session) -> Insert:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(feedback_table).on_conflict_do_nothing(index_elements=["external_id"])


def insert_one(session: Session, row: dict[str, Any]) -> int | None:
    """Insert one record; ``None`` when its ``external_id`` is already stored."""
    statement = _insert_skipping_known_ids(session).returning(feedback_table.c.id)
    return session.execute(statement, row).scalar_one_or_none()


def insert_many(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert records in one executemany; rows whose ``external_id`` exists are skipped."""
    if not rows:
        return 0
    statement = _insert_skipping_known_ids(session)
    if session.get_bind().dialect.name == "sqlite":
        return session.execute(statement, rows).rowcount
    # psycopg reports no rowcount for executemany; count the ids that came back instead.
    return len(session.execute(statement.returning(feedback_table.c.id), rows).all())


def get(session: Session, feedback_id: int) -> Feedback | None:
    return session.get(Feedback, feedback_id)


def get_by_external_id(session: Session, external_id: str) -> Feedback | None:
    return session.scalars(select(Feedback).where(Feedback.external_id == external_id)).first()


def body_hashes(session: Session, external_ids: Iterable[str]) -> dict[str, str | None]:
    """The stored body hash of each given ``external_id`` that exists."""
    wanted = list(external_ids)
    found: dict[str, str | None] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        statement = select(feedback_table.c.external_id, feedback_table.c.body_sha256).where(
            feedback_table.c.external_id.in_(chunk)
        )
        found.update((key, digest) for key, digest in session.execute(statement))
    return found


def page(
    session: Session,
    *,
    segment: str | None,
    since: datetime | None,
    after_id: int | None,
    limit: int,
) -> list[Feedback]:
    """Records in id order after ``after_id``: a stable order that new records only extend."""
    statement = select(Feedback).order_by(Feedback.id).limit(limit)
    if segment is not None:
        statement = statement.where(Feedback.segment == segment)
    if since is not None:
        statement = statement.where(Feedback.received_at >= since)
    if after_id is not None:
        statement = statement.where(Feedback.id > after_id)
    return list(session.scalars(statement))


def training_watermarks(session: Session) -> dict[str, int]:
    """Per segment, the last feedback id that a completed training run used."""
    statement = (
        select(TrainingRun.segment, func.max(TrainingRun.last_feedback_id))
        .where(TrainingRun.status.in_(TRAINED_STATUSES))
        .group_by(TrainingRun.segment)
    )
    return {segment: last_id for segment, last_id in session.execute(statement) if last_id}


def counts_by_segment_and_label(
    session: Session, watermarks: dict[str, int]
) -> Sequence[Row[tuple[str, bool, int, int]]]:
    """(segment, label, count, count above the segment's watermark) for every stored pair."""
    watermark = (
        case(
            *((feedback_table.c.segment == seg, last_id) for seg, last_id in watermarks.items()),
            else_=0,
        )
        if watermarks
        else 0
    )
    new_rows = func.sum(case((feedback_table.c.id > watermark, 1), else_=0))
    statement = select(
        feedback_table.c.segment,
        feedback_table.c.label,
        func.count(),
        new_rows,
    ).group_by(feedback_table.c.segment, feedback_table.c.label)
    return session.execute(statement).all()
