"""fit_calibrator: one named method, or the best by cross-validated log loss ("auto")."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.model_selection import StratifiedKFold

from app.calibration.methods import (
    INPUT_CLIP,
    METHODS,
    Calibrator,
    FloatArray,
    apply_params,
    fit_params,
)
from app.calibration.validation import validate_scores_labels

# Above this many samples, method selection runs on a stratified subsample: the
# ranking of methods is settled long before, and the final fit still uses all data.
CV_MAX_SAMPLES = 200_000
MAX_SPLITS = 5
# Isotonic and histogram need enough data per training fold to beat a 2-3
# parameter map; below this they only add variance.
NONPARAMETRIC_MIN_TRAIN = 100
NONPARAMETRIC_MIN_MINORITY = 10
# Relative tolerance on the CV log loss below which methods count as tied.
TIE_RTOL = 1e-4
# Fraction of the paired standard error of the per-sample loss difference that
# a more complex method must beat the simpler one by.
TIE_SE = 0.5
BLEND_WEIGHTS = (0.25, 0.5, 0.75)
_SIMPLICITY = ("identity", "platt", "beta", "histogram", "isotonic")
_LOSS_CLIP = 1e-15


def _per_sample_log_loss(q: FloatArray, y: FloatArray) -> FloatArray:
    q = np.clip(q, _LOSS_CLIP, 1.0 - _LOSS_CLIP)
    return -(y * np.log(q) + (1.0 - y) * np.log1p(-q))


def _stratified_subsample(y: FloatArray, size: int, rng: np.random.Generator) -> np.ndarray:
    pos = np.flatnonzero(y == 1.0)
    neg = np.flatnonzero(y == 0.0)
    n_pos = max(2, round(size * pos.shape[0] / y.shape[0]))
    take_pos = rng.choice(pos, size=min(n_pos, pos.shape[0]), replace=False)
    take_neg = rng.choice(neg, size=min(size - take_pos.shape[0], neg.shape[0]), replace=False)
    return np.sort(np.concatenate([take_pos, take_neg]))


def _blend_table(
    p: FloatArray, iso: dict, parametric: str, par: dict, weight: float
) -> dict[str, list[float]]:
    """Express weight·isotonic + (1-weight)·parametric as an isotonic x/y table.

    Both maps are non-decreasing, so the blend is; a dense grid (the isotonic
    knots, data quantiles and an even grid in log-odds) keeps the linear
    interpolation within about 1e-4 of the exact blend.
    """
    lo, hi = float(p.min()), float(p.max())
    zlo, zhi = (np.log(v / (1.0 - v)) for v in np.clip([lo, hi], *INPUT_CLIP))
    logit_grid = 1.0 / (1.0 + np.exp(-np.linspace(zlo, zhi, 512)))
    quantiles = np.quantile(p, np.linspace(0.0, 1.0, 513))
    x_iso = np.asarray(iso["x"])
    grid = np.unique(np.concatenate([x_iso, logit_grid, quantiles, [lo, hi]]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    values = weight * np.interp(grid, x_iso, np.asarray(iso["y"]))
    values += (1.0 - weight) * apply_params(parametric, par, grid)
    # Rounding in the two maps must not leave a downward step of one ulp.
    values = np.clip(np.maximum.accumulate(values), 0.0, 1.0)
    keep = np.ones(grid.shape[0], dtype=bool)
    keep[1:-1] = ~((values[1:-1] == values[:-2]) & (values[1:-1] == values[2:]))
    return {"x": grid[keep].tolist(), "y": values[keep].tolist()}


def _select(p: FloatArray, y: FloatArray, random_state: int | None) -> Calibrator:
    rng = np.random.default_rng(random_state)
    n = p.shape[0]
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
    if n_splits < 2:
        params = fit_params("platt", p, y)
        selection = {
            "cv_log_loss": {},
            "n_splits": 0,
            "chosen": "platt",
            "n_cv_samples": n_cv,
            "reason": f"minority class has {minority} samples: too few for cross-validation",
        }
        return Calibrator("platt", params, selection=selection)

    train_size = n_cv * (n_splits - 1) // n_splits
    minority_train = minority * (n_splits - 1) // n_splits
    candidates = ["identity", "platt", "beta"]
    if train_size >= NONPARAMETRIC_MIN_TRAIN and minority_train >= NONPARAMETRIC_MIN_MINORITY:
        candidates += ["histogram", "isotonic"]

    seed = None if random_state is None else int(random_state)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    oof = {m: np.empty(n_cv) for m in candidates}
    for train, test in folds.split(np.zeros((n_cv, 1)), y_cv):
        for method in candidates:
            params = fit_params(method, p_cv[train], y_cv[train])
            oof[method][test] = apply_params(method, params, p_cv[test])

    losses = {m: _per_sample_log_loss(oof[m], y_cv) for m in candidates}
    cv = {m: float(losses[m].mean()) for m in candidates}
    best = min(candidates, key=lambda m: cv[m])

    def tolerance(method: str, reference: FloatArray) -> float:
        # A simpler method wins unless the better one is ahead by more than half a
        # standard error of the paired per-sample difference (or a hair, when
        # the two are identical).
        diff = losses[method] - reference
        se = float(diff.std(ddof=1) / np.sqrt(n_cv))
        return max(TIE_RTOL * abs(float(reference.mean())), TIE_SE * se)

    chosen = next(
        m for m in _SIMPLICITY if m in cv and cv[m] - cv[best] <= tolerance(m, losses[best])
    )

    blend = None
    if "isotonic" in candidates:
        parametric = min(("platt", "beta"), key=lambda m: cv[m])
        trials = {}
        for w in BLEND_WEIGHTS:
            q = w * oof["isotonic"] + (1.0 - w) * oof[parametric]
            trials[w] = _per_sample_log_loss(q, y_cv)
        w_best = min(trials, key=lambda w: float(trials[w].mean()))
        blend_loss = trials.pop(w_best)
        del trials
        if cv[chosen] - float(blend_loss.mean()) > tolerance(chosen, blend_loss):
            blend = {
                "isotonic_weight": float(w_best),
                "parametric": parametric,
                "cv_log_loss": float(blend_loss.mean()),
            }

    selection: dict[str, Any] = {
        "cv_log_loss": cv,
        "n_splits": n_splits,
        "chosen": "isotonic" if blend else chosen,
        "best_single": best,
        "n_cv_samples": n_cv,
        "candidates": candidates,
        "blend": blend,
    }
    # The out-of-fold arrays are no longer needed; free them before the final
    # fit on all data, which is where peak memory is reached.
    oof.clear()
    losses.clear()
    if blend is None:
        return Calibrator(chosen, fit_params(chosen, p, y), selection=selection)
    iso = fit_params("isotonic", p, y)
    par = fit_params(blend["parametric"], p, y)
    table = _blend_table(p, iso, blend["parametric"], par, blend["isotonic_weight"])
    return Calibrator("isotonic", table, selection=selection)


def fit_calibrator(
    scores: ArrayLike,
    labels: ArrayLike,
    method: str = "auto",
    random_state: int | None = 0,
) -> Calibrator:
    """Fit a calibrator mapping raw scores to probabilities.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Raw confidence scores in [0, 1].
    labels : array-like of shape (n_samples,)
        0/1 outcomes (ints, floats or booleans); at least 2 of each class.
    method : {"auto", "identity", "platt", "beta", "isotonic", "histogram"}, default="auto"
        ``"auto"`` picks by stratified k-fold out-of-fold log loss (k <= 5, at
        least two minority samples per fold; plain Platt when that is impossible),
        ties going to the simpler method, and may return an isotonic table that
        blends isotonic with the best parametric map when that is better still.
    random_state : int or None, default=0
        Seeds the CV folds and the subsample taken above 200,000 samples.

    Returns
    -------
    Calibrator
        ``selection`` holds the CV record for ``"auto"``, else None.

    Raises
    ------
    ValueError
        Unknown method, or bad scores/labels (see ``validate_scores_labels``).
    """
    if method != "auto" and method not in METHODS:
        raise ValueError(
            f"unknown calibration method {method!r}; expected 'auto' or one of {METHODS}"
        )
    p, y = validate_scores_labels(scores, labels, require_both_classes=True)
    assert y is not None
    if method == "auto":
        return _select(p, y, random_state)
    return Calibrator(method, fit_params(method, p, y))
