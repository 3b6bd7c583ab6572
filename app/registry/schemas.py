"""Shapes of the model registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.config import DEFAULT_SEGMENT, SEGMENT_PATTERN
from app.registry.models import EventKind, ModelStatus

MAX_CALIBRATE_SCORES = 100_000
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]


class ModelVersionRead(BaseModel):
    segment: str
    version: int
    method: str
    status: ModelStatus
    metrics: dict[str, Any] = Field(description="Validation metrics of this calibrator")
    n_train: int
    n_validation: int
    created_at: datetime
    activated_at: datetime | None
    params: dict[str, Any]
    training_run_id: int | None
    last_feedback_id: int | None
    artifact_sha256: str


class ModelVersionPage(BaseModel):
    items: list[ModelVersionRead]
    next_cursor: str | None


class ActivationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_active_version: int | None = Field(
        default=None,
        ge=1,
        le=2_147_483_647,
        strict=True,
        description="Refuse (409) unless this version is the active one: a compare-and-set",
    )
    reason: str | None = Field(default=None, max_length=500, strict=True)

    @field_validator("expected_active_version", mode="before")
    @classmethod
    def _integral_number(cls, value: Any) -> Any:
        # JSON Schema counts 3.0 as an integer; text and booleans stay refused (strict).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class LivePeriod(BaseModel):
    """One stretch of time during which a version was the segment's active calibrator."""

    segment: str
    version: int
    event: EventKind = Field(description="activated | rolled_back")
    actor: str = Field(description="Who or what activated it")
    reason: str | None
    previous_version: int | None
    live_from: datetime
    live_until: datetime | None = Field(description="null while it is still live")


class LivePeriodPage(BaseModel):
    items: list[LivePeriod]
    next_cursor: str | None


class CalibrateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scores: list[Score] = Field(min_length=1, max_length=MAX_CALIBRATE_SCORES)
    segment: str = Field(default=DEFAULT_SEGMENT, pattern=SEGMENT_PATTERN, strict=True)


class CalibrateResponse(BaseModel):
    calibrated: list[float]
    model_version: int
    segment: str
    calibrator_segment: str = Field(
        description="whose calibrator answered: the segment's own, or '_pooled' as fallback"
    )
    method: str
