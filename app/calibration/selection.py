"""fit_calibrator: one named method, or ("auto") a stacked average of prior-shrunk candidates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.model_selection import StratifiedKFold

from app.calibration.averaging import CANDIDATES, Average, bagged_stacking_weights, tabulate
from app.calibration.intervals import (
    BAND_LEVEL,
    band_from_spread,
    bootstrap_spread,
)
from app.calibration.methods import METHODS, Calibrator, FloatArray, fit_params
from app.calibration.priors import Reference, saturation_clip
from app.calibration.validation import INPUT_CLIP, validate_scores_labels

_LOSS_CLIP = 1e-15
# Above this many samples, the stacking weights are estimated on a stratified
# subsample: they are settled long before, and the isotonic part of the final
# fit still uses all data.
CV_MAX_SAMPLES = 20_000
# Smooth candidates reach their asymptotic precision long before this; fitting
# them on a subsample keeps the 1M-sample fit within a few isotonic fits.
SMOOTH_MAX_SAMPLES = 100_000
MAX_SPLITS = 5
SIMPLE = ("platt", "platt_flat", "platt_ard")
# Candidates whose prior precisions each bootstrap resample learns afresh.
RELEARNED_IN_BOOTSTRAP = ("platt_ard",)
# Bayesian-bootstrap reweightings the stacking weights are averaged over.
N_BAGS = 16
# Paired standard errors of out-of-fold log-loss gain at which the stack is
# trusted fully over Platt alone (below, the weights move part of the way).
GAIN_SE = 3.0
# Isotonic regression needs a few dozen of the rarer class before its steps
# say more about the map than about the noise (Zadrozny & Elkan 2002 saw it
# overfit well below that).
ISO_MIN_MINORITY = 40


def _stratified_subsample(y: FloatArray, size: int, rng: np.random.Generator) -> np.ndarray:
    pos = np.flatnonzero(y == 1.0)
    neg = np.flatnonzero(y == 0.0)
    n_pos = max(2, round(size * pos.shape[0] / y.shape[0]))
    take_pos = rng.choice(pos, size=min(n_pos, pos.shape[0]), replace=False)
    take_neg = rng.choice(neg, size=min(size - take_pos.shape[0], neg.shape[0]), replace=False)
    return np.sort(np.concatenate([take_pos, take_neg]))


def _reference(prior: Calibrator | None) -> Reference:
    if prior is None:
        return lambda p: p
    if not isinstance(prior, Calibrator):
        raise ValueError(f"prior must be a Calibrator or None, got {type(prior).__name__}")
    return prior.predict


def _fit_candidates(
    names: list[str],
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lams: dict[str, FloatArray] | None = None,
) -> list:
    """Fit each named candidate; an empty list when one cannot be fitted on these data."""
    maps = []
    for name in names:
        lam = None if lams is None else lams.get(name)
        fitted = CANDIDATES[name](p, y, reference, rng, lam)
        if fitted is None:
            return []
        maps.append(fitted)
    return maps


def fit_average(
    p: FloatArray, y: FloatArray, reference: Reference, random_state: int | None
) -> tuple[Average, dict[str, Any], Callable[[FloatArray, FloatArray, FloatArray], Any]]:
    """Stack the candidate maps by cross-validated log score; the fit on all data.

    The candidates are fitted on all data first, which learns each prior
    precision by evidence; the cross-validation folds reuse those precisions
    (a hyperparameter with about one degree of freedom) and only refit the weights.
    Exact 0s and 1s of the reference are read where ``saturation_clip`` puts them, in the
    folds and the bootstrap alike.

    Returns the fitted average, a JSON-safe record of how it was built, and a
    function refitting the same average (weights and prior precisions fixed) on
    a resample, evaluated at given scores, for the bootstrap band.
    """
    rng = np.random.default_rng(random_state)
    n = p.shape[0]
    lo, hi = saturation_clip(reference(p))
    if (lo, hi) != INPUT_CLIP:
        unclipped = reference

        def reference(q: FloatArray) -> FloatArray:
            return np.clip(unclipped(q), lo, hi)

    smooth_p, smooth_y = p, y
    if n > SMOOTH_MAX_SAMPLES:
        sub = _stratified_subsample(y, SMOOTH_MAX_SAMPLES, rng)
        smooth_p, smooth_y = p[sub], y[sub]
    names = list(CANDIDATES)
    maps = []
    for name in names:
        data = (p, y) if name == "isotonic" else (smooth_p, smooth_y)
        maps.append(CANDIDATES[name](*data, reference, rng))
    fitted = {name: m for name, m in zip(names, maps, strict=True) if m is not None}
    n_pos_all = int(np.count_nonzero(y))
    if min(n_pos_all, n - n_pos_all) < ISO_MIN_MINORITY:
        fitted.pop("isotonic", None)
    names = list(fitted)
    lams = {name: m.fit.lam for name, m in fitted.items() if hasattr(m, "fit")}

    if n > CV_MAX_SAMPLES:
        sub = _stratified_subsample(y, CV_MAX_SAMPLES, rng)
        p_cv, y_cv = p[sub], y[sub]
    else:
        p_cv, y_cv = p, y
    n_cv = p_cv.shape[0]
    n_pos = int(np.count_nonzero(y_cv))
    minority = min(n_pos, n_cv - n_pos)
    # Each test fold must see at least two of the minority class.
    n_splits = min(MAX_SPLITS, minority // 2)
    record: dict[str, Any] = {
        "n_splits": 0,
        "n_cv_samples": n_cv,
        "reference_clip": [lo, hi],
        "candidates": names,
        "precision": {name: [float(v) for v in lam] for name, lam in lams.items()},
    }
    weights = None
    if n_splits >= 2:
        seed = None if random_state is None else int(random_state)
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        oof = np.empty((n_cv, len(names)))
        for train, test in folds.split(np.zeros((n_cv, 1)), y_cv):
            fold_maps = _fit_candidates(names, p_cv[train], y_cv[train], reference, rng, lams)
            if not fold_maps:
                break
            for j, fold_map in enumerate(fold_maps):
                oof[test, j] = fold_map.predict(p_cv[test])
        else:
            weights = bagged_stacking_weights(oof, y_cv, rng, N_BAGS)
            per_sample = [_per_sample_log_loss(oof[:, j], y_cv) for j in range(len(names))]
            stacked = _per_sample_log_loss(oof @ weights, y_cv)
            # The simple family: Platt shrunk toward the prior (one precision for
            # both weights, or one each) and Platt unshrunk, stacked on their own
            # (how far to trust the prior). The full stack must earn its extra
            # flexibility: its gain over the simple stack, in paired standard
            # errors of the per-sample log loss, sets how far the weights move
            # from the simple stack (all of the way from GAIN_SE errors on).
            simple_cols = [names.index(m) for m in SIMPLE if m in names]
            simple = np.zeros(len(names))
            simple[simple_cols] = bagged_stacking_weights(oof[:, simple_cols], y_cv, rng, N_BAGS)
            diff = _per_sample_log_loss(oof @ simple, y_cv) - stacked
            se = float(diff.std(ddof=1) / np.sqrt(n_cv)) if n_cv > 1 else 0.0
            trust = float(np.clip(diff.mean() / (GAIN_SE * se), 0.0, 1.0)) if se > 0 else 0.0
            weights = trust * weights + (1.0 - trust) * simple
            record["n_splits"] = n_splits
            record["stack_trust"] = trust
            record["cv_log_loss"] = {
                **{m: float(v.mean()) for m, v in zip(names, per_sample, strict=True)},
                "stack": float(stacked.mean()),
            }
    if weights is None:
        # Too few labels (or distinct scores) to cross-validate: the evidence-shrunk
        # Platt map alone, which is the reference itself when the data say nothing.
        weights = np.array([1.0 if name == "platt" else 0.0 for name in names])
        record["reason"] = f"minority class has {minority} samples or scores too few values"
    record["weights"] = dict(zip(names, (float(w) for w in weights), strict=True))
    keep = [j for j, w in enumerate(weights) if w > 0.0]
    kept_names = [names[j] for j in keep]
    average = Average(maps=[fitted[name] for name in kept_names], weights=weights[keep])

    # The bootstrap relearns the per-weight precisions of ``platt_ard``: one at its bound
    # is a decision (the intercept pinned to the prior's) that a resample may not repeat,
    # and a band conditioned on it is too narrow where the decision is wrong (at n = 50,
    # 0.79 coverage of the simulation's true maps with them held fixed).
    boot_lams = {name: lam for name, lam in lams.items() if name not in RELEARNED_IN_BOOTSTRAP}

    def refit(p_boot: FloatArray, y_boot: FloatArray, x: FloatArray) -> FloatArray | None:
        maps = _fit_candidates(kept_names, p_boot, y_boot, reference, rng, boot_lams)
        return Average(maps=maps, weights=average.weights).predict(x) if maps else None

    return average, record, refit


def _per_sample_log_loss(q: FloatArray, y: FloatArray) -> FloatArray:
    q = np.clip(q, _LOSS_CLIP, 1.0 - _LOSS_CLIP)
    return -(y * np.log(q) + (1.0 - y) * np.log1p(-q))


def fit_calibrator(
    scores: ArrayLike,
    labels: ArrayLike,
    method: str = "auto",
    random_state: int | None = 0,
    prior: Calibrator | None = None,
) -> Calibrator:
    """Fit a calibrator mapping raw scores to probabilities.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Raw confidence scores in [0, 1].
    labels : array-like of shape (n_samples,)
        0/1 outcomes (ints, floats or booleans); at least 2 of each class.
    method : {"auto", "identity", "platt", "beta", "isotonic", "histogram"}, default="auto"
        ``"auto"`` averages Platt, beta and a monotone spline (each a posterior
        mode shrunk toward ``prior`` with a strength learned by evidence), Platt
        with one such strength per weight, unshrunk Platt and shrunk isotonic
        regression, weighted by cross-validated stacking (k <= 5 stratified
        folds); the average is stored as an isotonic table.
        A named method is the plain maximum-likelihood fit of that map.
    random_state : int or None, default=0
        Seeds the CV folds and the subsamples taken at large n.
    prior : Calibrator or None, default=None
        The map the fit shrinks toward when labels are few (the identity when
        None): e.g. the previous production model or a pooled model. Only
        ``method="auto"`` uses it.

    Returns
    -------
    Calibrator
        ``selection`` holds the stacking record for ``"auto"``, else None.

    Raises
    ------
    ValueError
        Unknown method, a prior with a named method, a prior that is not a
        Calibrator, or bad scores/labels (see ``validate_scores_labels``).
    """
    if method != "auto" and method not in METHODS:
        raise ValueError(
            f"unknown calibration method {method!r}; expected 'auto' or one of {METHODS}"
        )
    if prior is not None and method != "auto":
        raise ValueError(f"prior is used by method='auto' only, got method={method!r}")
    reference = _reference(prior)
    p, y = validate_scores_labels(scores, labels, require_both_classes=True)
    assert y is not None
    if method != "auto":
        return Calibrator(method, fit_params(method, p, y))
    average, record, refit = fit_average(p, y, reference, random_state)
    record["prior"] = None if prior is None else prior.method
    table = tabulate(average, p)
    # The band's knots are the table's inside the input clip (whose ends are
    # table knots), so containing the map at them contains it everywhere.
    table_x, table_y = np.asarray(table["x"]), np.asarray(table["y"])
    inside = (table_x >= INPUT_CLIP[0]) & (table_x <= INPUT_CLIP[1])
    x, center = table_x[inside], table_y[inside]
    iso_weight = record["weights"].get("isotonic", 0.0)
    # Smooth maps converge at n^-1/2, isotonic regression at n^-1/3.
    rate = 0.5 * (1.0 - iso_weight) + iso_weight / 3.0
    rng = np.random.default_rng(None if random_state is None else [int(random_state), 1])
    spread = bootstrap_spread(p, y, x, lambda pb, yb: refit(pb, yb, x), rate, rng)
    # The bootstrap shows how the shrunk fit varies, not how far its prior may
    # have pulled it; the posterior's spread covers that (Nychka 1988, "Bayesian
    # confidence intervals for smoothing splines", JASA 83), so take the larger.
    spread = np.maximum(spread, average.posterior_logit_sd(x))
    ends = (float(table_y[0]), float(table_y[-1]))
    band = band_from_spread(x, center, spread, BAND_LEVEL, knots_shared=True, ends=ends)
    return Calibrator("isotonic", table, selection=record, band=band)
