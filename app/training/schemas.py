"""Shapes of the training-runs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.config import DEFAULT_SEGMENT, SEGMENT_PATTERN, check_trainable_segment
from app.training.models import RunStatus, RunTrigger


class TrainingRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: str = Field(default=DEFAULT_SEGMENT, pattern=SEGMENT_PATTERN, strict=True)
    force: bool = Field(
        default=False,
        strict=True,
        description="Train even if the interval has not passed or few new samples arrived",
    )

    # "_pooled" is trainable (the calibrator over all feedback); the path words are not.
    _segment = field_validator("segment")(check_trainable_segment)


class TrainingRunRead(BaseModel):
    id: int
    segment: str
    trigger: RunTrigger
    status: RunStatus
    force: bool
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    evaluation_results: dict[str, Any] | None
    error: str | None
    model_version: int | None
    n_samples: int | None
    last_feedback_id: int | None


class TrainingRunPage(BaseModel):
    items: list[TrainingRunRead]
    next_cursor: str | None
