"""The five calibration maps: fitting them, and the calibrator they persist as.

Applying a map (and the ``calibrator/v1`` artifact itself) is ``calibration_client.artifact``:
the analyzer's client owns that code and the service imports it, so both compute the same
numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from calibration_client.artifact import (
    ARTIFACT_FORMAT,
    INPUT_CLIP,
    METHODS,
    ArtifactCalibrator,
    FloatArray,
    apply_checked,
    band_interval,
    canonical_params,
    check_artifact,
    check_probabilities,
    logit,
)
from numpy.typing import ArrayLike
from scipy.optimize import isotonic_regression, minimize

from app.calibration.intervals import rescale_band

__all__ = [
    "ARTIFACT_FORMAT",
    "INPUT_CLIP",
    "METHODS",
    "Calibrator",
    "FloatArray",
    "apply_params",
    "fit_params",
    "identity_calibrator",
    "load_calibrator",
]

# Pseudo-counts at the base rate added to every isotonic block / histogram bin:
# a block of three negatives then predicts a small probability, not 0, so the
# log loss on new data stays finite without an arbitrary clip.
_PRIOR_STRENGTH = 2.0
# Rows per chunk when evaluating the logistic loss: bounds temporary memory on
# millions of samples at no measurable cost in speed.
_CHUNK = 1 << 17


class Calibrator(ArtifactCalibrator):
    """A fitted calibrator: the client's ``ArtifactCalibrator`` (same parameters, same
    ``predict``) that also knows how it was chosen and writes its artifact.

    Parameters
    ----------
    method, params, input_clip
        As for ``calibration_client.artifact.ArtifactCalibrator``.
    selection : dict, optional
        How ``fit_calibrator(method="auto")`` built the map (JSON-safe).
    band : mapping, optional
        A pointwise band ``{"level", "x", "low", "high"}`` around the map (see
        ``predict_interval``).
    """

    def __init__(
        self,
        method: str,
        params: Mapping[str, Any],
        input_clip: tuple[float, float] = INPUT_CLIP,
        selection: dict[str, Any] | None = None,
        band: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(method, params, input_clip, band=band)
        self.selection = selection
        self._bands: dict[float, dict[str, Any]] = {}

    def predict_interval(
        self, scores: ArrayLike, level: float = 0.9
    ) -> tuple[FloatArray, FloatArray]:
        """A pointwise band for the calibrated probability at ``scores``.

        At the stored band's level (0.9 from ``fit_calibrator``) this is the
        stored band, applied as the client applies it; at other levels the
        stored log-odds half-widths are rescaled by the ratio of normal quantiles.

        Parameters
        ----------
        scores : array-like of shape (n_samples,)
            Raw scores in [0, 1].
        level : float in (0, 1), default=0.9

        Returns
        -------
        low, high : ndarray of shape (n_samples,)
            ``0 <= low <= predict(scores) <= high <= 1``.

        Raises
        ------
        ValueError
            ``level`` outside (0, 1), bad scores, or a calibrator without a band
            (named-method fits, the identity, artifacts written without one).
        """
        level = _check_level(level)
        if self.band is None:
            raise ValueError(
                f"this {self.method} calibrator carries no band; "
                "fit it with method='auto' to get one"
            )
        p = check_probabilities(scores, "scores")
        band = self.band
        if level != band["level"]:
            if level not in self._bands:
                x = np.asarray(band["x"], dtype=np.float64)
                center = apply_checked(self.method, self.params, x, self.input_clip)
                ends = apply_checked(
                    self.method, self.params, np.array([0.0, 1.0]), self.input_clip
                )
                self._bands[level] = rescale_band(
                    band,
                    center,
                    level,
                    knots_shared=self._band_shares_knots(),
                    ends=(float(ends[0]), float(ends[1])),
                )
            band = self._bands[level]
        return band_interval(band, p, self.input_clip)

    def _band_shares_knots(self) -> bool:
        # An isotonic table whose knots inside the band's span are the band's x
        # is linear between them, so containment at the knots is containment.
        if self.method != "isotonic" or self.band is None:
            return False
        x = np.asarray(self.params["x"])
        bx = self.band["x"]
        inside = x[(x >= bx[0]) & (x <= bx[-1])]
        return inside.tolist() == bx

    def to_artifact(self) -> dict[str, Any]:
        """The portable, JSON-safe ``calibrator/v1`` form (no segment or version)."""
        artifact = {
            "format": ARTIFACT_FORMAT,
            "method": self.method,
            "params": {k: list(v) if isinstance(v, list) else v for k, v in self.params.items()},
            "input_clip": [self.input_clip[0], self.input_clip[1]],
        }
        if self.band is not None:
            artifact["band"] = {
                k: list(v) if isinstance(v, list) else v for k, v in self.band.items()
            }
        return artifact


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float | np.floating):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return float(level)


def load_calibrator(artifact: Mapping[str, Any]) -> Calibrator:
    """Rebuild a calibrator from its ``calibrator/v1`` artifact.

    Parameters
    ----------
    artifact : mapping
        At least ``format``, ``method`` and ``params``; ``input_clip`` defaults to
        (1e-12, 1 - 1e-12); ``band`` is optional. Other keys (segment, version,
        metrics, ...) are ignored.

    Returns
    -------
    Calibrator

    Raises
    ------
    ValueError
        Unknown format or method (named in the message), missing or invalid params.
    """
    method, params, clip = check_artifact(artifact)
    return Calibrator(method, params, clip, band=artifact.get("band"))


def identity_calibrator() -> Calibrator:
    """The calibrator that returns scores unchanged (the fallback before any training)."""
    return Calibrator("identity", {})


# --------------------------------------------------------------------- fitting


def _logistic_fit(features: FloatArray, y: FloatArray, w0: FloatArray, n_nonneg: int) -> FloatArray:
    """Minimise the logistic loss with Platt's smoothed targets over ``[features, 1] @ w``.

    The first ``n_nonneg`` weights are bounded below by 0 (monotonicity).
    """
    n, k = features.shape
    n_pos = float(y.sum())
    n_neg = n - n_pos
    t_pos, t_neg = (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0)
    # With two target values, t @ s = t_neg * sum(s) + (t_pos - t_neg) * (y @ s),
    # so no target array is ever built.
    col_sum = np.array([features[:, j].sum() for j in range(k)])
    col_y = np.array([np.einsum("i,i->", features[:, j], y) for j in range(k)])
    lin_t = np.append(
        t_neg * col_sum + (t_pos - t_neg) * col_y, t_neg * n + (t_pos - t_neg) * n_pos
    )

    def loss_grad(w: FloatArray) -> tuple[float, FloatArray]:
        total = 0.0
        grad = np.zeros(k + 1)
        for start in range(0, n, _CHUNK):
            # Column by column, with einsum rather than BLAS: a threaded BLAS on
            # these thin products is slower than one core, badly so under load.
            cols = [features[start : start + _CHUNK, j] for j in range(k)]
            s = np.multiply(cols[0], w[0])
            for j in range(1, k):
                s += w[j] * cols[j]
            s += w[k]
            total += float(np.logaddexp(0.0, s).sum())
            np.multiply(s, 0.5, out=s)
            np.tanh(s, out=s)
            s *= 0.5
            s += 0.5
            for j in range(k):
                grad[j] += np.einsum("i,i->", cols[j], s)
            grad[k] += s.sum()
        total -= float(lin_t @ w)
        grad -= lin_t
        return total / n, grad / n

    bounds = [(0.0, None)] * n_nonneg + [(None, None)] * (k + 1 - n_nonneg)
    res = minimize(
        loss_grad, w0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 200}
    )
    return np.asarray(res.x, dtype=np.float64)


def _fit_platt(p: FloatArray, y: FloatArray, clip: tuple[float, float] = INPUT_CLIP) -> dict:
    z = logit(p, clip)[:, None]
    a, b = _logistic_fit(z, y, np.array([1.0, 0.0]), n_nonneg=1)
    return {"a": float(a), "b": float(b)}


def _fit_beta(p: FloatArray, y: FloatArray, clip: tuple[float, float] = INPUT_CLIP) -> dict:
    # Column-major so each feature is filled in place without a clipped copy of p.
    features = np.empty((p.shape[0], 2), order="F")
    log_p, log_1mp = features[:, 0], features[:, 1]
    np.clip(p, clip[0], clip[1], out=log_p)
    np.negative(log_p, out=log_1mp)
    np.log1p(log_1mp, out=log_1mp)
    np.negative(log_1mp, out=log_1mp)
    np.log(log_p, out=log_p)
    a, b, c = _logistic_fit(features, y, np.array([1.0, 1.0, 0.0]), n_nonneg=2)
    return {"a": float(a), "b": float(b), "c": float(c)}


def _pooled(values: FloatArray, weights: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Weighted PAV; returns block values and block start indices (with the end index)."""
    res = isotonic_regression(values, weights=weights, increasing=True)
    blocks = np.asarray(res.blocks)
    return np.asarray(res.x)[blocks[:-1]], blocks


def _fit_isotonic(p: FloatArray, y: FloatArray, prior_strength: float = _PRIOR_STRENGTH) -> dict:
    order = np.argsort(p, kind="stable")
    ps = p[order]
    ys = y[order]
    del order
    n = ps.shape[0]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(ps[1:], ps[:-1], out=new[1:])
    # Groups of consecutive sorted samples that PAV never splits: tied scores
    # (they must share a value) and, without ties, runs of equal labels (equal
    # targets always end up with equal fitted values). Pooling them first is
    # exact and halves the memory of the fit on millions of samples.
    if new.all():
        del new
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(ys[1:], ys[:-1], out=change[1:])
        first = np.flatnonzero(change)
        del change
        counts = np.diff(np.append(first, n)).astype(np.float64)
        sums = ys[first] * counts
    else:
        first = np.flatnonzero(new)
        del new
        counts = np.diff(np.append(first, n)).astype(np.float64)
        sums = np.add.reduceat(ys, first)
    del ys
    # Pool violators on the raw means (this is exactly scikit-learn's fit), then
    # shrink each block toward the base rate and pool again: shrinkage weighs
    # blocks unequally and can itself create small violations.
    _, blocks = _pooled(sums / counts, counts)
    b_counts = np.add.reduceat(counts, blocks[:-1])
    b_sums = np.add.reduceat(sums, blocks[:-1])
    del counts, sums
    base_rate = float(y.mean())
    shrunk = (b_sums + prior_strength * base_rate) / (b_counts + prior_strength)
    values, blocks2 = _pooled(shrunk, b_counts + prior_strength)
    bounds = np.append(first, n)[blocks[blocks2]]
    lo, hi = ps[bounds[:-1]], ps[bounds[1:] - 1]
    x = np.column_stack([lo, hi]).ravel()
    v = np.repeat(values, 2)
    keep = np.ones(x.shape[0], dtype=bool)
    keep[1::2] = hi > lo
    x, v = x[keep], v[keep]
    # Drop interior points of flat runs, as scikit-learn does, to keep the table small.
    keep = np.ones(x.shape[0], dtype=bool)
    keep[1:-1] = ~((v[1:-1] == v[:-2]) & (v[1:-1] == v[2:]))
    return {"x": x[keep].tolist(), "y": v[keep].tolist()}


def histogram_bin_count(n: int) -> int:
    """Equal-mass bins for ``n`` samples: about 2·n^(1/3), 2 to 200, >= 10 samples per bin."""
    return int(max(1, min(200, round(2.0 * n ** (1.0 / 3.0)), n // 10)))


def _fit_histogram(p: FloatArray, y: FloatArray, prior_strength: float = _PRIOR_STRENGTH) -> dict:
    n = p.shape[0]
    n_bins = histogram_bin_count(n)
    ps = np.sort(p)
    # Each equal-mass cut moves to the nearest place where the sorted value
    # changes, and the edge sits halfway between the two values there: ties never
    # straddle an edge, and a heavily tied score still gets a bin of its own.
    changes = np.flatnonzero(ps[1:] != ps[:-1]) + 1
    if changes.size:
        cuts = (np.arange(1, n_bins) * n) // n_bins
        right = np.minimum(np.searchsorted(changes, cuts), changes.size - 1)
        left = np.maximum(right - 1, 0)
        nearer_left = np.abs(changes[left] - cuts) < np.abs(changes[right] - cuts)
        at = np.unique(np.where(nearer_left, changes[left], changes[right]))
        inner = np.unique(0.5 * (ps[at - 1] + ps[at]))
        inner = inner[(inner > 0.0) & (inner < 1.0)]
    else:
        inner = np.empty(0)
    idx = np.searchsorted(inner, p, side="right")
    counts = np.bincount(idx, minlength=inner.shape[0] + 1).astype(np.float64)
    sums = np.bincount(idx, weights=y, minlength=inner.shape[0] + 1)
    base_rate = float(y.mean())
    shrunk = (sums + prior_strength * base_rate) / (counts + prior_strength)
    res = isotonic_regression(shrunk, weights=counts + prior_strength, increasing=True)
    values = np.asarray(res.x)
    change = np.flatnonzero(values[1:] != values[:-1])
    edges = np.concatenate([[0.0], inner[change], [1.0]])
    return {"edges": edges.tolist(), "values": values[np.r_[0, change + 1]].tolist()}


_FIT: dict[str, Callable[[FloatArray, FloatArray], dict]] = {
    "identity": lambda p, y: {},
    "platt": _fit_platt,
    "beta": _fit_beta,
    "isotonic": _fit_isotonic,
    "histogram": _fit_histogram,
}


def fit_params(method: str, p: FloatArray, y: FloatArray) -> dict:
    """Fit ``method`` on checked arrays; returns its JSON-safe params."""
    return _FIT[method](p, y)


def apply_params(method: str, params: Mapping[str, Any], p: FloatArray) -> FloatArray:
    """Apply fitted params to checked scores (used inside CV loops)."""
    return apply_checked(method, canonical_params(method, params), p)
