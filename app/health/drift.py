"""Calibration drift: the active calibrator on feedback newer than its training data.

One computation for the health report's drift check and the reliability endpoint's "recent"
series, so a drift alert and the picture that explains it come from the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.calibration import evaluate, reliability_bins
from app.calibration.segments import POOLED_SEGMENT
from app.feedback import repository as feedback
from app.registry import artifacts
from app.registry.models import ModelVersion


@dataclass(frozen=True)
class RecentCalibration:
    """How a version calibrates the newest records after its training data."""

    after_feedback_id: int
    window: int
    n: int
    ece: float | None  # None without recent records
    bins: list[dict[str, Any]]  # ``reliability_bins`` of the recent records


def recent_calibration(session: Session, model: ModelVersion, *, window: int) -> RecentCalibration:
    """The version applied to at most ``window`` of the newest records it was not trained on.

    ``_pooled`` holds no feedback of its own: it trains, and is validated, on every segment's,
    so its recent records are every segment's too (its validation ECE is then the like-for-like
    reference; the segments it serves alone differ from the pooled map by design).
    """
    after_id = model.last_feedback_id or 0
    segment = None if model.segment == POOLED_SEGMENT else model.segment
    scores, labels = feedback.recent_scores_labels(
        session, segment=segment, after_id=after_id, limit=window
    )
    n = int(scores.shape[0])
    if n == 0:
        return RecentCalibration(after_id, window, 0, None, [])
    probs = artifacts.calibrator_for(model).predict(scores)
    return RecentCalibration(
        after_feedback_id=after_id,
        window=window,
        n=n,
        ece=evaluate(probs, labels)["ece"],
        bins=reliability_bins(probs, labels),
    )
