"""Registry rules: versions per segment, one active at a time, every change logged."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from threading import Lock
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.calibration import Calibrator, evaluate, load_calibrator, reliability_bins
from app.db import utcnow
from app.errors import ConflictError, NotFoundError
from app.health import repository as monitoring
from app.params import cursor_id, page_of
from app.registry import repository
from app.registry.models import ModelEvent, ModelVersion
from app.registry.schemas import (
    CalibrateResponse,
    CalibrationBand,
    LivePeriod,
    LivePeriodPage,
    ModelVersionPage,
    ModelVersionRead,
    RecentReliability,
    ReliabilityBin,
    ReliabilityRead,
    ValidationReliability,
)

_CACHE_SIZE = 64
_calibrators: dict[str, Calibrator] = {}
_calibrators_lock = Lock()


def canonical_json(document: dict[str, Any]) -> bytes:
    """The exact bytes served for an artifact; its sha256 is the ETag."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def to_read(model: ModelVersion) -> ModelVersionRead:
    return ModelVersionRead.model_validate(model, from_attributes=True)


def get_version(session: Session, *, segment: str, version: int) -> ModelVersion:
    model = repository.get_version(session, segment, version)
    if model is None:
        raise NotFoundError(f"segment '{segment}' has no model version {version}")
    return model


def get_active(session: Session, *, segment: str) -> ModelVersion:
    model = repository.get_active(session, segment)
    if model is None:
        raise NotFoundError(
            f"segment '{segment}' has no active model yet; start a training run first"
        )
    return model


def find_active(session: Session, *, segment: str) -> ModelVersion | None:
    return repository.get_active(session, segment)


def list_versions(
    session: Session,
    *,
    segment: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> ModelVersionPage:
    models = repository.list_versions(
        session, segment=segment, status=status, before_id=cursor_id(cursor), limit=limit + 1
    )
    models, next_cursor = page_of(models, limit)
    return ModelVersionPage(items=[to_read(m) for m in models], next_cursor=next_cursor)


def _switch_active(
    session: Session,
    *,
    target: ModelVersion,
    current: ModelVersion | None,
    actor: str,
    reason: str | None,
    now: datetime,
) -> None:
    if current is not None:
        repository.set_status(session, current, "archived")
        repository.add_event(
            session,
            segment=current.segment,
            event="archived",
            model_version_id=current.id,
            version=current.version,
            previous_version=None,
            actor=actor,
            reason=f"replaced by version {target.version}",
            occurred_at=now,
        )
    repository.set_status(session, target, "active", activated_at=now)
    is_rollback = current is not None and target.version < current.version
    repository.add_event(
        session,
        segment=target.segment,
        event="rolled_back" if is_rollback else "activated",
        model_version_id=target.id,
        version=target.version,
        previous_version=current.version if current else None,
        actor=actor,
        reason=reason,
        occurred_at=now,
    )


def activate(
    session: Session,
    *,
    segment: str,
    version: int,
    actor: str,
    reason: str | None = None,
    expected_active_version: int | None = None,
) -> tuple[ModelVersion, bool]:
    """Make ``version`` the active model. Returns it and whether anything changed."""
    repository.lock_segment(session, segment)
    target = get_version(session, segment=segment, version=version)
    current = repository.get_active(session, segment)
    current_version = current.version if current else None
    if expected_active_version is not None and expected_active_version != current_version:
        raise ConflictError(
            f"segment '{segment}' has active version {current_version}, "
            f"not the expected {expected_active_version}"
        )
    if current is not None and current.id == target.id:
        return target, False
    _switch_active(
        session, target=target, current=current, actor=actor, reason=reason, now=utcnow()
    )
    return target, True


def register_version(
    session: Session,
    *,
    segment: str,
    calibrator: Calibrator,
    metrics: dict[str, Any],
    n_train: int,
    n_validation: int,
    last_feedback_id: int | None,
    training_run_id: int | None,
    deploy: bool,
    expected_active_version: int | None,
    actor: str,
    reason: str | None,
) -> tuple[ModelVersion, bool]:
    """Store a new version; when ``deploy``, activate it in the same transaction.

    Returns the version and whether it went live. Deployment is withheld (the version is
    stored as rejected) when the active version is no longer ``expected_active_version``:
    the candidate was compared against another model.
    """
    repository.lock_segment(session, segment)
    now = utcnow()
    version = repository.next_version_number(session, segment)
    artifact = {
        **calibrator.to_artifact(),
        "segment": segment,
        "version": version,
        "trained_at": now.isoformat(),
        "metrics": metrics,
    }
    model = repository.add_version(
        session,
        segment=segment,
        version=version,
        method=calibrator.method,
        params=calibrator.to_artifact()["params"],
        metrics=metrics,
        status="rejected",
        training_run_id=training_run_id,
        n_train=n_train,
        n_validation=n_validation,
        last_feedback_id=last_feedback_id,
        artifact=artifact,
        artifact_sha256=hashlib.sha256(canonical_json(artifact)).hexdigest(),
        created_at=now,
    )
    if not deploy:
        return model, False
    current = repository.get_active(session, segment)
    if (current.version if current else None) != expected_active_version:
        return model, False
    _switch_active(session, target=model, current=current, actor=actor, reason=reason, now=now)
    return model, True


def artifact_document(model: ModelVersion) -> tuple[bytes, str]:
    """The artifact's bytes and its strong ETag."""
    return canonical_json(model.artifact), model.artifact_sha256


def calibrator_for(model: ModelVersion) -> Calibrator:
    """The model's calibrator, cached by artifact hash (the hash names the content)."""
    with _calibrators_lock:
        cached = _calibrators.get(model.artifact_sha256)
    if cached is not None:
        return cached
    calibrator = load_calibrator(model.artifact)
    with _calibrators_lock:
        if len(_calibrators) >= _CACHE_SIZE:
            _calibrators.pop(next(iter(_calibrators)))
        _calibrators[model.artifact_sha256] = calibrator
    return calibrator


def calibrate(session: Session, *, segment: str, scores: list[float]) -> CalibrateResponse:
    model = get_active(session, segment=segment)
    calibrated = calibrator_for(model).predict(np.asarray(scores, dtype=np.float64))
    return CalibrateResponse(
        calibrated=calibrated.tolist(),
        model_version=model.version,
        segment=segment,
        method=model.method,
    )


def _period(session: Session, event: ModelEvent) -> LivePeriod:
    ended_by = repository.next_activation_after(session, event)
    return LivePeriod(
        segment=event.segment,
        version=event.version,
        event=event.event,
        actor=event.actor,
        reason=event.reason,
        previous_version=event.previous_version,
        live_from=event.occurred_at,
        live_until=ended_by.occurred_at if ended_by else None,
    )


def history(
    session: Session,
    *,
    segment: str | None,
    at: datetime | None,
    limit: int,
    cursor: str | None,
) -> LivePeriodPage:
    """Which version was live when: activation periods, newest first, or those live at ``at``."""
    if at is not None:
        segments = [segment] if segment else repository.event_segments(session)
        live = [repository.activation_live_at(session, name, at) for name in segments]
        items = [_period(session, event) for event in live if event is not None]
        return LivePeriodPage(items=items, next_cursor=None)
    events = repository.activation_events(
        session, segment=segment, before_id=cursor_id(cursor), limit=limit + 1
    )
    events, next_cursor = page_of(events, limit)
    return LivePeriodPage(
        items=[_period(session, event) for event in events], next_cursor=next_cursor
    )


def _validation_reliability(session: Session, model: ModelVersion) -> ValidationReliability | None:
    if model.training_run_id is None:
        return None
    results = repository.training_run_results(session, model.training_run_id)
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
    # The same records as the health report's drift check, so the picture explains its alert.
    after_id = model.last_feedback_id or 0
    scores, labels = monitoring.recent_feedback(
        session, segment=model.segment, after_id=after_id, limit=window
    )
    bins: list[ReliabilityBin] = []
    ece = None
    if scores.shape[0]:
        probs = calibrator_for(model).predict(scores)
        bins = [ReliabilityBin(**row) for row in reliability_bins(probs, labels)]
        ece = evaluate(probs, labels)["ece"]
    return RecentReliability(
        after_feedback_id=after_id,
        window=window,
        n=int(scores.shape[0]),
        ece=ece,
        validation_ece=model.metrics.get("ece"),
        bins=bins,
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
    """Reliability-diagram data of a version: its validation split and, if active, recent feedback.

    The validation part is what the version's training run stored (candidate and the production
    model it was compared with, on the same held-out split); the recent part applies the active
    calibrator to the newest ``drift_window`` records after the version's training data.
    """
    model = get_version(session, segment=segment, version=version)
    return ReliabilityRead(
        segment=model.segment,
        version=model.version,
        status=model.status,
        method=model.method,
        validation=_validation_reliability(session, model),
        recent=_recent_reliability(session, model, drift_window)
        if model.status == "active"
        else None,
        band=_band(model),
    )
