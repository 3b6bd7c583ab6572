"""The training_run table and the statuses a run moves through."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
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


class RunStatus(StrEnum):
    """Where a training run stands; the last four are final."""

    QUEUED = "queued"
    RUNNING = "running"
    DEPLOYED = "deployed"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    FAILED = "failed"


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    API = "api"
    CLI = "cli"


# At most one open run per segment; a trained run fitted a calibrator (its data is "used").
OPEN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
TRAINED_STATUSES = (RunStatus.DEPLOYED, RunStatus.REJECTED)
FINAL_STATUSES = tuple(status for status in RunStatus if status not in OPEN_STATUSES)


def _one_of(column: str, values: Iterable[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(str(value)) for value in values)})"


class TrainingRun(Base):
    __tablename__ = "training_run"
    __table_args__ = (
        CheckConstraint(_one_of("status", RunStatus), name="status"),
        CheckConstraint(_one_of('"trigger"', RunTrigger), name="trigger"),
        # At most one queued or running run per segment, enforced by the database.
        Index(
            "uq_training_run_one_open",
            "segment",
            unique=True,
            sqlite_where=text(_one_of("status", OPEN_STATUSES)),
            postgresql_where=text(_one_of("status", OPEN_STATUSES)),
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
