"""The scheduler's status, as ``GET /v1/scheduler`` serves it and the health report reads it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_serializer


class JobOutcome(BaseModel):
    """The newest claimed firing of a job, whichever replica ran it."""

    scheduled_for: datetime
    claimed_by: str
    finished_at: datetime | None
    outcome: str | None

    @field_serializer("scheduled_for", "finished_at")
    def _iso(self, value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()


class SchedulerJob(BaseModel):
    id: str
    name: str
    trigger: str
    next_run_time: datetime | None = Field(
        description="ISO 8601 with offset; null while the scheduler is not running"
    )
    last_outcome: JobOutcome | None

    @field_serializer("next_run_time")
    def _iso(self, value: datetime | None) -> str | None:
        # isoformat keeps the zone's own offset ("+01:00"), where pydantic would write "Z".
        return None if value is None else value.isoformat()


class SchedulerStatus(BaseModel):
    enabled: bool = Field(description="CALIB_SCHEDULER_ENABLED")
    is_running: bool
    timezone: str
    jobs: list[SchedulerJob]
