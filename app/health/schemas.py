"""Shapes of the health report (one model per check) and of its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer

Severity = Literal["critical", "warning", "info"]
Status = Literal["healthy", "degraded", "unhealthy"]
CheckStatus = Literal["ok", "warning", "error", "disabled"]


class Alert(BaseModel):
    severity: Severity
    code: str = Field(description="Stable machine-readable name, e.g. model_stale")
    message: str
    segment: str | None = None


def _absent(value: Any) -> bool:
    return value is None


# A field that is left out of the JSON, rather than written as null, when it does not apply.
def _optional(description: str | None = None) -> Any:
    return Field(default=None, exclude_if=_absent, description=description)


class DatabaseCheck(BaseModel):
    status: CheckStatus
    latency_ms: float | None = _optional("the ping's round trip when reachable")
    detail: str | None = _optional("the error's type when unreachable")


class SegmentData(BaseModel):
    stored: int
    new_since_last_training: int
    enough_for_training: bool
    served_by: str | None = Field(
        default=None, description="whose calibrator serves it: its own name, '_pooled' or null"
    )
    pooling_weight: float | None = None
    distance_from_pooled: float | None = None


class DataAvailabilityCheck(BaseModel):
    status: CheckStatus
    min_samples: int
    min_samples_pooled: int | None = Field(
        default=None, description="the minimum of '_pooled' (over all segments)"
    )
    segments: dict[str, SegmentData]


class SegmentModel(BaseModel):
    version: int
    method: str
    age_days: float
    stale: bool


class ModelFreshnessCheck(BaseModel):
    status: CheckStatus
    max_age_days: float
    segments: dict[str, SegmentModel]


class SegmentTraining(BaseModel):
    run_id: int
    status: str
    trigger: str
    finished_at: datetime | None
    reason: str | None

    @field_serializer("finished_at")
    def _iso(self, value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()


class LastTrainingCheck(BaseModel):
    status: CheckStatus
    segments: dict[str, SegmentTraining]


class SegmentDrift(BaseModel):
    version: int
    validation_ece: float | None
    n_recent: int
    recent_ece: float | None
    increase: float | None


class CalibrationDriftCheck(BaseModel):
    status: CheckStatus
    threshold: float
    segments: dict[str, SegmentDrift]


class SchedulerCheck(BaseModel):
    status: CheckStatus
    enabled: bool
    is_running: bool
    next_training_run: datetime | None = _optional("while the scheduler runs")

    @field_serializer("next_training_run")
    def _iso(self, value: datetime | None) -> str | None:
        # isoformat keeps the scheduler zone's own offset.
        return None if value is None else value.isoformat()


class HealthChecks(BaseModel):
    """Every check; those that need the database are absent while it is unreachable."""

    database: DatabaseCheck
    data_availability: DataAvailabilityCheck | None = _optional()
    model_freshness: ModelFreshnessCheck | None = _optional()
    last_training: LastTrainingCheck | None = _optional()
    calibration_drift: CalibrationDriftCheck | None = _optional()
    scheduler: SchedulerCheck | None = _optional()


class HealthReport(BaseModel):
    status: Status = Field(description="unhealthy only when the database is unreachable")
    checked_at: datetime
    checks: HealthChecks
    alerts: list[Alert]


class Readiness(BaseModel):
    ready: bool
    database: Literal["ok", "unreachable"]
    detail: str | None = _optional("the error's type when unreachable")
    schema_revision: str | None
    head_revision: str | None


class HealthSnapshot(BaseModel):
    id: int
    status: Status
    checked_at: datetime
    report: dict[str, Any]


class HealthSnapshotPage(BaseModel):
    items: list[HealthSnapshot]
    next_cursor: str | None
