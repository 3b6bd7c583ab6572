"""The shadow comparison table: one row per champion/challenger comparison and its running sums."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime

SHADOW_STATUSES = ("running", "promoted", "retired", "stopped")


class ShadowComparison(Base):
    """Challenger minus champion on feedback after ``start_feedback_id``, processed in id order.

    ``last_feedback_id`` is the watermark: every record of the segment up to it is in the sums
    and in ``state`` (the confidence sequence), none after it. Updates are conditional on the
    watermark and on ``status = 'running'``, so replicas never count a record twice and a
    comparison is decided once.
    """

    __tablename__ = "shadow_comparison"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'promoted', 'retired', 'stopped')", name="status"),
        # The database guarantees at most one running comparison per segment.
        Index(
            "uq_shadow_comparison_one_running",
            "segment",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_shadow_comparison_segment_id", "segment", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment: Mapped[str] = mapped_column(String(64))
    challenger_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    challenger_version: Mapped[int] = mapped_column(Integer)
    champion_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    champion_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    alpha: Mapped[float] = mapped_column(Double())
    started_by: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    start_feedback_id: Mapped[int] = mapped_column(BigInteger)
    last_feedback_id: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(Integer)
    brier_sum: Mapped[float] = mapped_column(Double())
    log_loss_sum: Mapped[float] = mapped_column(Double())
    interval_low: Mapped[float] = mapped_column(Double())
    interval_high: Mapped[float] = mapped_column(Double())
    state: Mapped[dict[str, Any]] = mapped_column(JSON())
    # [n, low, high] points of the interval as n grew, thinned to a few hundred: for charts.
    trace: Mapped[list[list[float]]] = mapped_column(JSON())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(Text)
