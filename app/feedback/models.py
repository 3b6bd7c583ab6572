"""The feedback table: one reviewer verdict on one analyzer finding."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Double, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.config import DEFAULT_SEGMENT
from app.db import Base, BigId, UTCDateTime


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_segment_id", "segment", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    segment: Mapped[str] = mapped_column(String(64), default=DEFAULT_SEGMENT)
    score: Mapped[float] = mapped_column(Double())
    label: Mapped[bool] = mapped_column(Boolean())
    source: Mapped[str | None] = mapped_column(String(128))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True))
    # sha256 of the canonical request body: tells a replay from a conflicting reuse of an id.
    body_sha256: Mapped[str | None] = mapped_column(String(64))
