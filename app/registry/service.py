"""Registry rules: versions per segment, one active at a time, every change logged.

Artifacts and the calibrator cache are ``artifacts``; the activation log is ``history``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.calibration import Calibrator
from app.calibration.segments import POOLED_SEGMENT
from app.db import HotPath, utcnow
from app.errors import ConflictError, NotFoundError
from app.params import cursor_id, page_of
from app.registry import repository
from app.registry.artifacts import artifact_sha256
from app.registry.models import ModelStatus, ModelVersion
from app.registry.schemas import ModelVersionPage, ModelVersionRead


def to_read(model: ModelVersion) -> ModelVersionRead:
    return ModelVersionRead.model_validate(model, from_attributes=True)


def get_version(session: Session, *, segment: str, version: int) -> ModelVersion:
    model = repository.get_version(session, segment, version)
    if model is None:
        raise NotFoundError(f"segment '{segment}' has no model version {version}")
    return model


def find_active(session: Session, *, segment: str) -> ModelVersion | None:
    return repository.get_active(session, segment)


def get_serving(session: Session, *, segment: str) -> ModelVersion:
    """The model that answers for ``segment``: its own active one, else the active pooled one.

    404 only when neither exists. The artifact column (~65 KB of JSON for an averaged map) is
    read only if used inside the session: a revalidation or a cached calibrator never needs it.
    """
    model = repository.get_active(session, segment, with_artifact=False)
    if model is None and segment != POOLED_SEGMENT:
        model = repository.get_active(session, POOLED_SEGMENT, with_artifact=False)
    if model is None:
        raise _nothing_serves(segment)
    return model


async def serving_digest(hot_path: HotPath, *, segment: str) -> repository.ServingDigest:
    """``get_serving`` without the ORM, read on the event loop: enough to answer a
    revalidation, or to calibrate with a calibrator cached by its artifact hash."""
    digest = await repository.serving_digest(hot_path, segment)
    if digest is None:
        raise _nothing_serves(segment)
    return digest


def _nothing_serves(segment: str) -> NotFoundError:
    return NotFoundError(
        f"segment '{segment}' has no active model and no pooled model is active yet; "
        "start a training run first"
    )


def segment_serving(session: Session) -> dict[str, dict[str, Any]]:
    """Per segment with an active model (``_pooled`` included): what its training recorded.

    ``pooling_weight`` (1: the pooled map, 0: the segment's own data alone) and
    ``distance_from_pooled`` (mean |segment map - pooled map| over its training scores); both
    ``None`` for a model trained without a pooled prior. A segment missing here is served by
    ``_pooled`` when that is present, else by nothing.
    """
    report = {}
    for model in repository.list_active(session):
        pooling = model.metrics.get("pooling") or {}
        report[model.segment] = {
            "version": model.version,
            "pooling_weight": pooling.get("pooling_weight"),
            "distance_from_pooled": pooling.get("distance_from_pooled"),
        }
    return report


def list_active(session: Session) -> list[ModelVersion]:
    """The active version of every segment that has one, by segment name."""
    return repository.list_active(session)


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
        repository.set_status(session, current, ModelStatus.ARCHIVED)
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
    repository.set_status(session, target, ModelStatus.ACTIVE, activated_at=now)
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
        status=ModelStatus.REJECTED,
        training_run_id=training_run_id,
        n_train=n_train,
        n_validation=n_validation,
        last_feedback_id=last_feedback_id,
        artifact=artifact,
        artifact_sha256=artifact_sha256(artifact),
        created_at=now,
    )
    if not deploy:
        return model, False
    current = repository.get_active(session, segment)
    if (current.version if current else None) != expected_active_version:
        return model, False
    _switch_active(session, target=model, current=current, actor=actor, reason=reason, now=now)
    return model, True
