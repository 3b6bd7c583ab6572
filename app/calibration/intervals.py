"""Pointwise uncertainty bands for a calibration map: bootstrap at fit time, table lookup after.

A band is a small table ``{"level", "x", "low", "high"}``; applying it is
``np.interp`` of the input-clipped raw score on ``x`` for ``low`` and for
``high``, flat beyond the ends (``calibration_client.artifact.band_interval``,
the one place that does it).

The band is built by the nonparametric bootstrap of the fit (Efron &
Tibshirani 1993, "An Introduction to the Bootstrap", ch. 6 and 13): the
candidate maps are refitted on resamples with the stacking weights and prior
precisions of the full fit (``platt_ard`` relearns its per-weight precisions on each
resample: see ``selection.RELEARNED_IN_BOOTSTRAP``), and the spread of the averaged
map's log-odds at each grid point gives a normal-theory interval there, centred on the
fitted map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.stats import norm

from app.calibration.priors import logit, sigmoid

FloatArray = np.ndarray

BAND_LEVEL = 0.9
N_BOOTSTRAP = 50
# Resamples are drawn from at most this many samples; the spread is then
# rescaled to n by the convergence rate of the fit (n^-1/2 for the smooth
# candidates, n^-1/3 for isotonic regression).
BAND_MAX_SAMPLES = 2000
# The bootstrap spread is widened by this factor: the shrunk fits are biased
# toward their prior at small n, which a spread alone does not show. Chosen so
# the simulation in bench/calibration_quality.py covers the true map at the
# nominal 0.9 (0.85-0.97 on average, >= 0.80 at every n).
INFLATION = 1.3


def contain(
    center: FloatArray,
    low: FloatArray,
    high: FloatArray,
    *,
    knots_shared: bool,
    ends: tuple[float, float],
) -> tuple[FloatArray, FloatArray]:
    """Widen a band at its grid points so its interpolation contains the map everywhere.

    When the map is itself linear interpolation on the same ``x`` (an isotonic
    table whose knots are the band's), ``low_i <= f(x_i) <= high_i`` suffices.
    Otherwise, with ``low_i <= f(x_(i-1))`` and ``high_i >= f(x_(i+1))``, on
    ``[x_i, x_(i+1)]`` the interpolated low is at most ``f(x_i) <= f(x)`` and the
    interpolated high at least ``f(x_(i+1)) >= f(x)``, for any non-decreasing ``f``.
    Scores beyond the input clip read the end knots, so those also reach the
    map's values at 0 and 1 (``ends``), which saturated scores may get.
    """
    f = center
    lo = np.minimum(low, f)
    hi = np.maximum(high, f)
    if not knots_shared:
        lo[1:] = np.minimum(lo[1:], f[:-1])
        hi[:-1] = np.maximum(hi[:-1], f[1:])
    lo[0] = min(lo[0], ends[0])
    hi[-1] = max(hi[-1], ends[1])
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


def band_from_spread(
    x: FloatArray,
    center: FloatArray,
    spread: FloatArray,
    level: float,
    *,
    knots_shared: bool,
    ends: tuple[float, float],
) -> dict[str, Any]:
    """A band at ``level`` from the map at ``x`` and the log-odds standard deviation there."""
    half = norm.ppf(0.5 + level / 2.0) * spread
    c = logit(center)
    low, high = contain(
        center, sigmoid(c - half), sigmoid(c + half), knots_shared=knots_shared, ends=ends
    )
    return {"level": float(level), "x": x.tolist(), "low": low.tolist(), "high": high.tolist()}


def rescale_band(
    band: Mapping[str, Any],
    center: FloatArray,
    level: float,
    *,
    knots_shared: bool,
    ends: tuple[float, float],
) -> dict[str, Any]:
    """The band at another level, from a stored one, assuming normal log-odds errors."""
    c = logit(center)
    z_from = norm.ppf(0.5 + float(band["level"]) / 2.0)
    low_z = logit(np.asarray(band["low"], dtype=np.float64))
    high_z = logit(np.asarray(band["high"], dtype=np.float64))
    spread = np.maximum(c - low_z, high_z - c) / z_from
    x = np.asarray(band["x"], dtype=np.float64)
    return band_from_spread(
        x, center, np.maximum(spread, 0.0), level, knots_shared=knots_shared, ends=ends
    )


def bootstrap_spread(
    p: FloatArray,
    y: FloatArray,
    x: FloatArray,
    refit: Callable[[FloatArray, FloatArray], FloatArray | None],
    rate: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Standard deviation over bootstrap refits of the map's log-odds at ``x``.

    Parameters
    ----------
    p, y : ndarray of shape (n_samples,)
    x : ndarray of shape (n_grid,)
    refit : callable
        Fits on a resample and returns the map at ``x``, or None when the
        resample cannot be fitted (a class too rare in it).
    rate : float
        Convergence exponent used to rescale a subsampled bootstrap to n.
    rng : numpy Generator
    """
    n = p.shape[0]
    m = min(n, BAND_MAX_SAMPLES)
    draws = []
    attempts = 0
    while len(draws) < N_BOOTSTRAP and attempts < 3 * N_BOOTSTRAP:
        attempts += 1
        idx = rng.integers(0, n, size=m)
        yb = y[idx]
        positives = int(yb.sum())
        if min(positives, m - positives) < 2:
            continue
        fitted = refit(p[idx], yb)
        if fitted is not None:
            draws.append(logit(fitted))
    if len(draws) < 2:
        return np.full(x.shape[0], np.inf)
    spread = np.std(np.asarray(draws), axis=0, ddof=1)
    return INFLATION * spread * (m / n) ** rate
