"""Shapes of the training-runs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.config import PATH_WORDS, SEGMENT_PATTERN
from app.feedback.models import DEFAULT_SEGMENT


class TrainingRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: str = Field(default=DEFAULT_SEGMENT, pattern=SEGMENT_PATTERN, strict=True)
    force: bool = Field(
        default=False,
        strict=True,
        description="Train even if the interval has not passed or few new samples arrived",
    )

    @field_validator("segment")
    @classmethod
    def _trainable(cls, value: str) -> str:
        # "_pooled" is trainable (the calibrator over all feedback); the path words are not.
        if value in PATH_WORDS:
            raise ValueError(f"segment name '{value}' is reserved")
        return value


class TrainingRunRead(BaseModel):
    id: int
    segment: str
    trigger: str = Field(description="schedule | api | cli")
    status: str = Field(description="queued | running | deployed | rejected | skipped | failed")
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
