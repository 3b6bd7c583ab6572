"""Shapes of the health report and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Severity = Literal["critical", "warning", "info"]
Status = Literal["healthy", "degraded", "unhealthy"]


class Alert(BaseModel):
    severity: Severity
    code: str = Field(description="Stable machine-readable name, e.g. model_stale")
    message: str
    segment: str | None = None


class HealthReport(BaseModel):
    status: Status = Field(description="unhealthy only when the database is unreachable")
    checked_at: datetime
    checks: dict[str, dict[str, Any]] = Field(
        description="database, data_availability, model_freshness, last_training, "
        "calibration_drift, scheduler"
    )
    alerts: list[Alert]


class HealthSnapshot(BaseModel):
    id: int
    status: Status
    checked_at: datetime
    report: dict[str, Any]


class HealthSnapshotPage(BaseModel):
    items: list[HealthSnapshot]
    next_cursor: str | None
