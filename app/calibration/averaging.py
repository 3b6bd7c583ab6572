"""Cross-validated stacking of candidate calibration maps, tabulated as one monotone table.

The candidates (Platt, beta and a monotone spline, each shrunk toward the
reference map by evidence, Platt also unshrunk and with one prior precision per
weight, and shrunk isotonic regression) are combined by a
linear pool whose weights on the simplex maximise the out-of-fold log score:
stacking of predictive distributions (Breiman 1996, "Stacked regressions",
Machine Learning 24; Yao, Vehtari, Simpson & Gelman 2018, "Using stacking to
average Bayesian predictive distributions", Bayesian Analysis 13(3)). A convex
combination of non-decreasing maps is non-decreasing, so the average stays monotone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from app.calibration.methods import FloatArray, _fit_isotonic
from app.calibration.priors import (
    LogisticMap,
    Reference,
    fit_beta_prior,
    fit_platt_ard,
    fit_platt_flat,
    fit_platt_prior,
    fit_spline_prior,
    logit,
    sigmoid,
)
from app.calibration.validation import INPUT_CLIP

_LOSS_CLIP = 1e-15
STACK_MAX_ITER = 200
STACK_TOL = 1e-12
# The table: an even grid in log-odds over the whole input range (saturated
# scores keep their information) plus data quantiles and isotonic knots.
LOGIT_GRID_POINTS = 400
QUANTILE_GRID_POINTS = 257


class IsotonicMap:
    """Shrunk isotonic regression (``methods._fit_isotonic``) as a candidate."""

    name = "isotonic"

    def __init__(self, p: FloatArray, y: FloatArray) -> None:
        params = _fit_isotonic(p, y)
        self.x = np.asarray(params["x"])
        self.y = np.asarray(params["y"])

    def predict(self, p: FloatArray) -> FloatArray:
        return np.interp(p, self.x, self.y)


Candidate = Callable[..., object]


def _fit_isotonic_candidate(
    p: FloatArray,
    y: FloatArray,
    reference: Reference,
    rng: np.random.Generator,
    lam: FloatArray | None = None,
) -> IsotonicMap:
    return IsotonicMap(p, y)


CANDIDATES: dict[str, Candidate] = {
    "platt": fit_platt_prior,
    "platt_flat": fit_platt_flat,
    "platt_ard": fit_platt_ard,
    "beta": fit_beta_prior,
    "spline": fit_spline_prior,
    "isotonic": _fit_isotonic_candidate,
}


def stacking_weights(
    oof: FloatArray, y: FloatArray, row_weights: FloatArray | None = None
) -> FloatArray:
    """Simplex weights maximising ``sum_i log sum_m w_m P_m(y_i)`` (the out-of-fold log score).

    The objective is concave in the weights; SLSQP solves the few-weight
    problem with its equality and bound constraints directly.

    Parameters
    ----------
    oof : ndarray of shape (n_samples, n_candidates)
        Out-of-fold probabilities of the positive class.
    y : ndarray of shape (n_samples,)
    """
    q = np.clip(oof, _LOSS_CLIP, 1.0 - _LOSS_CLIP)
    lik = np.where(y[:, None] == 1.0, q, 1.0 - q)
    n, m = lik.shape
    rw = np.ones(n) if row_weights is None else row_weights
    total = rw.sum()

    def loss_grad(w: FloatArray) -> tuple[float, FloatArray]:
        # einsum, not BLAS: threaded BLAS on thin products is slow under load.
        mix = np.maximum(np.einsum("ij,j->i", lik, w), _LOSS_CLIP)
        loss = -float(np.einsum("i,i->", rw, np.log(mix))) / total
        return loss, -np.einsum("i,ij->j", rw / mix, lik) / total

    res = minimize(
        loss_grad,
        np.full(m, 1.0 / m),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        options={"ftol": STACK_TOL, "maxiter": STACK_MAX_ITER},
    )
    w = np.clip(np.asarray(res.x, dtype=np.float64), 0.0, None)
    # Weights SLSQP leaves at a few ulps carry no information.
    w[w < 1e-9] = 0.0
    return w / w.sum()


def bagged_stacking_weights(
    oof: FloatArray, y: FloatArray, rng: np.random.Generator, n_bags: int
) -> FloatArray:
    """Stacking weights averaged over Bayesian-bootstrap reweightings of the folds' rows.

    A single stacking solution jumps between corners of the simplex when
    candidates are close; averaging over Dirichlet(1, ..., 1) row weights (Rubin
    1981; the "Bayesian bootstrap" of Yao et al. 2018's pseudo-BMA+) keeps the
    weight of a candidate in proportion to how reliably it helps.
    """
    if n_bags <= 0:
        return stacking_weights(oof, y)
    total = np.zeros(oof.shape[1])
    for _ in range(n_bags):
        total += stacking_weights(oof, y, rng.dirichlet(np.ones(oof.shape[0])) * oof.shape[0])
    return total / n_bags


def table_grid(p: FloatArray, knots: list[FloatArray]) -> FloatArray:
    """The x of the stored table: logit-even over the input clip, its ends exactly,
    data quantiles, isotonic knots, and 0 and 1.

    The table covers all of [0, 1]: isotonic regression may give scores beyond the
    input clip (exactly 0 or 1, or 1 - 1e-14 from a naive-Bayes analyzer) values
    of their own, which a table ending at the clip would flatten away.
    """
    lo, hi = INPUT_CLIP
    z = np.linspace(logit(np.array(lo)), logit(np.array(hi)), LOGIT_GRID_POINTS)
    parts = [
        np.clip(sigmoid(z), lo, hi),
        [0.0, lo, hi, 1.0],
        np.quantile(p, np.linspace(0.0, 1.0, QUANTILE_GRID_POINTS)),
        *knots,
    ]
    return np.unique(np.concatenate(parts))


@dataclass(frozen=True)
class Average:
    """A fitted linear pool of candidate maps."""

    maps: list
    weights: FloatArray

    def predict(self, p: FloatArray) -> FloatArray:
        out = np.zeros(p.shape[0])
        for fitted, w in zip(self.maps, self.weights, strict=True):
            if w > 0.0:
                out += w * fitted.predict(p)
        return np.clip(out, 0.0, 1.0)

    def posterior_logit_sd(self, p: FloatArray) -> FloatArray:
        """Standard deviation of the average's log-odds from its smooth parts' Laplace posteriors.

        By the delta method, taking the parts as perfectly correlated (an upper
        bound); the isotonic part adds nothing here (the bootstrap carries it).
        """
        q = self.predict(p)
        spread = np.zeros(p.shape[0])
        for fitted, w in zip(self.maps, self.weights, strict=True):
            if isinstance(fitted, LogisticMap):
                qm = fitted.predict(p)
                spread += w * qm * (1.0 - qm) * fitted.logit_sd(p)
        return spread / np.maximum(q * (1.0 - q), 1e-300)

    def knots(self) -> list[FloatArray]:
        return [m.x for m in self.maps if isinstance(m, IsotonicMap)]


def tabulate(average: Average, p: FloatArray) -> dict[str, list[float]]:
    """The average as isotonic-table params, exact at every grid point."""
    grid = table_grid(p, average.knots())
    values = average.predict(grid)
    # Rounding in the pooled maps must not leave a downward step of one ulp.
    values = np.clip(np.maximum.accumulate(values), 0.0, 1.0)
    keep = np.ones(grid.shape[0], dtype=bool)
    keep[1:-1] = ~((values[1:-1] == values[:-2]) & (values[1:-1] == values[2:]))
    # The input clip's ends stay knots: the band's end knots sit there.
    keep |= (grid == INPUT_CLIP[0]) | (grid == INPUT_CLIP[1])
    return {"x": grid[keep].tolist(), "y": values[keep].tolist()}
