"""The job_firing table: claims on scheduled firings, so one replica runs each."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class JobFiring(Base):
    """A claim on one scheduled firing: the primary key lets one replica in, the rest out."""

    __tablename__ = "job_firing"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(Text)
