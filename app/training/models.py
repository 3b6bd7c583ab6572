"""Training runs, and claims on scheduled job firings (one replica wins each)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime

RUN_STATUSES = ("queued", "running", "deployed", "rejected", "skipped", "failed")
RUN_TRIGGERS = ("schedule", "api", "cli")


class TrainingRun(Base):
    __tablename__ = "training_run"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'deployed', 'rejected', 'skipped', 'failed')",
            name="status",
        ),
        CheckConstraint("\"trigger\" IN ('schedule', 'api', 'cli')", name="trigger"),
        # At most one queued or running run per segment, enforced by the database.
        Index(
            "uq_training_run_one_open",
            "segment",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("ix_training_run_segment_created_at", "segment", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    evaluation_results: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[int | None] = mapped_column(Integer)
    n_samples: Mapped[int | None] = mapped_column(Integer)
    last_feedback_id: Mapped[int | None] = mapped_column(BigInteger)


class JobFiring(Base):
    """A claim on one scheduled firing: the primary key lets one replica in, the rest out."""

    __tablename__ = "job_firing"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(Text)
