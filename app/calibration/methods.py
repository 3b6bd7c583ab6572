"""The five calibration maps: fitting, applying, and the JSON artifact they persist as."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import isotonic_regression, minimize

from app.calibration.intervals import band_interval, rescale_band
from app.calibration.validation import INPUT_CLIP, check_probabilities

ARTIFACT_FORMAT = "calibrator/v1"
METHODS: tuple[str, ...] = ("identity", "platt", "beta", "isotonic", "histogram")

FloatArray = NDArray[np.float64]

# Pseudo-counts at the base rate added to every isotonic block / histogram bin:
# a block of three negatives then predicts a small probability, not 0, so the
# log loss on new data stays finite without an arbitrary clip.
_PRIOR_STRENGTH = 2.0
# Rows per chunk when evaluating the logistic loss: bounds temporary memory on
# millions of samples at no measurable cost in speed.
_CHUNK = 1 << 17


# --------------------------------------------------------------------------- maps


def _logit(p: FloatArray, clip: tuple[float, float]) -> FloatArray:
    z = np.clip(p, clip[0], clip[1])
    out = np.log(z)
    np.negative(z, out=z)
    np.log1p(z, out=z)
    out -= z
    return out


def _sigmoid_inplace(s: FloatArray) -> FloatArray:
    # 1 / (1 + exp(-s)); exp overflowing to inf for very negative s gives the
    # correct limit 0.
    np.negative(s, out=s)
    with np.errstate(over="ignore"):
        np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)
    return s


def _apply_platt(p: FloatArray, params: Mapping[str, Any], clip: tuple[float, float]) -> FloatArray:
    s = _logit(p, clip)
    s *= params["a"]
    s += params["b"]
    return _sigmoid_inplace(s)


def _apply_beta(p: FloatArray, params: Mapping[str, Any], clip: tuple[float, float]) -> FloatArray:
    z = np.clip(p, clip[0], clip[1])
    s = np.log(z)
    s *= params["a"]
    np.negative(z, out=z)
    np.log1p(z, out=z)
    z *= params["b"]
    s -= z
    s += params["c"]
    return _sigmoid_inplace(s)


def _apply_isotonic(
    p: FloatArray, params: Mapping[str, Any], clip: tuple[float, float]
) -> FloatArray:
    return np.interp(p, params["_x"], params["_y"])


def _apply_histogram(
    p: FloatArray, params: Mapping[str, Any], clip: tuple[float, float]
) -> FloatArray:
    return params["_values"][np.searchsorted(params["_inner"], p, side="right")]


def _apply_identity(
    p: FloatArray, params: Mapping[str, Any], clip: tuple[float, float]
) -> FloatArray:
    return p.copy()


_APPLY: dict[str, Callable[[FloatArray, Mapping[str, Any], tuple[float, float]], FloatArray]] = {
    "identity": _apply_identity,
    "platt": _apply_platt,
    "beta": _apply_beta,
    "isotonic": _apply_isotonic,
    "histogram": _apply_histogram,
}


# ------------------------------------------------------------------ parameters


def _finite(params: Mapping[str, Any], key: str, method: str, *, nonneg: bool = False) -> float:
    if key not in params:
        raise ValueError(f"{method} params missing {key!r}")
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{method} param {key!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{method} param {key!r} must be finite, got {value!r}")
    if nonneg and value < 0.0:
        raise ValueError(f"{method} param {key!r} must be >= 0, got {value!r}")
    return value


def _float_list(params: Mapping[str, Any], key: str, method: str) -> list[float]:
    if key not in params:
        raise ValueError(f"{method} params missing {key!r}")
    value = params[key]
    if isinstance(value, str | bytes | Mapping):
        raise ValueError(f"{method} param {key!r} must be a list of numbers")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{method} param {key!r} must be a list of numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{method} param {key!r} must be a non-empty list of numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{method} param {key!r} must contain only finite numbers")
    return [float(v) for v in arr]


def _steps_down(values: list[float], *, strict: bool) -> bool:
    steps = np.diff(values)
    return bool(np.any(steps <= 0.0) if strict else np.any(steps < 0.0))


def _canonical_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``params`` for ``method`` and return them as plain Python floats."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be an object, got {type(params).__name__}")
    if method == "identity":
        return {}
    if method == "platt":
        return {"a": _finite(params, "a", method, nonneg=True), "b": _finite(params, "b", method)}
    if method == "beta":
        return {
            "a": _finite(params, "a", method, nonneg=True),
            "b": _finite(params, "b", method, nonneg=True),
            "c": _finite(params, "c", method),
        }
    if method == "isotonic":
        x, y = _float_list(params, "x", method), _float_list(params, "y", method)
        if len(x) != len(y):
            raise ValueError(f"isotonic params x and y differ in length: {len(x)} != {len(y)}")
        if _steps_down(x, strict=False):
            raise ValueError("isotonic param 'x' must be non-decreasing")
        if _steps_down(y, strict=False):
            raise ValueError("isotonic param 'y' must be non-decreasing")
        if y[0] < 0.0 or y[-1] > 1.0:
            raise ValueError("isotonic param 'y' must lie in [0, 1]")
        return {"x": x, "y": y}
    if method == "histogram":
        edges, values = _float_list(params, "edges", method), _float_list(params, "values", method)
        if len(edges) != len(values) + 1:
            raise ValueError(
                f"histogram needs len(edges) == len(values) + 1, got {len(edges)} and {len(values)}"
            )
        if _steps_down(edges, strict=True):
            raise ValueError("histogram param 'edges' must be strictly increasing")
        if _steps_down(values, strict=False):
            raise ValueError("histogram param 'values' must be non-decreasing")
        if values[0] < 0.0 or values[-1] > 1.0:
            raise ValueError("histogram param 'values' must lie in [0, 1]")
        return {"edges": edges, "values": values}
    raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")


def _canonical_band(band: Any) -> dict[str, Any] | None:
    """Validate an artifact's optional ``band`` and return it with plain Python floats."""
    if band is None:
        return None
    if not isinstance(band, Mapping):
        raise ValueError(f"band must be an object, got {type(band).__name__}")
    level = _finite(band, "level", "band")
    if not 0.0 < level < 1.0:
        raise ValueError(f"band param 'level' must lie in (0, 1), got {level!r}")
    x, low, high = (_float_list(band, key, "band") for key in ("x", "low", "high"))
    if not len(x) == len(low) == len(high):
        raise ValueError(
            f"band x, low and high differ in length: {len(x)}, {len(low)}, {len(high)}"
        )
    if _steps_down(x, strict=False):
        raise ValueError("band param 'x' must be non-decreasing")
    lo, hi = np.asarray(low), np.asarray(high)
    if np.any(lo > hi) or lo.min() < 0.0 or hi.max() > 1.0:
        raise ValueError("band needs 0 <= low <= high <= 1 at every x")
    return {"level": level, "x": x, "low": low, "high": high}


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float | np.floating):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return float(level)


def _check_clip(clip: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"input_clip must be a pair of numbers, got {clip!r}") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"input_clip must satisfy 0 <= lo < hi <= 1, got {clip!r}")
    return lo, hi


class Calibrator:
    """A fitted, monotone map from raw scores to calibrated probabilities.

    Parameters
    ----------
    method : str
        One of ``METHODS``.
    params : mapping
        The method's parameters as in the ``calibrator/v1`` artifact.
    input_clip : pair of float, default=(1e-12, 1 - 1e-12)
        Scores are clipped into this range before any log-odds.
    selection : dict, optional
        How ``fit_calibrator(method="auto")`` built the map (JSON-safe).
    band : mapping, optional
        A pointwise band ``{"level", "x", "low", "high"}`` around the map (see
        ``predict_interval``).

    Raises
    ------
    ValueError
        Unknown method, missing or invalid parameters.
    """

    def __init__(
        self,
        method: str,
        params: Mapping[str, Any],
        input_clip: tuple[float, float] = INPUT_CLIP,
        selection: dict[str, Any] | None = None,
        band: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
        self.method = method
        self.params = _canonical_params(method, params)
        self.input_clip = _check_clip(input_clip)
        self.selection = selection
        self.band = _canonical_band(band)
        self._bands: dict[float, dict[str, Any]] = {}
        # Arrays are built from the same Python floats the artifact stores, so a
        # reloaded calibrator computes bit-identical outputs.
        self._apply_params: dict[str, Any] = dict(self.params)
        if method == "isotonic":
            self._apply_params["_x"] = np.asarray(self.params["x"], dtype=np.float64)
            self._apply_params["_y"] = np.asarray(self.params["y"], dtype=np.float64)
        elif method == "histogram":
            self._apply_params["_inner"] = np.asarray(self.params["edges"][1:-1], dtype=np.float64)
            self._apply_params["_values"] = np.asarray(self.params["values"], dtype=np.float64)

    def predict(self, scores: ArrayLike) -> FloatArray:
        """Calibrated probabilities for ``scores``.

        Parameters
        ----------
        scores : array-like of shape (n_samples,)
            Raw scores in [0, 1].

        Returns
        -------
        ndarray of shape (n_samples,), float64 in [0, 1], non-decreasing in the score.
        """
        p = check_probabilities(scores, "scores")
        return _APPLY[self.method](p, self._apply_params, self.input_clip)

    def predict_interval(
        self, scores: ArrayLike, level: float = 0.9
    ) -> tuple[FloatArray, FloatArray]:
        """A pointwise band for the calibrated probability at ``scores``.

        At the stored band's level (0.9 from ``fit_calibrator``) this is the
        stored table; at other levels the stored log-odds half-widths are
        rescaled by the ratio of normal quantiles.

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
                center = _APPLY[self.method](x, self._apply_params, self.input_clip)
                ends = _APPLY[self.method](
                    np.array([0.0, 1.0]), self._apply_params, self.input_clip
                )
                self._bands[level] = rescale_band(
                    band,
                    center,
                    level,
                    knots_shared=self._band_shares_knots(),
                    ends=(float(ends[0]), float(ends[1])),
                )
            band = self._bands[level]
        return band_interval(band, self.input_clip, p)

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

    def __repr__(self) -> str:
        return f"Calibrator(method={self.method!r}, params={self.params!r})"


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
    if not isinstance(artifact, Mapping):
        raise ValueError(f"artifact must be an object, got {type(artifact).__name__}")
    fmt = artifact.get("format")
    if fmt != ARTIFACT_FORMAT:
        raise ValueError(f"unknown artifact format {fmt!r}; expected {ARTIFACT_FORMAT!r}")
    method = artifact.get("method")
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    if "params" not in artifact:
        raise ValueError("artifact has no 'params'")
    return Calibrator(
        method,
        artifact["params"],
        artifact.get("input_clip", INPUT_CLIP),
        band=artifact.get("band"),
    )


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
    z = _logit(p, clip)[:, None]
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
    cal = Calibrator(method, params)
    return _APPLY[method](p, cal._apply_params, cal.input_clip)
