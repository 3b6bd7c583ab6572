"""All SQL of training: runs, and reading a segment's feedback as numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.feedback.models import Feedback
from app.training.models import JobFiring, TrainingRun

OPEN_STATUSES = ("queued", "running")
TRAINED_STATUSES = ("deployed", "rejected")
_ARRAY_DTYPE = np.dtype([("score", np.float64), ("label", np.bool_)])

feedback_table = Feedback.__table__


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
        .where(TrainingRun.id == run_id, TrainingRun.status == "queued")
        .values(status="running", started_at=now, heartbeat_at=now)
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
            .values(status="failed", reason=reason, error=reason, finished_at=now)
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


def max_feedback_id(session: Session, segment: str | None) -> int | None:
    """The newest feedback id of a segment (``None``: of all segments)."""
    statement = select(func.max(feedback_table.c.id))
    if segment is not None:
        statement = statement.where(feedback_table.c.segment == segment)
    return session.execute(statement).scalar_one()


def count_feedback_between(
    session: Session, segment: str | None, after_id: int, up_to_id: int
) -> int:
    """Feedback records with ids in (after_id, up_to_id] of a segment (``None``: of all)."""
    statement = select(func.count()).where(
        feedback_table.c.id > after_id, feedback_table.c.id <= up_to_id
    )
    if segment is not None:
        statement = statement.where(feedback_table.c.segment == segment)
    return session.execute(statement).scalar_one()


def feedback_segments(session: Session, up_to_id: int) -> list[str]:
    """The segments holding feedback with ids up to ``up_to_id``."""
    statement = (
        select(feedback_table.c.segment)
        .where(feedback_table.c.id <= up_to_id)
        .group_by(feedback_table.c.segment)
        .order_by(feedback_table.c.segment)
    )
    return list(session.scalars(statement))


# A binary COPY row of (float8 NOT NULL, bool NOT NULL): the field count, then each field's
# length and big-endian value: 2 + (4 + 8) + (4 + 1) = 19 bytes, parsed by numpy in one go
# (psycopg's per-row parsing costs about 2x more).
_PG_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("score_len", ">i4"),
        ("score", ">f8"),
        ("label_len", ">i4"),
        ("label", "u1"),
    ]
)
_PG_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def _pg_binary_rows(buffer: bytearray) -> np.ndarray:
    """The rows of a PostgreSQL binary COPY of (score, label), checked field by field."""
    if buffer[:11] != _PG_SIGNATURE:
        raise ValueError("not a PostgreSQL binary COPY stream")
    start = 19 + int.from_bytes(buffer[15:19], "big")  # header, then its extension area
    end = len(buffer) - 2  # the trailer: a field count of -1
    if buffer[end:] != b"\xff\xff" or (end - start) % _PG_ROW.itemsize:
        raise ValueError("unexpected PostgreSQL binary COPY layout")
    rows = np.frombuffer(memoryview(buffer)[start:end], dtype=_PG_ROW)
    layout_ok = (
        (rows["fields"] == 2).all()
        and (rows["score_len"] == 8).all()
        and (rows["label_len"] == 1).all()
    )
    if not layout_ok:
        raise ValueError("unexpected PostgreSQL binary COPY row layout")
    return rows


def feedback_arrays(
    session: Session, segment: str, up_to_id: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scores and labels of a segment up to a feedback id, from the driver straight to numpy.

    SQLAlchemy Row objects cost ~20x more than the driver's tuples, so rows go from the DBAPI
    cursor into one structured array (on PostgreSQL, a binary COPY parsed by numpy).
    """
    connection = session.connection()
    dbapi = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        query = (
            "COPY (SELECT score, label FROM feedback WHERE segment = %s AND id <= %s ORDER BY id)"
            " TO STDOUT (FORMAT BINARY)"
        )
        with dbapi.cursor() as cursor, cursor.copy(query, (segment, up_to_id)) as copy:
            buffer = bytearray()
            for block in copy:
                buffer += block
        rows = _pg_binary_rows(buffer)
        return rows["score"].astype(np.float64), rows["label"].astype(np.float64)
    else:
        cursor = dbapi.cursor()
        try:
            cursor.execute(
                "SELECT score, label FROM feedback WHERE segment = ? AND id <= ? ORDER BY id",
                (segment, up_to_id),
            )
            rows = np.fromiter(cursor, dtype=_ARRAY_DTYPE)
        finally:
            cursor.close()
    return np.ascontiguousarray(rows["score"]), rows["label"].astype(np.float64)


def claim_firing(
    session: Session, *, job_id: str, scheduled_for: datetime, claimed_by: str, now: datetime
) -> bool:
    """Claim one scheduled firing of a job; ``False`` when another replica already has it."""
    firing = JobFiring(
        job_id=job_id, scheduled_for=scheduled_for, claimed_by=claimed_by, claimed_at=now
    )
    try:
        with session.begin_nested():
            session.add(firing)
    except IntegrityError:
        return False
    return True


def finish_firing(
    session: Session, *, job_id: str, scheduled_for: datetime, outcome: str, now: datetime
) -> None:
    session.execute(
        update(JobFiring)
        .where(JobFiring.job_id == job_id, JobFiring.scheduled_for == scheduled_for)
        .values(outcome=outcome, finished_at=now)
    )


def last_firing(session: Session, job_id: str) -> JobFiring | None:
    statement = (
        select(JobFiring)
        .where(JobFiring.job_id == job_id)
        .order_by(JobFiring.scheduled_for.desc())
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
