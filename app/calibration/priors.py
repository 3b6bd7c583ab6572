"""Posterior-mode logistic recalibration around a reference map, with the prior learned by evidence.

Every parametric candidate of ``fit_calibrator(method="auto")`` recalibrates a
reference probability ``u = prior(p)`` (``u = p`` without a prior):

- Platt: ``logit q = a·logit(u) + c``, centred on ``a = 1, c = 0``, once with one prior
  precision for both weights and once with one per weight (automatic relevance determination);
- beta (Kull, Silva Filho & Flach 2017): ``logit q = a·ln u - b·ln(1 - u) + c``,
  centred on ``a = b = 1, c = 0``;
- a monotone spline: ``logit q = a·logit(u) + c + Σ_j w_j I_j(logit u)`` with
  I-spline bases (Ramsay 1988) and ``w ≥ 0``, centred on the reference with ``w = 0``;
- and Platt by plain maximum likelihood, which the stack weighs against the shrunk one.

Each centre reproduces the reference map exactly, so the Gaussian prior on the
weights shrinks the fit toward the prior calibrator. The prior precisions are
not constants: they maximise the Laplace approximation of the marginal
likelihood with MacKay's fixed-point updates (MacKay 1992, "The evidence
framework applied to classification networks", Neural Computation 4(5)),
``gamma_g = sum_{i in g} (1 - lambda_g S_ii)``, ``lambda_g = gamma_g / |w_g - w0_g|^2``
(S the Laplace posterior covariance). With few labels the evidence prefers a
strong prior; as labels accumulate the likelihood dominates and the fit fades
to maximum likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import BSpline

from app.calibration.validation import INPUT_CLIP

FloatArray = np.ndarray

# The evidence is maximised on at most this many samples: beyond it the prior's
# weight (a few units of precision against n log-likelihood terms) is negligible.
EB_MAX_SAMPLES = 5_000
EB_MAX_ITER = 40
EB_RTOL = 1e-3
# Precision bounds: 1e-6 is effectively flat; 1e6 pins the weights to the centre.
LAMBDA_MIN, LAMBDA_MAX = 1e-6, 1e6
NEWTON_MAX_ITER = 100
NEWTON_TOL = 1e-10
SPLINE_DEGREE = 2
SPLINE_MAX_INTERIOR_KNOTS = 6


def logit(p: FloatArray, clip: tuple[float, float] = INPUT_CLIP) -> FloatArray:
    """Log-odds of ``p`` clipped into ``clip`` (a new array)."""
    z = np.clip(p, clip[0], clip[1])
    return np.log(z) - np.log1p(-z)


def sigmoid(s: FloatArray) -> FloatArray:
    """Logistic function, exact at large |s| (a new array)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(s, dtype=np.float64)))


def _linear(x: FloatArray, w: FloatArray) -> FloatArray:
    # Column by column rather than a BLAS matrix-vector product: threaded BLAS
    # on these thin products is slower than one core, badly so under load.
    s = x[:, 0] * w[0]
    for j in range(1, x.shape[1]):
        s += x[:, j] * w[j]
    return s


def _objective(
    x: FloatArray, y: FloatArray, w: FloatArray, prior_mean: FloatArray, precision: FloatArray
) -> float:
    s = _linear(x, w)
    d = w - prior_mean
    return float(np.logaddexp(0.0, s).sum() - y @ s + 0.5 * precision @ (d * d))


def _gram(x: FloatArray, v: FloatArray) -> FloatArray:
    """``x.T @ diag(v) @ x`` without BLAS (see ``_linear``)."""
    return np.einsum("ij,ik,i->jk", x, x, v)


def map_logistic(
    features: FloatArray,
    y: FloatArray,
    w_start: FloatArray,
    n_nonneg: int,
    prior_mean: FloatArray,
    precision: FloatArray,
) -> FloatArray:
    """Posterior mode of ``sigmoid([features, 1] @ w)`` under ``N(prior_mean, 1/precision)``.

    Projected Newton with an active set for the bounds (Bertsekas 1982): the
    objective is smooth and strictly convex in at most ten weights, so a few
    exact Newton steps beat a quasi-Newton solver by orders of magnitude.

    Parameters
    ----------
    features : ndarray of shape (n_samples, k)
    y : ndarray of shape (n_samples,), 0/1 floats
    w_start : ndarray of shape (k + 1,), the starting point (intercept last)
    n_nonneg : int
        The first ``n_nonneg`` weights are bounded below by 0 (monotonicity).
    prior_mean, precision : ndarray of shape (k + 1,)

    Returns
    -------
    ndarray of shape (k + 1,)
    """
    n, k = features.shape
    x = np.asfortranarray(np.column_stack([features, np.ones(n)]))
    bounded = np.zeros(k + 1, dtype=bool)
    bounded[:n_nonneg] = True
    w = np.where(bounded, np.maximum(w_start, 0.0), w_start)
    ridge = np.diag(precision + 1e-10)
    f = _objective(x, y, w, prior_mean, precision)
    for _ in range(NEWTON_MAX_ITER):
        q = sigmoid(_linear(x, w))
        grad = np.einsum("ij,i->j", x, q - y) + precision * (w - prior_mean)
        hess = _gram(x, q * (1.0 - q)) + ridge
        # Weights at their bound whose gradient pushes outward stay fixed.
        free = ~(bounded & (w <= 0.0) & (grad > 0.0))
        step = np.zeros(k + 1)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        t = 1.0
        while True:
            trial = w - t * step
            trial[bounded] = np.maximum(trial[bounded], 0.0)
            f_trial = _objective(x, y, trial, prior_mean, precision)
            if f_trial <= f - 1e-4 * float(grad @ (w - trial)) or t < 1e-10:
                break
            t *= 0.5
        moved = float(np.max(np.abs(trial - w)))
        w, f_old, f = trial, f, f_trial
        if moved < NEWTON_TOL or f_old - f < NEWTON_TOL * max(1.0, abs(f)) * 1e-3:
            break
    return w


def _hessian(features: FloatArray, w: FloatArray) -> FloatArray:
    """Hessian of the negative log-likelihood at ``w`` (intercept last)."""
    x = np.asfortranarray(np.column_stack([features, np.ones(features.shape[0])]))
    q = sigmoid(_linear(x, w))
    return _gram(x, q * (1.0 - q))


@dataclass(frozen=True)
class EvidenceFit:
    """A posterior-mode fit and its empirical-Bayes prior."""

    weights: FloatArray  # shape (k + 1,), intercept last
    lam: FloatArray  # one learned precision per group of weights
    covariance: FloatArray  # Laplace posterior covariance at the mode, shape (k + 1, k + 1)


def evidence_fit(
    features: FloatArray,
    y: FloatArray,
    prior_mean: FloatArray,
    groups: FloatArray,
    n_nonneg: int,
    rng: np.random.Generator,
    lam: FloatArray | None = None,
) -> EvidenceFit:
    """Posterior mode with one prior precision per group, each maximising the evidence.

    Parameters
    ----------
    features : ndarray of shape (n_samples, k)
    y : ndarray of shape (n_samples,)
    prior_mean : ndarray of shape (k + 1,)
    groups : int ndarray of shape (k + 1,)
        Weights sharing a precision share a group number (0, 1, ...).
    n_nonneg : int
    rng : numpy Generator
        Draws the subsample the evidence is maximised on above ``EB_MAX_SAMPLES``.
    lam : ndarray of shape (n_groups,), optional
        Use these group precisions instead of learning them (inside
        cross-validation, where those learned on all data are reused).
    """
    if lam is not None:
        precision = lam[groups]
        w = map_logistic(features, y, prior_mean, n_nonneg, prior_mean, precision)
        cov = np.linalg.inv(_hessian(features, w) + np.diag(precision))
        return EvidenceFit(weights=w, lam=lam, covariance=cov)
    n = features.shape[0]
    if n > EB_MAX_SAMPLES:
        sub = np.sort(rng.choice(n, size=EB_MAX_SAMPLES, replace=False))
        f_eb, y_eb = features[sub], y[sub]
    else:
        f_eb, y_eb = features, y
    n_groups = int(groups.max()) + 1
    lam = np.ones(n_groups)
    w = prior_mean.copy()
    for _ in range(EB_MAX_ITER):
        precision = lam[groups]
        w = map_logistic(f_eb, y_eb, w, n_nonneg, prior_mean, precision)
        cov = np.linalg.inv(_hessian(f_eb, w) + np.diag(precision))
        new = lam.copy()
        for g in range(n_groups):
            members = groups == g
            gamma = float(np.sum(1.0 - lam[g] * np.diag(cov)[members]))
            dist = float(np.sum((w[members] - prior_mean[members]) ** 2))
            new[g] = np.clip(max(gamma, 1e-12) / max(dist, 1e-300), LAMBDA_MIN, LAMBDA_MAX)
        done = np.all(np.abs(np.log(new) - np.log(lam)) < EB_RTOL)
        lam = new
        if done:
            break
    precision = lam[groups]
    if f_eb.shape[0] != n:
        w = map_logistic(features, y, w, n_nonneg, prior_mean, precision)
    cov = np.linalg.inv(_hessian(f_eb, w) * (n / f_eb.shape[0]) + np.diag(precision))
    return EvidenceFit(weights=w, lam=lam, covariance=cov)


# ------------------------------------------------------------------ candidates


Reference = Callable[[FloatArray], FloatArray]


def saturation_clip(u: FloatArray) -> tuple[float, float]:
    """Where the reference's exact 0s and 1s sit on the log-odds scale of the parametric maps.

    A score of exactly 0 or 1 is a point mass of a finite-resolution analyzer (a random
    forest's vote fraction, a rounded score), not infinite confidence: taken at the
    input clip its log-odds are +-27.6, and a slope fitted through those few extreme
    points flattens the map everywhere else (or, held steep, predicts 1e-6 for a
    finding the forest was merely unanimous about). They are read as lying half a
    resolution step beyond the most extreme value resolved below 1 (above 0), the
    continuity correction of the empirical logit ``log((k + 1/2) / (m - k + 1/2))`` of a
    fraction ``k/m`` (Haldane 1955; Cox & Snell 1989, "Analysis of Binary Data", 2nd
    ed., section 2.1.6): for 100 trees a unanimous vote is 0.995, not 1 - 1e-12.

    Parameters
    ----------
    u : ndarray of shape (n_samples,)
        The reference probabilities of the training scores.

    Returns
    -------
    (low, high) : the clip to apply to the reference; ``INPUT_CLIP`` on a side without
        a point mass at 0 (or 1), or when no score lies strictly inside (0, 1).
    """
    lo, hi = INPUT_CLIP
    inside = u[(u > 0.0) & (u < 1.0)]
    if inside.size == 0:
        return lo, hi
    if np.any(u <= 0.0):
        lo = max(lo, 0.5 * float(inside.min()))
    if np.any(u >= 1.0):
        hi = min(hi, 1.0 - 0.5 * (1.0 - float(inside.max())))
    return lo, hi


def _platt_features(u: FloatArray) -> FloatArray:
    return logit(u)[:, None]


def _beta_features(u: FloatArray) -> FloatArray:
    z = np.clip(u, INPUT_CLIP[0], INPUT_CLIP[1])
    return np.column_stack([np.log(z), -np.log1p(-z)])


@dataclass(frozen=True)
class LogisticMap:
    """``q = sigmoid(features(reference(p)) @ w)``: a fitted parametric candidate."""

    name: str
    reference: Reference
    featurize: Callable[[FloatArray], FloatArray]
    fit: EvidenceFit

    def predict(self, p: FloatArray) -> FloatArray:
        f = self.featurize(self.reference(p))
        w = self.fit.weights
        return sigmoid(f @ w[:-1] + w[-1])

    def logit_sd(self, p: FloatArray) -> FloatArray:
        """Laplace-posterior standard deviation of the map's log-odds at ``p``."""
        f = self.featurize(self.reference(p))
        f = np.column_stack([f, np.ones(f.shape[0])])
        var = np.einsum("ij,jk,ik->i", f, self.fit.covariance, f)
        return np.sqrt(np.maximum(var, 0.0))


def fit_platt_prior(
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lam: FloatArray | None = None,
) -> LogisticMap:
    """Platt on the reference's log-odds, shrunk toward the reference by evidence."""
    return _fit_platt("platt", (0, 0), p, y, reference, rng, lam)


def fit_platt_flat(
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lam: FloatArray | None = None,
) -> LogisticMap:
    """Platt on the reference's log-odds by maximum likelihood (a flat prior).

    With two weights, the evidence estimates the prior's strength from just
    two numbers and can shrink too hard by chance; the stack weighs this
    unshrunk fit against the shrunk one, so the data decide how far to trust the prior.
    """
    return _fit_platt("platt_flat", (0, 0), p, y, reference, rng, np.array([LAMBDA_MIN]))


def fit_platt_ard(
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lam: FloatArray | None = None,
) -> LogisticMap:
    """Platt on the reference's log-odds with one prior precision per weight, each by evidence.

    Automatic relevance determination (MacKay 1994, "Bayesian non-linear modelling for
    the prediction competition", ASHRAE Transactions 100(2); Tipping 2001, "Sparse Bayesian
    learning and the relevance vector machine", JMLR 1): a slope and an intercept shrunk
    with a shared precision are shrunk as much as the one of them farthest from the
    reference allows. Apart, the evidence can pin the intercept to the reference's (the
    one-parameter map ``logit q = a·logit(u)``, temperature scaling of Guo et al. 2017,
    "On calibration of modern neural networks", ICML) while the slope moves freely, or
    the reverse, and frees both when the labels need them.
    """
    return _fit_platt("platt_ard", (0, 1), p, y, reference, rng, lam)


def _fit_platt(
    name: str,
    groups: tuple[int, int],
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lam: FloatArray | None,
) -> LogisticMap:
    """Platt's (slope, intercept), centred on the reference (1, 0), with the prior precision
    groups ``groups`` (``(0, 0)``: one shared; ``(0, 1)``: one each)."""
    f = _platt_features(reference(p))
    fit = evidence_fit(f, y, np.array([1.0, 0.0]), np.array(groups), 1, rng, lam)
    return LogisticMap(name, reference, _platt_features, fit)


def fit_beta_prior(
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lam: FloatArray | None = None,
) -> LogisticMap:
    """Beta calibration of the reference, shrunk toward the reference by evidence."""
    f = _beta_features(reference(p))
    fit = evidence_fit(f, y, np.array([1.0, 1.0, 0.0]), np.array([0, 0, 0]), 2, rng, lam)
    return LogisticMap("beta", reference, _beta_features, fit)


class _ISplineBasis:
    """Monotone I-spline basis of the reference log-odds (tail sums of B-splines).

    The tail sum ``Σ_{l≥j} B_l`` of degree-d B-splines has derivative
    ``d·B_{j,d-1}/(t_{j+d} - t_j) ≥ 0`` (de Boor), so non-negative weights give a
    non-decreasing map; beyond the boundary knots the bases are constant and
    the linear term carries the tails (saturated scores keep their slope).
    """

    def __init__(self, z: FloatArray, n_interior: int) -> None:
        knots = np.unique(np.quantile(z, np.linspace(0.0, 1.0, n_interior + 2)))
        self.n_basis = 0
        if knots.shape[0] < 3:
            return
        d = SPLINE_DEGREE
        self._lo, self._hi = float(knots[0]), float(knots[-1])
        # Clamped knot vector: the boundary knots repeated to full multiplicity.
        self._t = np.concatenate([[self._lo] * d, knots, [self._hi] * d])
        self.n_basis = self._t.shape[0] - d - 2

    def __call__(self, z: FloatArray) -> FloatArray:
        # Clipping to the boundary knots holds every basis constant beyond them.
        zc = np.clip(z, self._lo, self._hi)
        b = BSpline.design_matrix(zc, self._t, SPLINE_DEGREE).toarray()
        # Reverse cumulative sums; the first (all ones inside the knots) is dropped.
        tails = np.cumsum(b[:, ::-1], axis=1)[:, ::-1]
        return tails[:, 1:]


def fit_spline_prior(
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lam: FloatArray | None = None,
) -> LogisticMap | None:
    """A monotone spline on the reference's log-odds, shrunk toward the reference by evidence.

    Returns None when the scores take too few distinct values for a spline.
    """
    z = logit(reference(p))
    n_pos = float(y.sum())
    minority = min(n_pos, y.shape[0] - n_pos)
    # About one knot per 20 minority samples: more bends than the labels can
    # support only add variance the prior then has to remove.
    n_interior = int(min(SPLINE_MAX_INTERIOR_KNOTS, max(1, minority // 20)))
    basis = _ISplineBasis(z, n_interior)
    if basis.n_basis < 1:
        return None

    def featurize(u: FloatArray) -> FloatArray:
        zu = logit(u)
        return np.column_stack([zu, basis(zu)])

    f = np.column_stack([z, basis(z)])
    k = f.shape[1]
    # Order: slope, spline weights (all >= 0), intercept.
    prior_mean = np.zeros(k + 1)
    prior_mean[0] = 1.0
    groups = np.ones(k + 1, dtype=np.int64)
    groups[0] = groups[k] = 0
    fit = evidence_fit(f, y, prior_mean, groups, k, rng, lam)
    return LogisticMap("spline", reference, featurize, fit)
