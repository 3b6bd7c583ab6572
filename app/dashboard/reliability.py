"""Reliability-diagram data of a version: its validation split and, if active, recent feedback."""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from app.dashboard.schemas import (
    CalibrationBand,
    RecentReliability,
    ReliabilityBin,
    ReliabilityRead,
    ValidationReliability,
)
from app.health.drift import recent_calibration
from app.registry import service as registry
from app.registry.artifacts import calibrator_for
from app.registry.models import ModelStatus, ModelVersion
from app.training import service as training


def _validation_reliability(session: Session, model: ModelVersion) -> ValidationReliability | None:
    if model.training_run_id is None:
        return None
    results = training.run_results(session, run_id=model.training_run_id)
    stored = (results or {}).get("reliability")
    if not stored:
        return None
    return ValidationReliability(
        training_run_id=model.training_run_id,
        n_validation=model.n_validation,
        method=results.get("method", model.method),
        production_method=results.get("production_method"),
        candidate=[ReliabilityBin(**row) for row in stored["candidate"]],
        production=[ReliabilityBin(**row) for row in stored["production"]],
    )


def _recent_reliability(session: Session, model: ModelVersion, window: int) -> RecentReliability:
    # The health report's drift check reads the same computation, so the picture explains it.
    recent = recent_calibration(session, model, window=window)
    return RecentReliability(
        after_feedback_id=recent.after_feedback_id,
        window=window,
        n=recent.n,
        ece=recent.ece,
        validation_ece=model.metrics.get("ece"),
        bins=[ReliabilityBin(**row) for row in recent.bins],
    )


# Points of the fitted map drawn with its band: enough for a smooth picture.
_BAND_POINTS = 201


def _band(model: ModelVersion) -> CalibrationBand | None:
    calibrator = calibrator_for(model)
    if calibrator.band is None:
        return None
    level = calibrator.band["level"]
    score = np.linspace(0.0, 1.0, _BAND_POINTS)
    low, high = calibrator.predict_interval(score, level=level)
    return CalibrationBand(
        level=level,
        score=score.tolist(),
        fitted=calibrator.predict(score).tolist(),
        low=low.tolist(),
        high=high.tolist(),
    )


def reliability(
    session: Session, *, segment: str, version: int, drift_window: int
) -> ReliabilityRead:
    """Reliability-diagram data of a version.

    The validation part is what the version's training run stored (candidate and the production
    model it was compared with, on the same held-out split); the recent part applies the active
    calibrator to the newest ``drift_window`` records after the version's training data.
    """
    model = registry.get_version(session, segment=segment, version=version)
    return ReliabilityRead(
        segment=model.segment,
        version=model.version,
        status=model.status,
        method=model.method,
        validation=_validation_reliability(session, model),
        recent=_recent_reliability(session, model, drift_window)
        if model.status == ModelStatus.ACTIVE
        else None,
        band=_band(model),
    )
