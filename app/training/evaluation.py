"""The numerics of one training run: split, fit, score both models, bootstrap, and the gate."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from app.calibration import (
    Calibrator,
    band_check,
    evaluate,
    fit_calibrator,
    paired_bootstrap,
    reliability_bins,
)
from app.config import Settings

# Bootstrap cost grows with n x resamples; beyond this many validation samples the intervals
# are computed on a seeded subsample (they are then slightly wider than the data allows).
MAX_BOOTSTRAP_SAMPLES = 20_000
# Below this many samples the 20% validation part (under 40 samples) cannot tell two
# calibrators apart; such segments are judged by cross-validation, every sample held out once.
CROSS_VALIDATION_BELOW = 200
CV_FOLDS = 5
REPORTED_METRICS = ("ece", "ece_equal_mass", "ece_debiased", "mce", "brier", "log_loss", "auroc")

# A threaded BLAS hands the many thin products of a run (bootstrap resamples, CV folds) to
# threads that fight the API and the database for the same cores: measured on 2 busy cores,
# a 1M-sample evaluation took 3-6 s with BLAS threads and 1.5-2 s on one. The limit is
# process-wide, so it is reference-counted: the first run in takes it, the last one out
# restores what was there.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: threadpool_limits | None = None


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _blas_limit.restore_original_limits()
                _blas_limit = None


@dataclass(frozen=True)
class TrainingPolicy:
    """The rules of a run, all from settings."""

    min_samples: int = 50
    min_segment_samples: int = 10
    interval_days: float = 7.0
    training_data: str = "all"
    threshold: float = 0.05
    require_significant: bool = False
    bootstrap_resamples: int = 1000
    validation_fraction: float = 0.2
    random_seed: int = 0
    deploy_mode: str = "gate"
    shadow_alpha: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingPolicy:
        return cls(
            min_samples=settings.min_samples_for_training,
            min_segment_samples=settings.min_segment_samples,
            interval_days=settings.training_interval_days,
            training_data=settings.training_data,
            threshold=settings.performance_threshold,
            require_significant=settings.require_significant_improvement,
            bootstrap_resamples=settings.bootstrap_resamples,
            random_seed=settings.random_seed,
            deploy_mode=settings.deploy_mode,
            shadow_alpha=settings.shadow_alpha,
        )


@dataclass(frozen=True)
class Evaluation:
    calibrator: Calibrator
    deploy: bool
    reason: str
    results: dict[str, Any]
    metrics: dict[str, Any]
    n_train: int
    n_validation: int


def _relative_improvement(production: float, candidate: float) -> float:
    # Nothing can improve on a perfect score; treat it as no improvement rather than dividing by 0.
    return (production - candidate) / production if production > 1e-12 else 0.0


def _scored(probs: NDArray[np.float64], labels: NDArray[np.float64]) -> dict[str, Any]:
    report = evaluate(probs, labels)
    return {key: report[key] for key in REPORTED_METRICS}


def _band_refusal(band: dict[str, Any] | None) -> str | None:
    """Why the held-out outcomes refute the candidate's own band (``None`` when they do not)."""
    if band is None or not band["checked"] or band["consistent"]:
        return None
    bad = [g for g in band["groups"] if not g["consistent"]]
    g = max(bad, key=lambda g: max(g["band_low"] - g["ci_high"], g["ci_low"] - g["band_high"]))
    return (
        f"held-out outcomes contradict the candidate's 90% band in {len(bad)} of "
        f"{band['n_groups']} score groups: where it predicts {g['p_low']:.3f}-{g['p_high']:.3f} "
        f"({g['count']} samples) the band says {g['band_low']:.3f}-{g['band_high']:.3f} but "
        f"{g['observed_rate']:.3f} were positive (interval {g['ci_low']:.3f}-{g['ci_high']:.3f})"
    )


def _gate(
    policy: TrainingPolicy,
    candidate: dict[str, Any],
    production: dict[str, Any],
    ece_improvement: float,
    ece_interval: dict[str, float],
    band: dict[str, Any] | None = None,
) -> tuple[bool, str]:
    pct = f"{ece_improvement:.1%}"
    if ece_improvement < policy.threshold:
        return False, (
            f"ECE improvement {pct} is below the {policy.threshold:.1%} threshold "
            f"(candidate {candidate['ece']:.4f}, production {production['ece']:.4f})"
        )
    if candidate["brier"] > production["brier"]:
        return False, (
            f"Brier score got worse ({candidate['brier']:.4f} > {production['brier']:.4f}) "
            f"although ECE improved by {pct}"
        )
    if policy.require_significant and ece_interval["high"] >= 0.0:
        return False, (
            f"ECE improved by {pct} but not significantly: the interval of the ECE difference "
            f"[{ece_interval['low']:.4f}, {ece_interval['high']:.4f}] does not exclude zero"
        )
    refusal = _band_refusal(band)
    if refusal is not None:
        return False, f"ECE improved by {pct} but {refusal}"
    return True, (
        f"ECE improved by {pct} (threshold {policy.threshold:.1%}): "
        f"{production['ece']:.4f} -> {candidate['ece']:.4f}; "
        f"Brier {production['brier']:.4f} -> {candidate['brier']:.4f}"
    )


# Fits a candidate on the training rows (given by index into the run's arrays).
Fitter = Callable[[NDArray[np.intp]], Calibrator]


def evaluate_candidate(
    scores: NDArray[np.float64],
    labels: NDArray[np.float64],
    production: Calibrator,
    policy: TrainingPolicy,
    fit: Fitter | None = None,
) -> Evaluation:
    """Fit a candidate on 80% and judge it against ``production`` on the same held-out 20%.

    Parameters
    ----------
    scores, labels : ndarray of shape (n_samples,)
        Raw scores in [0, 1] and 0/1 outcomes; both classes at least 3 times.
    production : Calibrator
        The calibrator serving the segment now (identity when there is none).
    policy : TrainingPolicy
    fit : callable, optional
        Training row indices -> candidate; ``fit_calibrator(method="auto")`` by default.
    """
    if fit is None:

        def fit(rows: NDArray[np.intp]) -> Calibrator:
            return fit_calibrator(scores[rows], labels[rows], random_state=policy.random_seed)

    with _single_threaded_blas():
        return _evaluate(scores, labels, production, policy, fit)


def _evaluate(
    scores: NDArray[np.float64],
    labels: NDArray[np.float64],
    production: Calibrator,
    policy: TrainingPolicy,
    fit: Fitter,
) -> Evaluation:
    seed = policy.random_seed
    train_idx, val_idx = train_test_split(
        np.arange(scores.shape[0]),
        test_size=policy.validation_fraction,
        stratify=labels,
        random_state=seed,
    )
    calibrator = fit(train_idx)
    val_scores, val_labels = scores[val_idx], labels[val_idx]
    candidate_probs = calibrator.predict(val_scores)
    production_probs = production.predict(val_scores)
    candidate = _scored(candidate_probs, val_labels)
    current = _scored(production_probs, val_labels)

    boot_idx = np.arange(val_idx.shape[0])
    if boot_idx.shape[0] > MAX_BOOTSTRAP_SAMPLES:
        rng = np.random.default_rng(seed)
        boot_idx = np.sort(rng.choice(boot_idx, size=MAX_BOOTSTRAP_SAMPLES, replace=False))
    bootstrap = paired_bootstrap(
        candidate_probs[boot_idx],
        production_probs[boot_idx],
        val_labels[boot_idx],
        n_resamples=policy.bootstrap_resamples,
        random_state=seed,
    )
    bootstrap["n_samples"] = int(boot_idx.shape[0])

    band = _band_check(calibrator, val_scores, candidate_probs, val_labels)
    ece_improvement = _relative_improvement(current["ece"], candidate["ece"])
    deploy, reason = _gate(policy, candidate, current, ece_improvement, bootstrap["ece_diff"], band)
    return _evaluation(
        policy,
        calibrator=calibrator,
        production=production,
        labels=val_labels,
        probs=(candidate_probs, production_probs),
        scored=(candidate, current),
        bootstrap=bootstrap,
        decision=(deploy, reason),
        sizes=(int(train_idx.shape[0]), int(val_idx.shape[0])),
        extra={"gate": "holdout", "band_check": band},
    )


def _band_check(
    calibrator: Calibrator,
    scores: NDArray[np.float64],
    probs: NDArray[np.float64],
    labels: NDArray[np.float64],
) -> dict[str, Any]:
    if calibrator.band is None:
        return {"checked": False, "reason": f"the {calibrator.method} candidate carries no band"}
    low, high = calibrator.predict_interval(scores, level=calibrator.band["level"])
    return {"level": calibrator.band["level"], **band_check(probs, low, high, labels)}


def _evaluation(
    policy: TrainingPolicy,
    *,
    calibrator: Calibrator,
    production: Calibrator,
    labels: NDArray[np.float64],
    probs: tuple[NDArray[np.float64], NDArray[np.float64]],
    scored: tuple[dict[str, Any], dict[str, Any]],
    bootstrap: dict[str, Any],
    decision: tuple[bool, str],
    sizes: tuple[int, int],
    extra: dict[str, Any],
) -> Evaluation:
    """A judged candidate with the run's ``evaluation_results`` (both gates report alike)."""
    (candidate_probs, production_probs), (candidate, current) = probs, scored
    (deploy, reason), (n_train, n_validation) = decision, sizes
    results = {
        "gate": extra.pop("gate"),
        **extra,
        "method": calibrator.method,
        "production_method": production.method,
        "n_train": n_train,
        "n_validation": n_validation,
        "candidate": candidate,
        "production": current,
        "ece_improvement": _relative_improvement(current["ece"], candidate["ece"]),
        "brier_improvement": _relative_improvement(current["brier"], candidate["brier"]),
        "threshold": policy.threshold,
        "require_significant_improvement": policy.require_significant,
        "bootstrap": bootstrap,
        "selection": calibrator.selection,
        "reliability": {
            "candidate": reliability_bins(candidate_probs, labels),
            "production": reliability_bins(production_probs, labels),
        },
        "deployed": deploy,
        "reason": reason,
    }
    return Evaluation(
        calibrator=calibrator,
        deploy=deploy,
        reason=reason,
        results=results,
        metrics={
            **candidate,
            "n_train": n_train,
            "n_validation": n_validation,
            "band_check": _band_summary(results["band_check"]),
        },
        n_train=n_train,
        n_validation=n_validation,
    )


def _band_summary(band: dict[str, Any]) -> dict[str, Any]:
    """The band check without its groups, for the stored model's metrics."""
    return {key: value for key, value in band.items() if key != "groups"}


def _cross_validation_gate(
    candidate: dict[str, Any], production: dict[str, Any], band: dict[str, Any] | None = None
) -> tuple[bool, str]:
    scores = (
        f"log loss {production['log_loss']:.4f} -> {candidate['log_loss']:.4f}, "
        f"Brier {production['brier']:.4f} -> {candidate['brier']:.4f}"
    )
    if candidate["log_loss"] >= production["log_loss"]:
        return False, f"cross-validated log loss is not better than production's ({scores})"
    if candidate["brier"] > production["brier"]:
        return False, f"cross-validated Brier score is worse than production's ({scores})"
    refusal = _band_refusal(band)
    if refusal is not None:
        return False, f"cross-validated scores are better ({scores}) but {refusal}"
    return True, f"cross-validated log loss and Brier score are better ({scores})"


def evaluate_by_cross_validation(
    scores: NDArray[np.float64],
    labels: NDArray[np.float64],
    production: Calibrator,
    policy: TrainingPolicy,
    fit: Fitter,
) -> Evaluation:
    """Judge a small segment's candidate by stratified k-fold cross-validation.

    Every sample is predicted once by a candidate fitted without it (k = 5, fewer when the
    minority class is smaller) and once by ``production``. The candidate deploys only if its
    out-of-fold log loss is lower than production's and its Brier score is not higher: both are
    proper scores, so a candidate that the segment's own evidence scores worse is never deployed.
    ECE and its threshold are reported but do not decide: on a few dozen samples the binned ECE
    is mostly noise. The deployed candidate is then fitted on all samples.
    """
    with _single_threaded_blas():
        n_pos = int(labels.sum())
        minority = min(n_pos, labels.shape[0] - n_pos)
        n_folds = max(2, min(CV_FOLDS, minority))
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=policy.random_seed)
        out_of_fold = np.empty(scores.shape[0])
        # Each fold's band at its held-out scores: the check then sees every sample held out.
        oof_low, oof_high = np.empty(scores.shape[0]), np.empty(scores.shape[0])
        banded = True
        for train, test in folds.split(np.zeros((scores.shape[0], 1)), labels):
            fold = fit(train)
            out_of_fold[test] = fold.predict(scores[test])
            if fold.band is None:
                banded = False
            else:
                level = fold.band["level"]
                oof_low[test], oof_high[test] = fold.predict_interval(scores[test], level=level)
        if banded:
            band = {"level": level, **band_check(out_of_fold, oof_low, oof_high, labels)}
        else:
            band = {"checked": False, "reason": "the fold candidates carry no band"}
        production_probs = production.predict(scores)
        candidate = _scored(out_of_fold, labels)
        current = _scored(production_probs, labels)
        bootstrap = paired_bootstrap(
            out_of_fold,
            production_probs,
            labels,
            n_resamples=policy.bootstrap_resamples,
            random_state=policy.random_seed,
        )
        bootstrap["n_samples"] = int(scores.shape[0])
        calibrator = fit(np.arange(scores.shape[0]))
    n = int(scores.shape[0])
    return _evaluation(
        policy,
        calibrator=calibrator,
        production=production,
        labels=labels,
        probs=(out_of_fold, production_probs),
        scored=(candidate, current),
        bootstrap=bootstrap,
        decision=_cross_validation_gate(candidate, current, band),
        sizes=(n, n),
        extra={
            "gate": "cross_validation",
            "band_check": band,
            "n_folds": n_folds,
            "log_loss_improvement": _relative_improvement(
                current["log_loss"], candidate["log_loss"]
            ),
        },
    )
