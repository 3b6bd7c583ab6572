"""The ``calibrator/v1`` artifact and its apply code: the one implementation, client and server.

The service imports this module for ``POST /v1/calibrate`` and for its own calibrators, so a
score calibrated here and the same score calibrated by the service agree to the last bit.
Only numpy is needed.

Formulas (``p`` clipped to ``input_clip`` first, ``logit(p) = ln p - ln(1 - p)``):

* ``identity``: p.
* ``platt`` {a, b}: sigmoid(a * logit(p) + b) (Platt 1999, on log-odds).
* ``beta`` {a, b, c}: sigmoid(a * ln p - b * ln(1 - p) + c) (Kull et al. 2017).
* ``isotonic`` {x, y}: linear interpolation of the raw score on (x, y), flat beyond the ends.
* ``histogram`` {edges, values}: the value of the bin holding the raw score (bins are closed on
  the left, the last one on both sides).

An optional ``band`` {level, x, low, high} is a pointwise interval: ``low`` and ``high`` are
interpolated like ``isotonic`` at the clipped score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

ARTIFACT_FORMAT = "calibrator/v1"
METHODS: tuple[str, ...] = ("identity", "platt", "beta", "isotonic", "histogram")
INPUT_CLIP: tuple[float, float] = (1e-12, 1.0 - 1e-12)

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------- inputs


def _as_1d_float(values: ArrayLike, name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def check_probabilities(values: ArrayLike, name: str = "scores") -> FloatArray:
    """Return ``values`` as a 1-D float64 array of finite numbers in [0, 1].

    Parameters
    ----------
    values : array-like of shape (n_samples,)
    name : str
        Used in error messages.

    Returns
    -------
    ndarray of shape (n_samples,), float64 (no copy when already float64).
    """
    arr = _as_1d_float(values, name)
    # min/max propagate NaN, so one pass of each catches every bad value; the
    # slower per-element search only runs when something is wrong.
    lo, hi = arr.min(), arr.max()
    if not (lo >= 0.0 and hi <= 1.0):
        nan = np.flatnonzero(np.isnan(arr))
        if nan.size:
            raise ValueError(f"{name} contain NaN at index {nan[0]}")
        inf = np.flatnonzero(np.isinf(arr))
        if inf.size:
            raise ValueError(f"{name} contain {arr[inf[0]].item()} at index {inf[0]}")
        bad = np.flatnonzero((arr < 0.0) | (arr > 1.0))
        raise ValueError(
            f"{name} must lie in [0, 1]; found {arr[bad[0]].item()!r} at index {bad[0]}"
        )
    return arr


# --------------------------------------------------------------------------- maps


def logit(p: FloatArray, clip: tuple[float, float]) -> FloatArray:
    """ln(p) - ln(1 - p) of ``p`` clipped to ``clip``, as a new array."""
    z = np.clip(p, clip[0], clip[1])
    out = np.log(z)
    np.negative(z, out=z)
    np.log1p(z, out=z)
    out -= z
    return out


def sigmoid_inplace(s: FloatArray) -> FloatArray:
    """1 / (1 + exp(-s)), overwriting ``s``."""
    # exp overflowing to inf for very negative s gives the correct limit 0.
    np.negative(s, out=s)
    with np.errstate(over="ignore"):
        np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)
    return s


def _apply_platt(p: FloatArray, params: Mapping[str, Any], clip: tuple[float, float]) -> FloatArray:
    s = logit(p, clip)
    s *= params["a"]
    s += params["b"]
    return sigmoid_inplace(s)


def _apply_beta(p: FloatArray, params: Mapping[str, Any], clip: tuple[float, float]) -> FloatArray:
    z = np.clip(p, clip[0], clip[1])
    s = np.log(z)
    s *= params["a"]
    np.negative(z, out=z)
    np.log1p(z, out=z)
    z *= params["b"]
    s -= z
    s += params["c"]
    return sigmoid_inplace(s)


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


def canonical_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
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


def check_clip(clip: Any) -> tuple[float, float]:
    """``input_clip`` as a pair ``0 <= lo < hi <= 1``."""
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"input_clip must be a pair of numbers, got {clip!r}") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"input_clip must satisfy 0 <= lo < hi <= 1, got {clip!r}")
    return lo, hi


def _prepared(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    # Arrays are built from the same Python floats the artifact stores, so a reloaded
    # calibrator computes bit-identical outputs.
    prepared: dict[str, Any] = dict(params)
    if method == "isotonic":
        prepared["_x"] = np.asarray(params["x"], dtype=np.float64)
        prepared["_y"] = np.asarray(params["y"], dtype=np.float64)
    elif method == "histogram":
        prepared["_inner"] = np.asarray(params["edges"][1:-1], dtype=np.float64)
        prepared["_values"] = np.asarray(params["values"], dtype=np.float64)
    return prepared


def apply_checked(
    method: str, params: Mapping[str, Any], p: FloatArray, clip: tuple[float, float] = INPUT_CLIP
) -> FloatArray:
    """Apply canonical ``params`` to scores already checked by ``check_probabilities``."""
    return _APPLY[method](p, _prepared(method, params), clip)


# ------------------------------------------------------------------ band


def check_band(band: Any) -> dict[str, Any]:
    """Validate an artifact's optional ``band`` {level, x, low, high}; plain floats out."""
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


def band_interval(
    band: Mapping[str, Any], scores: ArrayLike, input_clip: tuple[float, float] = INPUT_CLIP
) -> tuple[FloatArray, FloatArray]:
    """The pointwise interval ``(low, high)`` of an artifact's ``band`` at ``scores``.

    Each bound is ``np.interp`` of the score, clipped to ``input_clip``, on ``band["x"]``:
    linear between the points, flat beyond the ends.
    """
    p = np.clip(check_probabilities(scores, "scores"), input_clip[0], input_clip[1])
    x = np.asarray(band["x"], dtype=np.float64)
    low = np.interp(p, x, np.asarray(band["low"], dtype=np.float64))
    high = np.interp(p, x, np.asarray(band["high"], dtype=np.float64))
    return low, high


# ------------------------------------------------------------------ calibrator


class ArtifactCalibrator:
    """A monotone map from raw scores to calibrated probabilities, as an artifact describes it.

    Parameters
    ----------
    method : str
        One of ``METHODS``.
    params : mapping
        The method's parameters as in the ``calibrator/v1`` artifact.
    input_clip : pair of float, default=(1e-12, 1 - 1e-12)
        Scores are clipped into this range before any log-odds.
    band : mapping, optional
        A pointwise interval {level, x, low, high} (see ``band_interval``).

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
        band: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
        self.method = method
        self.params = canonical_params(method, params)
        self.input_clip = check_clip(input_clip)
        self.band = None if band is None else check_band(band)
        self._apply_params = _prepared(method, self.params)

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

    def predict_interval(self, scores: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """The artifact's pointwise band at ``scores``; ``ValueError`` when it carries none."""
        if self.band is None:
            raise ValueError("this calibrator's artifact carries no band")
        return band_interval(self.band, scores, self.input_clip)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r}, params={self.params!r})"


def check_artifact(artifact: Any) -> tuple[str, Mapping[str, Any], Any]:
    """``(method, params, input_clip)`` of a ``calibrator/v1`` artifact, or a ``ValueError``."""
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
    return method, artifact["params"], artifact.get("input_clip", INPUT_CLIP)


def load_artifact(artifact: Mapping[str, Any]) -> ArtifactCalibrator:
    """Rebuild a calibrator from its ``calibrator/v1`` artifact.

    Parameters
    ----------
    artifact : mapping
        At least ``format``, ``method`` and ``params``; ``input_clip`` defaults to
        (1e-12, 1 - 1e-12); ``band`` is optional. Other keys (segment, version, metrics, ...)
        are ignored.

    Raises
    ------
    ValueError
        Unknown format or method (named in the message), missing or invalid params.
    """
    method, params, clip = check_artifact(artifact)
    return ArtifactCalibrator(method, params, clip, band=artifact.get("band"))


def identity() -> ArtifactCalibrator:
    """The calibrator that returns scores unchanged (the fallback before any training)."""
    return ArtifactCalibrator("identity", {})
