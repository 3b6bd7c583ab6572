"""Shapes of the champion/challenger API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ShadowComparisonRead(BaseModel):
    segment: str
    challenger_version: int
    champion_version: int
    status: Literal["running", "promoted", "retired", "stopped"]
    started_at: datetime
    decided_at: datetime | None = Field(description="When it was promoted, retired or stopped")
    n: int = Field(description="Feedback records scored by both since the start")
    brier_difference: float | None = Field(
        description="Mean Brier score, challenger - champion (negative: challenger better)"
    )
    log_loss_difference: float | None = Field(description="Mean log loss, challenger - champion")
    interval: tuple[float, float] = Field(
        description=(
            "Anytime-valid confidence sequence [low, high] for the mean Brier difference: "
            "values outside the open interval are excluded. high <= 0 promotes, low >= 0 retires"
        )
    )
    alpha: float
    trace: list[tuple[int, float, float]] = Field(
        description="(n, low, high) of the interval as records arrived, thinned to a few hundred"
    )
    reason: str | None = Field(description="Why it ended, once it has")
