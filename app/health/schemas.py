"""Shapes of the health report (one model per check) and of its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    model_serializer,
)

Severity = Literal["critical", "warning", "info"]
Status = Literal["healthy", "degraded", "unhealthy"]
CheckStatus = Literal["ok", "warning", "error", "disabled"]


class Alert(BaseModel):
    severity: Severity
    code: str = Field(description="Stable machine-readable name, e.g. model_stale")
    message: str
    segment: str | None = None


class DatabaseCheck(BaseModel):
    status: CheckStatus
    latency_ms: float | None = None
    detail: str | None = Field(default=None, description="the error's type when unreachable")

    @model_serializer(mode="wrap")
    def _present_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Either the latency (reachable) or the error (unreachable), never a null of the other.
        return {key: value for key, value in handler(self).items() if value is not None}


class SegmentData(BaseModel):
    stored: int
    new_since_last_training: int
    enough_for_training: bool


class DataAvailabilityCheck(BaseModel):
    status: CheckStatus
    min_samples: int
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
    next_training_run: datetime | None = None

    @model_serializer(mode="wrap")
    def _present_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if not self.enabled:
            data.pop("next_training_run", None)
        elif self.next_training_run is not None:
            data["next_training_run"] = self.next_training_run.isoformat()
        return data


class HealthChecks(BaseModel):
    """Every check; those that need the database are absent while it is unreachable."""

    database: DatabaseCheck
    data_availability: DataAvailabilityCheck | None = None
    model_freshness: ModelFreshnessCheck | None = None
    last_training: LastTrainingCheck | None = None
    calibration_drift: CalibrationDriftCheck | None = None
    scheduler: SchedulerCheck | None = None

    @model_serializer(mode="wrap")
    def _present_checks(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class HealthReport(BaseModel):
    status: Status = Field(description="unhealthy only when the database is unreachable")
    checked_at: datetime
    checks: HealthChecks
    alerts: list[Alert]


class HealthSnapshot(BaseModel):
    id: int
    status: Status
    checked_at: datetime
    report: dict[str, Any]


class HealthSnapshotPage(BaseModel):
    items: list[HealthSnapshot]
    next_cursor: str | None
