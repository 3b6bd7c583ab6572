"""The model registry tables: calibrator versions and the log of activations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, UTCDateTime


class ModelStatus(StrEnum):
    ACTIVE = "active"
    REJECTED = "rejected"
    ARCHIVED = "archived"


class EventKind(StrEnum):
    ACTIVATED = "activated"
    ROLLED_BACK = "rolled_back"
    ARCHIVED = "archived"


# The events that start a live period.
ACTIVATION_EVENTS = (EventKind.ACTIVATED, EventKind.ROLLED_BACK)


class ModelVersion(Base):
    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("segment", "version"),
        CheckConstraint(
            f"status IN ({', '.join(repr(str(status)) for status in ModelStatus)})", name="status"
        ),
        # The database, not the code, guarantees at most one active model per segment.
        Index(
            "uq_model_version_one_active",
            "segment",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON())
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON())
    status: Mapped[str] = mapped_column(String(16))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_run.id"))
    n_train: Mapped[int] = mapped_column(Integer)
    n_validation: Mapped[int] = mapped_column(Integer)
    last_feedback_id: Mapped[int | None] = mapped_column(BigInteger)
    artifact: Mapped[dict[str, Any]] = mapped_column(JSON())
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ModelEvent(Base):
    """Every activation, rollback and archival: answers "which model was live at time T"."""

    __tablename__ = "model_event"
    __table_args__ = (Index("ix_model_event_segment_occurred_at", "segment", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    segment: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
