"""Shapes of the model registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.config import SEGMENT_PATTERN
from app.feedback.models import DEFAULT_SEGMENT

MAX_CALIBRATE_SCORES = 100_000
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]


class ModelVersionRead(BaseModel):
    segment: str
    version: int
    method: str
    status: str = Field(description="active | rejected | archived")
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
    event: str = Field(description="activated | rolled_back")
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
    method: str


class ReliabilityBin(BaseModel):
    """One equal-width bin of a reliability diagram (the bins of ``ece``)."""

    bin: int
    lower: float
    upper: float
    count: int
    mean_confidence: float | None = Field(description="null for an empty bin")
    observed_rate: float | None = Field(description="share of true labels; null when empty")
    ci_low: float | None = Field(description="95% Wilson interval of the observed rate")
    ci_high: float | None


class ValidationReliability(BaseModel):
    """Candidate and production scored on the version's held-out validation split."""

    training_run_id: int
    n_validation: int
    method: str
    production_method: str | None
    candidate: list[ReliabilityBin]
    production: list[ReliabilityBin]


class RecentReliability(BaseModel):
    """The active calibrator on feedback newer than its training data (the drift check's data)."""

    after_feedback_id: int
    window: int = Field(description="at most this many of the newest records")
    n: int
    ece: float | None = Field(description="null without recent feedback")
    validation_ece: float | None
    bins: list[ReliabilityBin]


class CalibrationBand(BaseModel):
    """The version's fitted map over raw scores with its pointwise band (from the artifact)."""

    level: float = Field(description="nominal pointwise coverage of the band, e.g. 0.9")
    score: list[float] = Field(description="raw scores, evenly spaced over [0, 1]")
    fitted: list[float] = Field(description="the calibrated probability at each score")
    low: list[float]
    high: list[float]


class ReliabilityRead(BaseModel):
    segment: str
    version: int
    status: str
    method: str
    validation: ValidationReliability | None = Field(
        description="null when the version's training run stored no reliability data"
    )
    recent: RecentReliability | None = Field(description="only for the active version")
    band: CalibrationBand | None = Field(
        default=None, description="null when the version's artifact carries no band"
    )
