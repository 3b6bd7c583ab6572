"""Shapes of the champion/challenger API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

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
    # Lists, not tuples: a tuple becomes `prefixItems`, which OpenAPI tools such as schemathesis
    # cannot read.
    interval: list[float] = Field(
        min_length=2,
        max_length=2,
        description=(
            "Anytime-valid confidence sequence [low, high] for the mean Brier difference: "
            "values outside the open interval are excluded. high <= 0 promotes, low >= 0 retires"
        ),
    )
    alpha: float
    trace: list[Annotated[list[float], Field(min_length=3, max_length=3)]] = Field(
        description="(n, low, high) of the interval as records arrived, thinned to a few hundred"
    )
    reason: str | None = Field(description="Why it ended, once it has")
