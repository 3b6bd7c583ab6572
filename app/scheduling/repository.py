"""All SQL of the job_firing table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.scheduling.models import JobFiring


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
