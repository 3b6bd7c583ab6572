"""Segments that borrow strength: per-segment calibrators partially pooled toward a shared one.

The model is a hierarchical logistic recalibration of the pooled calibrator ``P``. For a
segment ``s`` with pooled log-odds ``z = logit(P(p))``,

    logit q_s(p) = z + a_s + b_s (z - c),    a_s ~ N(m_a, tau_a^2),  b_s ~ N(m_b, tau_b^2),

an intercept and slope correction (Cox's logistic recalibration, Cox 1958; the "model updating"
of Steyerberg et al. 2004) of the pooled map, with ``c`` the mean pooled log-odds so the two
corrections are nearly independent. The spreads ``tau`` say how much segments really differ;
they are estimated by empirical Bayes (Efron & Morris 1975; Morris 1983): maximising the
marginal likelihood of all segments, each segment's correction integrated out by the Laplace
approximation (Tierney & Kadane 1986; as in GLMMs, Breslow & Clayton 1993). The prior means
``m`` are that GLMM's fixed effects: the pooled fit weighs segments by their sizes, so it leans
toward the few largest, whereas the typical segment, the centre small segments are pulled to,
weighs every segment by its precision under the spread. Each segment then gets its posterior
mode, which for the map at any score is also its posterior median (the Laplace posterior is
Gaussian and the map monotone in the linear predictor), the estimate that minimises the expected
absolute error. With no spread (``tau = 0``) every segment *is* the pooled calibrator;
a large segment's likelihood outweighs the prior and it follows its own data; a small one sits
between. The composition stays within the ``calibrator/v1`` methods: a recalibrated Platt map is
a Platt map, beta stays beta, and isotonic/histogram tables keep their knots with transformed
values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import norm

from app.calibration.intervals import BAND_LEVEL, band_from_spread
from app.calibration.methods import Calibrator, FloatArray
from app.calibration.priors import logit
from app.calibration.selection import fit_calibrator
from app.calibration.validation import INPUT_CLIP, validate_scores_labels

POOLED_SEGMENT = "_pooled"

# Search range of each spread on the log-odds scale. Below the lower end a correction changes
# no probability by more than ~1e-3 and is dropped (tau = 0); above the upper end a segment is
# effectively unpooled (a slope change of 5 already turns any map into a step).
_TAU_MIN, _TAU_MAX = 1e-3, 5.0
_NEWTON_ITERATIONS = 60
_NEWTON_TOL = 1e-10
# Newton steps are capped in length: penalised logistic likelihoods are convex but flat far
# from the optimum, where a full step can overshoot by orders of magnitude.
_MAX_STEP = 2.0
# Pooled probabilities of exactly 0 or 1 (possible for tables) get finite log-odds.
_Z_CLIP = INPUT_CLIP
# 5% critical values of the likelihood-ratio statistic for 0, 1 and 2 variance components
# tested on the boundary: 1/2 chi2_0 + 1/2 chi2_1, and 1/4 chi2_0 + 1/2 chi2_1 + 1/4 chi2_2.
_BOUNDARY_CRITICAL = (0.0, 2.706, 5.138)
# The spread is estimated on at most this many samples per segment (a seeded random subset).
# A segment's correction is then known to about 0.02 on the log-odds already, so more samples
# barely move the marginal likelihood, while the cost grows with every sample (1M samples over
# 10 segments: about 30 s without the cap, a few seconds with it).
MAX_SPREAD_SAMPLES_PER_SEGMENT = 20_000
# Optional fields of a stored spread (absent from spreads stored before they existed).
_MEAN_FIELDS = ("mean_intercept", "mean_slope")
# Range of a prior mean on the log-odds scale: a typical segment further than this from the
# pooled map would mean the pooled fit is wrong for all of them.
_MEAN_MAX = 5.0


@dataclass(frozen=True)
class SegmentSpread:
    """How much segments differ from the pooled map: the hierarchical model's hyperparameters.

    Attributes
    ----------
    tau_intercept, tau_slope : float
        Prior standard deviations of the intercept and slope corrections (log-odds scale);
        0 means segments do not differ in that direction.
    center : float
        The pooled log-odds the slope pivots around (mean over all training samples).
    n_segments : int
        How many segments the spread was estimated from.
    mean_intercept, mean_slope : float, default 0
        Prior means of the two corrections: the typical segment's map relative to the pooled
        one (0 when the spread in that direction is 0; spreads stored before they existed read
        as 0).
    """

    tau_intercept: float
    tau_slope: float
    center: float
    n_segments: int
    mean_intercept: float = 0.0
    mean_slope: float = 0.0

    @property
    def is_zero(self) -> bool:
        return self.tau_intercept == 0.0 and self.tau_slope == 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentSpread:
        """Rebuild from ``to_dict()``; ``ValueError`` naming a missing or bad field."""
        values = {}
        for key in ("tau_intercept", "tau_slope", "center", "n_segments", *_MEAN_FIELDS):
            value = data.get(key, 0.0) if key in _MEAN_FIELDS else data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"segment spread field {key!r} must be a number, got {value!r}")
            signed = key == "center" or key in _MEAN_FIELDS
            if not np.isfinite(value) or (not signed and value < 0):
                raise ValueError(f"segment spread field {key!r} is out of range: {value!r}")
            values[key] = value
        return cls(
            tau_intercept=float(values["tau_intercept"]),
            tau_slope=float(values["tau_slope"]),
            center=float(values["center"]),
            n_segments=int(values["n_segments"]),
            mean_intercept=float(values["mean_intercept"]),
            mean_slope=float(values["mean_slope"]),
        )

    @property
    def mean(self) -> tuple[float, float]:
        return (self.mean_intercept, self.mean_slope)


def pooled_log_odds(prior: Calibrator, scores: FloatArray) -> FloatArray:
    """The prior's log-odds at ``scores``; exact (no clipping) for Platt and beta maps."""
    params = prior.params
    lo, hi = prior.input_clip
    if prior.method == "platt":
        p = np.clip(scores, lo, hi)
        return params["a"] * (np.log(p) - np.log1p(-p)) + params["b"]
    if prior.method == "beta":
        p = np.clip(scores, lo, hi)
        return params["a"] * np.log(p) - params["b"] * np.log1p(-p) + params["c"]
    q = np.clip(prior.predict(scores), *_Z_CLIP)
    return np.log(q) - np.log1p(-q)


def _group_terms(
    z: FloatArray,
    x: FloatArray,
    y: FloatArray,
    codes: NDArray[np.intp],
    n_groups: int,
    theta: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per group at ``theta``: the linear predictor, the log-likelihood gradient and Hessian.

    ``eta`` has one value per sample; gradient (n_groups, 2) and Hessian (n_groups, 2, 2) are
    of the negative log-likelihood in (a, b), summed per group with ``bincount``.
    """
    eta = z + theta[codes, 0] + theta[codes, 1] * x
    q = expit(eta)
    r = q - y
    w = q * (1.0 - q)
    grad = np.stack([np.bincount(codes, r, n_groups), np.bincount(codes, r * x, n_groups)], axis=1)
    hess = np.empty((n_groups, 2, 2))
    hess[:, 0, 0] = np.bincount(codes, w, n_groups)
    hess[:, 0, 1] = hess[:, 1, 0] = np.bincount(codes, w * x, n_groups)
    hess[:, 1, 1] = np.bincount(codes, w * x * x, n_groups)
    return eta, grad, hess


def _newton(
    z: FloatArray,
    y: FloatArray,
    codes: NDArray[np.intp],
    n_groups: int,
    tau: tuple[float, float],
    center: float,
    start: FloatArray | None = None,
    mean: tuple[float, float] = (0.0, 0.0),
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Posterior modes of (a_s, b_s) for every group at once, under N(mean, tau^2) priors.

    Returns the modes (n_groups, 2), the data Hessians (n_groups, 2, 2) at the modes and the
    groups' negative log-likelihoods there. A direction with tau 0 stays at 0.
    """
    x = z - center
    free = np.array([tau[0] > 0.0, tau[1] > 0.0])
    precision = np.where(free, 1.0 / np.square(np.where(free, tau, 1.0)), 0.0)
    prior_mean = np.where(free, mean, 0.0)
    theta = np.tile(prior_mean, (n_groups, 1)) if start is None else start.copy()
    theta[:, ~free] = 0.0
    for _ in range(_NEWTON_ITERATIONS):
        _, grad, hess = _group_terms(z, x, y, codes, n_groups, theta)
        grad += precision * (theta - prior_mean)
        hess[:, 0, 0] += precision[0]
        hess[:, 1, 1] += precision[1]
        # A fixed direction gets a unit diagonal so the solve leaves it at zero.
        for j in np.flatnonzero(~free):
            hess[:, j, :] = 0.0
            hess[:, :, j] = 0.0
            hess[:, j, j] = 1.0
            grad[:, j] = 0.0
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, _MAX_STEP / np.maximum(norm, 1e-300))
        theta -= step
        # The slope of the segment's map, 1 + b, must stay >= 0 (monotone calibrators).
        theta[:, 1] = np.maximum(theta[:, 1], -1.0)
        if float(np.abs(step).max(initial=0.0)) < _NEWTON_TOL:
            break
    eta, _, data_hess = _group_terms(z, x, y, codes, n_groups, theta)
    nll = np.bincount(codes, np.logaddexp(0.0, eta) - y * eta, n_groups)
    return theta, data_hess, nll


def _log_marginal(
    z: FloatArray,
    y: FloatArray,
    codes: NDArray[np.intp],
    n_groups: int,
    tau: tuple[float, float],
    center: float,
    start: FloatArray | None = None,
    mean: tuple[float, float] = (0.0, 0.0),
) -> tuple[float, FloatArray]:
    """Laplace approximation of the log marginal likelihood of all groups under ``tau``."""
    theta, data_hess, nll = _newton(z, y, codes, n_groups, tau, center, start, mean)
    free = [j for j in (0, 1) if tau[j] > 0.0]
    if not free:
        return -float(nll.sum()), theta
    prec = np.array([1.0 / tau[j] ** 2 for j in free])
    sub = data_hess[:, free][:, :, free] + np.diag(prec)
    deviation = theta[:, free] - np.asarray(mean)[free]
    penalty = 0.5 * (np.square(deviation) * prec).sum(axis=1)
    _, logdet = np.linalg.slogdet(sub)
    total = -nll - penalty - 0.5 * logdet + 0.5 * float(np.log(prec).sum())
    return float(total.sum()), theta


def _segment_codes(segments: ArrayLike, n: int) -> tuple[list[str], NDArray[np.intp]]:
    raw = np.asarray(segments)
    if raw.ndim != 1 or raw.shape[0] != n:
        raise ValueError(f"segments must be 1-D with one name per score ({n}), got {raw.shape}")
    # Integer codes are taken as they are: text names for a million rows cost ~100 bytes each.
    keys = raw if raw.dtype.kind in "iu" else raw.astype(str)
    names, codes = np.unique(keys, return_inverse=True)
    names = [str(name) for name in names]
    if POOLED_SEGMENT in names:
        raise ValueError(f"segment name {POOLED_SEGMENT!r} is reserved for the pooled calibrator")
    return names, codes.astype(np.intp)


def _capped_rows(
    codes: NDArray[np.intp], n_groups: int, cap: int, random_state: int | None
) -> NDArray[np.intp] | None:
    """Row indices keeping at most ``cap`` random rows per group; ``None`` when none is over."""
    counts = np.bincount(codes, minlength=n_groups)
    if counts.max() <= cap:
        return None
    rng = np.random.default_rng(random_state)
    keep = []
    for group in range(n_groups):
        rows = np.flatnonzero(codes == group)
        keep.append(rows if rows.shape[0] <= cap else rng.choice(rows, cap, replace=False))
    return np.sort(np.concatenate(keep))


def estimate_spread(
    prior: Calibrator,
    scores: ArrayLike,
    labels: ArrayLike,
    segments: ArrayLike,
    random_state: int | None = 0,
) -> SegmentSpread:
    """Empirical-Bayes estimate of how much segments differ from ``prior``.

    Parameters
    ----------
    prior : Calibrator
        The pooled calibrator (fitted on all samples).
    scores, labels, segments : array-like of shape (n_samples,)
        Raw scores in [0, 1], 0/1 outcomes and each sample's segment name.
    random_state : int or None, default=0
        Seeds the subset taken from segments over ``MAX_SPREAD_SAMPLES_PER_SEGMENT`` samples.

    Returns
    -------
    SegmentSpread
        The spreads maximising the Laplace-approximated marginal likelihood; a spread is 0
        when the data do not support any difference in that direction.
    """
    p, y = validate_scores_labels(scores, labels)
    assert y is not None
    names, codes = _segment_codes(segments, p.shape[0])
    z = pooled_log_odds(prior, p)
    center = float(z.mean())
    n_groups = len(names)
    rows = _capped_rows(codes, n_groups, MAX_SPREAD_SAMPLES_PER_SEGMENT, random_state)
    if rows is not None:
        z, y, codes = z[rows], y[rows], codes[rows]
    null_value, _ = _log_marginal(z, y, codes, n_groups, (0.0, 0.0), center)
    zero = SegmentSpread(0.0, 0.0, center, n_groups)
    if n_groups < 2:
        return zero

    warm: dict[str, FloatArray] = {}

    def objective(log_tau: FloatArray) -> float:
        tau = (float(np.exp(log_tau[0])), float(np.exp(log_tau[1])))
        value, theta = _log_marginal(z, y, codes, n_groups, tau, center, warm.get("theta"))
        warm["theta"] = theta
        return -value

    bounds = [(np.log(_TAU_MIN), np.log(_TAU_MAX))] * 2
    # A coarse grid first: the marginal likelihood in tau can have a flat shoulder near 0
    # that a local search started in the wrong place would stop on.
    grid = np.log([0.02, 0.1, 0.3, 1.0])
    starts = [(a, b) for a in grid for b in grid]
    best_start = min(starts, key=lambda s: objective(np.array(s)))
    result = minimize(objective, np.array(best_start), method="L-BFGS-B", bounds=bounds)
    tau = np.exp(result.x)
    # A spread is kept only when the data call for it: each candidate (the optimum, either
    # direction alone, none) is scored by its log marginal likelihood minus half the 5%
    # critical value of the likelihood-ratio test of "no spread", whose null distribution on
    # the boundary is a chi-square mixture (Self & Liang 1987). Segments that share one map
    # then get exactly the pooled calibrator 95% of the time, instead of fitted noise.
    candidates = {
        (float(tau[0]), float(tau[1])),
        (float(tau[0]), 0.0),
        (0.0, float(tau[1])),
    }
    scored = [(null_value, (0.0, 0.0))]
    for cand in candidates:
        cand = tuple(0.0 if t <= _TAU_MIN * 1.5 else t for t in cand)
        value, _ = _log_marginal(z, y, codes, n_groups, cand, center)
        n_free = sum(t > 0.0 for t in cand)
        scored.append((value - 0.5 * _BOUNDARY_CRITICAL[n_free], cand))
    _, best = max(scored, key=lambda item: item[0])
    if best == (0.0, 0.0):
        return zero
    # With a spread, the prior means (the GLMM's fixed effects) are estimated with it, by the
    # same marginal likelihood; the test above kept them at 0, so "no spread" stays the pooled
    # map exactly.
    free = [j for j in (0, 1) if best[j] > 0.0]

    def joint(values: FloatArray) -> float:
        tau, mean = [0.0, 0.0], [0.0, 0.0]
        for i, j in enumerate(free):
            tau[j] = float(np.exp(values[i]))
            mean[j] = float(values[len(free) + i])
        value, theta = _log_marginal(
            z, y, codes, n_groups, (tau[0], tau[1]), center, warm.get("joint"), (mean[0], mean[1])
        )
        warm["joint"] = theta
        return -value

    start = np.array([np.log(best[j]) for j in free] + [0.0] * len(free))
    fitted = minimize(
        joint,
        start,
        method="L-BFGS-B",
        bounds=[(np.log(_TAU_MIN), np.log(_TAU_MAX))] * len(free)
        + [(-_MEAN_MAX, _MEAN_MAX)] * len(free),
    )
    tau_out, mean_out = [0.0, 0.0], [0.0, 0.0]
    for i, j in enumerate(free):
        tau_out[j] = float(np.exp(fitted.x[i]))
        mean_out[j] = float(fitted.x[len(free) + i])
    return SegmentSpread(tau_out[0], tau_out[1], center, n_groups, mean_out[0], mean_out[1])


def _compose(prior: Calibrator, slope: float, shift: float) -> Calibrator:
    """The calibrator ``sigmoid(slope * logit(prior(p)) + shift)`` in the prior's own method."""
    params = prior.params
    if prior.method == "identity":
        return Calibrator("platt", {"a": slope, "b": shift}, prior.input_clip)
    if prior.method == "platt":
        return Calibrator(
            "platt",
            {"a": slope * params["a"], "b": slope * params["b"] + shift},
            prior.input_clip,
        )
    if prior.method == "beta":
        return Calibrator(
            "beta",
            {
                "a": slope * params["a"],
                "b": slope * params["b"],
                "c": slope * params["c"] + shift,
            },
            prior.input_clip,
        )
    key = "y" if prior.method == "isotonic" else "values"
    values = np.clip(np.asarray(params[key]), *_Z_CLIP)
    mapped = expit(slope * (np.log(values) - np.log1p(-values)) + shift)
    # Rounding in expit must not create a one-ulp downward step.
    mapped = np.clip(np.maximum.accumulate(mapped), 0.0, 1.0)
    new_params = {k: v for k, v in params.items()}
    new_params[key] = mapped.tolist()
    return Calibrator(prior.method, new_params, prior.input_clip)


def fit_with_prior(
    scores: ArrayLike,
    labels: ArrayLike,
    prior: Calibrator,
    spread: SegmentSpread,
) -> Calibrator:
    """One segment's calibrator: the posterior mode of its correction to ``prior``.

    Parameters
    ----------
    scores, labels : array-like of shape (n_samples,)
        The segment's raw scores in [0, 1] and 0/1 outcomes (one class is allowed: the prior
        keeps the fit finite).
    prior : Calibrator
        The pooled calibrator.
    spread : SegmentSpread
        From ``estimate_spread`` on the pooled training data.

    Returns
    -------
    Calibrator
        ``prior`` itself when the spread is zero; otherwise the recalibrated map, whose
        ``selection["pooling"]`` records the correction, the pooling weight (the share of the
        correction's precision that comes from the prior: 1 means pure pooled map, 0 means the
        segment's own data alone) and the mean |segment map - pooled map| over its scores.
        Its ``band`` (90%) is ``posterior_band``'s.
    """
    p, y = validate_scores_labels(scores, labels)
    assert y is not None
    z = pooled_log_odds(prior, p)
    codes = np.zeros(p.shape[0], dtype=np.intp)
    tau = (spread.tau_intercept, spread.tau_slope)
    theta, data_hess, _ = _newton(z, y, codes, 1, tau, spread.center, mean=spread.mean)
    a, b = (float(v) for v in theta[0])
    slope, shift = 1.0 + b, a - b * spread.center
    calibrator = prior if spread.is_zero else _compose(prior, slope, shift)
    band = (
        prior.band
        if spread.is_zero
        else posterior_band(prior, calibrator, spread, data_hess[0], slope)
    )
    info = pooling_info(data_hess[0], spread)
    info.update(
        n=int(p.shape[0]),
        intercept=a,
        slope=slope,
        distance_from_pooled=float(np.abs(calibrator.predict(p) - prior.predict(p)).mean()),
    )
    selection = {"pooling": info, "prior_method": prior.method}
    return Calibrator(
        calibrator.method, calibrator.params, calibrator.input_clip, selection=selection, band=band
    )


def posterior_band(
    prior: Calibrator,
    calibrator: Calibrator,
    spread: SegmentSpread,
    data_hessian: FloatArray,
    slope: float,
    level: float = BAND_LEVEL,
) -> dict[str, Any]:
    """A pointwise band for a segment's map: its correction's posterior and the prior's band.

    The correction's Laplace posterior is Gaussian with covariance ``(H + diag(1/tau^2))^-1``
    (``H`` the data Hessian at the mode), so the segment's log-odds at a score, linear in
    the correction, has variance ``v' Sigma v`` with ``v = (1, z - c)``. The pooled map is
    uncertain too: its band's log-odds half-width, times the correction's slope, is added in
    quadrature, as for independent errors. The band lies on the prior's band grid (the
    pooled table's knots) when it has one, else on 101 evenly spaced scores.

    Parameters
    ----------
    prior, calibrator : Calibrator
        The pooled calibrator and the segment's (``_compose`` of it).
    spread : SegmentSpread
    data_hessian : ndarray of shape (2, 2)
        The segment's negative log-likelihood Hessian in (a, b) at the posterior mode.
    slope : float
        The correction's slope ``1 + b`` on the pooled log-odds.
    level : float, default 0.9

    Returns
    -------
    dict
        ``{"level", "x", "low", "high"}``, containing the map (see ``intervals.contain``).
    """
    lo, hi = calibrator.input_clip
    if prior.band is not None:
        x = np.asarray(prior.band["x"], dtype=np.float64)
    else:
        x = np.linspace(lo, hi, 101)
    z = pooled_log_odds(prior, x)
    design = np.stack([np.ones_like(z), z - spread.center], axis=1)
    free = [j for j, tau in enumerate((spread.tau_intercept, spread.tau_slope)) if tau > 0.0]
    taus = np.array([spread.tau_intercept, spread.tau_slope])[free]
    covariance = np.linalg.inv(data_hessian[np.ix_(free, free)] + np.diag(1.0 / taus**2))
    variance = np.einsum("ij,jk,ik->i", design[:, free], covariance, design[:, free])
    if prior.band is not None:
        # The stored band's log-odds half-width at its level, as a standard deviation.
        center = logit(prior.predict(x), _Z_CLIP)
        half = np.maximum(
            center - logit(np.asarray(prior.band["low"], dtype=np.float64), _Z_CLIP),
            logit(np.asarray(prior.band["high"], dtype=np.float64), _Z_CLIP) - center,
        )
        z_level = norm.ppf(0.5 + float(prior.band["level"]) / 2.0)
        variance = variance + np.square(slope * half / z_level)
    ends = calibrator.predict(np.array([0.0, 1.0]))
    # A composed table keeps the prior's knots, which are its band's grid: containment at
    # the knots is containment everywhere.
    knots_shared = False
    if calibrator.method == "isotonic" and prior.band is not None:
        knots = np.asarray(calibrator.params["x"])
        knots_shared = knots[(knots >= x[0]) & (knots <= x[-1])].tolist() == x.tolist()
    return band_from_spread(
        x,
        calibrator.predict(x),
        np.sqrt(variance),
        level,
        knots_shared=knots_shared,
        ends=(float(ends[0]), float(ends[1])),
    )


def pooling_info(data_hessian: FloatArray, spread: SegmentSpread) -> dict[str, Any]:
    """Pooling weight of a segment from its data Hessian: prior precision / posterior precision.

    Per correction, ``(1/tau^2) / (1/tau^2 + h)``, the Efron-Morris shrinkage factor; averaged
    with weights ``tau^2`` so a direction in which segments hardly differ does not dominate.
    1 when nothing may vary.
    """
    total, weighted = 0.0, 0.0
    for j, tau in enumerate((spread.tau_intercept, spread.tau_slope)):
        if tau > 0.0:
            prior_precision = 1.0 / tau**2
            shrink = prior_precision / (prior_precision + float(data_hessian[j, j]))
            total += tau**2
            weighted += tau**2 * shrink
    weight = weighted / total if total > 0.0 else 1.0
    return {"pooling_weight": weight, "spread": spread.to_dict()}


def fit_pooled(
    scores: ArrayLike,
    labels: ArrayLike,
    segments: ArrayLike,
    random_state: int | None = 0,
) -> tuple[Calibrator, SegmentSpread]:
    """The pooled calibrator over all samples and the segments' spread around it.

    The spread is recorded in the calibrator's ``selection["segment_spread"]`` so a service can
    store it with the pooled model and fit segments later, one at a time.
    """
    p, y = validate_scores_labels(scores, labels, require_both_classes=True)
    assert y is not None
    pooled = fit_calibrator(p, y, random_state=random_state)
    spread = estimate_spread(pooled, p, y, segments, random_state)
    selection = {**(pooled.selection or {}), "segment_spread": spread.to_dict()}
    pooled = Calibrator(
        pooled.method, pooled.params, pooled.input_clip, selection=selection, band=pooled.band
    )
    return pooled, spread


def fit_segments(
    scores: ArrayLike,
    labels: ArrayLike,
    segments: ArrayLike,
    random_state: int | None = 0,
) -> dict[str, Calibrator]:
    """A calibrator for every segment, partially pooled toward one fitted on all of them.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Raw confidence scores in [0, 1].
    labels : array-like of shape (n_samples,)
        0/1 outcomes; both classes at least twice overall (a segment may hold one class).
    segments : array-like of shape (n_samples,)
        Each sample's segment name (not ``"_pooled"``).
    random_state : int or None, default=0
        Seeds the pooled fit's cross-validation.

    Returns
    -------
    dict of str to Calibrator
        ``"_pooled"`` (``fit_calibrator(method="auto")`` on everything) and one per segment
        (``fit_with_prior`` with the empirical-Bayes spread).

    Raises
    ------
    ValueError
        Bad scores or labels, mismatched lengths, or a segment named ``"_pooled"``.
    """
    p, y = validate_scores_labels(scores, labels, require_both_classes=True)
    assert y is not None
    names, codes = _segment_codes(segments, p.shape[0])
    pooled, spread = fit_pooled(p, y, np.asarray(names)[codes], random_state)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    result = {POOLED_SEGMENT: pooled}
    for i, name in enumerate(names):
        rows = order[bounds[i] : bounds[i + 1]]
        result[name] = fit_with_prior(p[rows], y[rows], pooled, spread)
    return result
