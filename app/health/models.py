"""Stored health snapshots, for the history an operator looks back on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class HealthCheck(Base):
    __tablename__ = "health_check"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16))
    report: Mapped[dict[str, Any]] = mapped_column(JSON())
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
