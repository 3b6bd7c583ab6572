"""Training with the pooled calibrator: its data (all segments), and segments that borrow from it.

``_pooled`` trains on every segment's feedback and stores, with its model, how much segments
differ around it (the empirical-Bayes spread). A segment trains with the active pooled model as
its prior and that spread as the pooling strength; below ``CROSS_VALIDATION_BELOW`` samples its
gate is cross-validation instead of a holdout split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from app.calibration import Calibrator, fit_calibrator
from app.calibration.segments import (
    POOLED_SEGMENT,
    SegmentSpread,
    fit_pooled,
    fit_with_prior,
)
from app.feedback import repository as feedback
from app.registry import artifacts
from app.registry import service as registry
from app.training import repository
from app.training.evaluation import (
    CROSS_VALIDATION_BELOW,
    Evaluation,
    TrainingPolicy,
    evaluate_by_cross_validation,
    evaluate_candidate,
)


@dataclass(frozen=True)
class PooledPrior:
    """The active pooled model as a prior: its calibrator, version and the segments' spread."""

    calibrator: Calibrator
    version: int
    spread: SegmentSpread


@dataclass(frozen=True)
class PreviousPrior:
    """A segment's active model as the prior of a run on the feedback it was not trained on."""

    calibrator: Calibrator
    version: int
    last_feedback_id: int


def find_previous(session: Session, segment: str) -> PreviousPrior | None:
    """The segment's own active model and where its training data ended, if it has one."""
    model = registry.find_active(session, segment=segment)
    if model is None or model.last_feedback_id is None:
        return None
    return PreviousPrior(
        calibrator=artifacts.calibrator_for(model),
        version=model.version,
        last_feedback_id=model.last_feedback_id,
    )


def prior_record(prior: PooledPrior | None, previous: PreviousPrior | None, segment: str) -> dict:
    """Which map the run's fit shrank toward, as stored with the model and the run."""
    if prior is not None:
        return {"source": "pooled", "segment": POOLED_SEGMENT, "version": prior.version}
    if previous is not None:
        return {
            "source": "previous_model",
            "segment": segment,
            "version": previous.version,
            "after_feedback_id": previous.last_feedback_id,
        }
    return {"source": "none", "segment": None, "version": None}


def find_prior(session: Session) -> PooledPrior | None:
    """The active ``_pooled`` model, if there is one that recorded the segments' spread."""
    model = registry.find_active(session, segment=POOLED_SEGMENT)
    if model is None or not isinstance(model.metrics.get("segment_spread"), dict):
        return None
    return PooledPrior(
        calibrator=artifacts.calibrator_for(model),
        version=model.version,
        spread=SegmentSpread.from_dict(model.metrics["segment_spread"]),
    )


def all_feedback_arrays(
    session: Session, up_to_id: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    """Scores, labels and a segment code per row, over every segment, up to a feedback id."""
    parts = [
        feedback.score_label_arrays(session, name, up_to_id)
        for name in feedback.segments_up_to(session, up_to_id)
    ]
    if not parts:
        return np.empty(0), np.empty(0), np.empty(0, dtype=np.intp)
    codes = np.repeat(np.arange(len(parts)), [scores.shape[0] for scores, _ in parts])
    return (
        np.concatenate([scores for scores, _ in parts]),
        np.concatenate([labels for _, labels in parts]),
        codes,
    )


def evaluate(
    *,
    segment: str,
    scores: NDArray[np.float64],
    labels: NDArray[np.float64],
    segment_codes: NDArray[np.intp] | None,
    production: Calibrator,
    prior: PooledPrior | None,
    policy: TrainingPolicy,
    previous: PreviousPrior | None = None,
) -> Evaluation:
    """Fit and judge the candidate of ``segment`` by the rules that apply to it.

    ``_pooled`` fits on all segments and estimates their spread; a segment with a pooled prior
    is partially pooled toward it (cross-validated gate when small); with ``previous`` (the
    arrays then hold only feedback that model was not trained on) the fit shrinks toward it;
    anything else is the plain ``fit_calibrator``; those two have the holdout gate.
    """
    seed = policy.random_seed
    if segment == POOLED_SEGMENT:
        assert segment_codes is not None

        def fit_all(rows: NDArray[np.intp]) -> Calibrator:
            return fit_pooled(scores[rows], labels[rows], segment_codes[rows], seed)[0]

        return evaluate_candidate(scores, labels, production, policy, fit_all)
    if prior is None and previous is not None:

        def fit_after(rows: NDArray[np.intp]) -> Calibrator:
            return fit_calibrator(
                scores[rows], labels[rows], random_state=seed, prior=previous.calibrator
            )

        return evaluate_candidate(scores, labels, production, policy, fit_after)
    if prior is None:
        return evaluate_candidate(scores, labels, production, policy)

    def fit_segment(rows: NDArray[np.intp]) -> Calibrator:
        return fit_with_prior(scores[rows], labels[rows], prior.calibrator, prior.spread)

    if scores.shape[0] < CROSS_VALIDATION_BELOW:
        return evaluate_by_cross_validation(scores, labels, production, policy, fit_segment)
    return evaluate_candidate(scores, labels, production, policy, fit_segment)


def model_metrics(
    evaluation: Evaluation, prior: PooledPrior | None, prior_used: dict[str, Any]
) -> dict[str, Any]:
    """The metrics stored with the version, with what pooling needs later.

    The pooled model keeps the segments' spread (segments read it as their pooling strength);
    a segment's model keeps its pooling weight and distance from the pooled map (the
    dashboard and the feedback stats show them). Every model records the prior it was
    shrunk toward (``prior_record``).
    """
    selection = evaluation.calibrator.selection or {}
    metrics = dict(evaluation.metrics)
    metrics["prior"] = prior_used
    weights = selection.get("weights")
    if weights:
        # An auto fit is stored as one table (the version's ``method``); what it averaged, and
        # how, is kept here for the operator (the dashboard's "method" column shows it).
        metrics["averaged"] = {name: weight for name, weight in weights.items() if weight > 0.0}
    if "segment_spread" in selection:
        metrics["segment_spread"] = selection["segment_spread"]
    pooling = selection.get("pooling")
    if pooling is not None and prior is not None:
        metrics["pooling"] = {
            "prior_version": prior.version,
            "pooling_weight": pooling["pooling_weight"],
            "distance_from_pooled": pooling["distance_from_pooled"],
        }
    return metrics


def pooled_new_samples(session: Session) -> int:
    """Feedback (over all segments) stored since the pooled calibrator last trained."""
    up_to = feedback.max_id(session, None) or 0
    last = repository.last_trained_run(session, POOLED_SEGMENT)
    after = (last.last_feedback_id or 0) if last is not None else 0
    return feedback.count_between(session, None, after, up_to)
