"""Training rules: start a run, execute it (skip, fit, gate, register), recover dead runs."""

from __future__ import annotations

import contextlib
import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.calibration import Calibrator, identity_calibrator
from app.calibration.segments import POOLED_SEGMENT
from app.db import Database, utcnow
from app.errors import ConflictError, NotFoundError
from app.feedback import repository as feedback
from app.feedback import service as feedback_service
from app.feedback.schemas import FeedbackStats
from app.params import cursor_id, page_of
from app.registry import artifacts
from app.registry import service as registry
from app.shadow import service as shadow
from app.training import pooling, repository
from app.training.evaluation import TrainingPolicy
from app.training.models import RunStatus, TrainingRun
from app.training.schemas import TrainingRunPage, TrainingRunRead

logger = logging.getLogger(__name__)

MIN_PER_CLASS = 3


class RunAbandonedError(RuntimeError):
    """The run was declared dead (heartbeat lost) while this worker still held it."""


def to_read(run: TrainingRun) -> TrainingRunRead:
    return TrainingRunRead.model_validate(run, from_attributes=True)


def start_run(
    session: Session, *, segment: str, force: bool, trigger: str, requested_by: str | None
) -> TrainingRun:
    """Record a queued run; 409 naming the open run when the segment already has one."""
    run = repository.insert_run(
        session,
        segment=segment,
        trigger=trigger,
        status=RunStatus.QUEUED,
        force=force,
        requested_by=requested_by,
        created_at=utcnow(),
    )
    if run is None:
        existing = repository.open_run(session, segment)
        detail = f"a training run is already open for segment '{segment}'"
        if existing is not None:
            detail = (
                f"training run {existing.id} is already {existing.status} for segment '{segment}'"
            )
        raise ConflictError(detail)
    return run


def get_run(session: Session, *, run_id: int) -> TrainingRun:
    run = repository.get_run(session, run_id)
    if run is None:
        raise NotFoundError(f"training run {run_id} does not exist")
    return run


def list_runs(
    session: Session,
    *,
    segment: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> TrainingRunPage:
    runs = repository.list_runs(
        session, segment=segment, status=status, before_id=cursor_id(cursor), limit=limit + 1
    )
    runs, next_cursor = page_of(runs, limit)
    return TrainingRunPage(items=[to_read(r) for r in runs], next_cursor=next_cursor)


def fail_abandoned_runs(session: Session, *, stale_after: timedelta, reason: str) -> list[int]:
    now = utcnow()
    return list(
        repository.fail_abandoned_runs(
            session, stale_before=now - stale_after, now=now, reason=reason
        )
    )


def feedback_stats(session: Session) -> FeedbackStats:
    """Feedback totals, with what arrived since each segment's last training run, and which
    calibrator serves each segment (its own, or the pooled one) and how much it borrows."""
    return feedback_service.feedback_stats(
        session,
        watermarks=repository.training_watermarks(session),
        serving=registry.segment_serving(session),
    )


def run_results(session: Session, *, run_id: int) -> dict[str, Any] | None:
    """The evaluation results a run stored (``None`` for a run without them)."""
    return repository.run_results(session, run_id)


def _skip_reason(
    session: Session,
    *,
    segment: str,
    force: bool,
    policy: TrainingPolicy,
    min_samples: int,
    up_to: int,
    previous: pooling.PreviousPrior | None,
) -> str | None:
    """Why this run should not train, judged before any data is loaded; ``None`` to train."""
    # The pooled calibrator's data is every segment's feedback.
    data_segment = None if segment == POOLED_SEGMENT else segment
    after = previous.last_feedback_id if previous is not None else 0
    total = feedback.count_between(session, data_segment, after, up_to)
    if total < min_samples:
        since = "" if previous is None else f" since version {previous.version}'s training data"
        return (
            f"segment '{segment}' has {total} feedback samples{since}; "
            f"at least {min_samples} are needed"
        )
    last = repository.last_trained_run(session, segment)
    if force or last is None:
        return None
    age = utcnow() - (last.finished_at or last.created_at)
    if age < timedelta(days=policy.interval_days):
        return (
            f"the last training (run {last.id}) finished {age.total_seconds() / 86400:.1f} days "
            f"ago; the interval is {policy.interval_days:g} days (force to train anyway)"
        )
    new = feedback.count_between(session, data_segment, last.last_feedback_id or 0, up_to)
    if new < min_samples:
        return (
            f"only {new} new samples since the last training (run {last.id}); "
            f"{min_samples} are needed (force to train anyway)"
        )
    return None


def _class_skip_reason(labels: np.ndarray) -> str | None:
    positives = int(labels.sum())
    negatives = int(labels.shape[0] - positives)
    if positives == 0 or negatives == 0:
        only = "true" if negatives == 0 else "false"
        return f"all {labels.shape[0]} samples are labelled {only}; both labels are needed"
    if min(positives, negatives) < MIN_PER_CLASS:
        return (
            f"{positives} true and {negatives} false labels; at least {MIN_PER_CLASS} "
            "of each are needed"
        )
    return None


def _finish(database: Database, run_id: int, **fields: Any) -> None:
    with database.session_scope() as session:
        if not repository.finish_run(session, run_id, finished_at=utcnow(), **fields):
            raise RunAbandonedError(f"training run {run_id} was closed by another worker")


def _log_outcome(run_id: int, segment: str, status: str, reason: str, **extra: Any) -> None:
    logger.info(
        "training run %s for '%s' %s: %s",
        run_id,
        segment,
        status,
        reason,
        extra={
            "event": "training_outcome",
            "run_id": run_id,
            "segment": segment,
            "status": status,
            "reason": reason,
            **extra,
        },
    )


@dataclass(frozen=True)
class _TrainingData:
    """What one run trains on: the arrays up to a feedback id, and the model to beat."""

    scores: np.ndarray
    labels: np.ndarray
    segment_codes: np.ndarray | None
    up_to: int
    production: Calibrator
    production_version: int | None
    production_segment: str | None
    prior: pooling.PooledPrior | None
    # With training_data="new": the active model the run shrinks toward; the arrays then
    # hold only the feedback after its training data.
    previous: pooling.PreviousPrior | None


def _load(database: Database, policy: TrainingPolicy, run: TrainingRun) -> _TrainingData | str:
    """The run's data in one read transaction, or the reason it should be skipped."""
    is_pooled = run.segment == POOLED_SEGMENT
    with database.session_scope(write=False) as session:
        up_to = feedback.max_id(session, None if is_pooled else run.segment) or 0
        prior = None if is_pooled else pooling.find_prior(session)
        # The previous model is a sound prior only for labels it never saw, so it is used
        # only when the run trains on the feedback after it (and no pooled prior applies).
        previous = None
        if policy.training_data == "new" and not is_pooled and prior is None:
            previous = pooling.find_previous(session, run.segment)
        # With a pooled prior a segment needs only a few samples of its own.
        min_samples = policy.min_samples if prior is None else policy.min_segment_samples
        skip = _skip_reason(
            session,
            segment=run.segment,
            force=run.force,
            policy=policy,
            min_samples=min_samples,
            up_to=up_to,
            previous=previous,
        )
        if skip is not None:
            return skip
        codes = None
        if is_pooled:
            scores, labels, codes = pooling.all_feedback_arrays(session, up_to)
        else:
            after = previous.last_feedback_id if previous is not None else 0
            scores, labels = feedback.score_label_arrays(session, run.segment, up_to, after)
        skip = _class_skip_reason(labels)
        if skip is not None:
            return skip
        active = registry.find_active(session, segment=run.segment)
        # A segment without a model of its own is served by the pooled one: that is the
        # production model its candidate has to beat.
        serving = active
        if serving is None and not is_pooled:
            serving = registry.find_active(session, segment=POOLED_SEGMENT)
        return _TrainingData(
            scores=scores,
            labels=labels,
            segment_codes=codes,
            up_to=up_to,
            production=artifacts.calibrator_for(serving) if serving else identity_calibrator(),
            production_version=active.version if active else None,
            production_segment=serving.segment if serving else None,
            prior=prior,
            previous=previous,
        )


def _train(database: Database, policy: TrainingPolicy, run: TrainingRun) -> str:
    segment = run.segment
    data = _load(database, policy, run)
    if isinstance(data, str):
        _finish(database, run.id, status=RunStatus.SKIPPED, reason=data, last_feedback_id=None)
        _log_outcome(run.id, segment, RunStatus.SKIPPED, data)
        return RunStatus.SKIPPED
    scores, labels, up_to = data.scores, data.labels, data.up_to
    production_version = data.production_version

    evaluation = pooling.evaluate(
        segment=segment,
        scores=scores,
        labels=labels,
        segment_codes=data.segment_codes,
        production=data.production,
        prior=data.prior,
        policy=policy,
        previous=data.previous,
    )
    prior_used = pooling.prior_record(data.prior, data.previous, segment)
    results = {
        **evaluation.results,
        "production_version": production_version,
        "production_segment": data.production_segment,
        "prior_version": data.prior.version if data.prior else None,
        "prior": prior_used,
    }
    reason = evaluation.reason
    # In shadow mode a candidate that passes the gate challenges the live model instead of
    # replacing it; with no live model there is nothing to compare with, so it goes live.
    challenge = (
        evaluation.deploy and policy.deploy_mode == "shadow" and production_version is not None
    )
    with database.session_scope() as session:
        model, deployed = registry.register_version(
            session,
            segment=segment,
            calibrator=evaluation.calibrator,
            metrics=pooling.model_metrics(evaluation, data.prior, prior_used),
            n_train=evaluation.n_train,
            n_validation=evaluation.n_validation,
            last_feedback_id=up_to,
            training_run_id=run.id,
            deploy=evaluation.deploy and not challenge,
            expected_active_version=production_version,
            actor=f"training-run:{run.id}",
            reason=reason,
        )
        if challenge:
            reason = _start_challenge(session, run, model.version, production_version, policy)
            results.update(deployed=False, reason=reason, shadow=reason.startswith("passed"))
        elif evaluation.deploy and not deployed:
            reason = "the active model changed while training; the candidate was not deployed"
            results.update(deployed=False, reason=reason)
        status = RunStatus.DEPLOYED if deployed else RunStatus.REJECTED
        closed = repository.finish_run(
            session,
            run.id,
            status=status,
            reason=reason,
            evaluation_results=results,
            model_version=model.version,
            n_samples=int(scores.shape[0]),
            last_feedback_id=up_to,
            finished_at=utcnow(),
        )
        if not closed:
            raise RunAbandonedError(f"training run {run.id} was closed by another worker")
    _log_outcome(
        run.id,
        segment,
        status,
        reason,
        model_version=model.version,
        method=evaluation.calibrator.method,
        ece_improvement=results["ece_improvement"],
    )
    return status


def _start_challenge(
    session: Session, run: TrainingRun, version: int, champion: int | None, policy: TrainingPolicy
) -> str:
    """Make the new version the challenger of the live one; the run's reason says how it went."""
    comparison = shadow.challenge(
        session,
        segment=run.segment,
        version=version,
        expected_champion_version=champion or 0,
        actor=f"training-run:{run.id}",
        alpha=policy.shadow_alpha,
    )
    if comparison is None:
        return "the active model changed while training; the candidate was not put in shadow"
    return (
        f"passed the quality gate; version {version} now challenges active version {champion} "
        "on fresh feedback (shadow deployment)"
    )


def execute_run(database: Database, policy: TrainingPolicy, run_id: int) -> str | None:
    """Run a queued training run to its end. Returns the final status, ``None`` if not claimed."""
    with database.session_scope() as session:
        if not repository.claim_run(session, run_id, utcnow()):
            return None
        run = get_run(session, run_id=run_id)
    try:
        return _train(database, policy, run)
    except RunAbandonedError:
        logger.warning("training run %s was closed by another worker; result dropped", run_id)
        return RunStatus.FAILED
    except Exception as exc:
        reason = f"training failed: {type(exc).__name__}: {exc}"
        logger.exception("training run %s failed", run_id)
        with contextlib.suppress(RunAbandonedError):
            _finish(
                database,
                run_id,
                status=RunStatus.FAILED,
                reason=reason[:2000],
                error=traceback.format_exc()[-8000:],
            )
        _log_outcome(run_id, run.segment, RunStatus.FAILED, reason)
        return RunStatus.FAILED
