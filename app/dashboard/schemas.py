"""Shapes of the reliability-diagram data (JSON beside the SVG and PNG pictures)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.registry.models import ModelStatus


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
    status: ModelStatus
    method: str
    validation: ValidationReliability | None = Field(
        description="null when the version's training run stored no reliability data"
    )
    recent: RecentReliability | None = Field(description="only for the active version")
    band: CalibrationBand | None = Field(
        default=None, description="null when the version's artifact carries no band"
    )
