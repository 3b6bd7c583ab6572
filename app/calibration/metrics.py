"""Calibration and accuracy metrics, defined once (docs/metrics.md has the definitions)."""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from app.calibration.methods import FloatArray
from app.calibration.validation import check_probabilities, validate_scores_labels

LOG_LOSS_CLIP = 1e-15


def _check(probs: ArrayLike, labels: ArrayLike, n_bins: int) -> tuple[FloatArray, FloatArray]:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    p = check_probabilities(probs, "probs")
    _, y = validate_scores_labels(p, labels)
    assert y is not None
    return p, y


def equal_width_bins(p: FloatArray, n_bins: int) -> np.ndarray:
    """Bin index min(floor(p·B), B-1): left-closed bins, the last one closed."""
    return np.minimum(np.floor(p * n_bins).astype(np.intp), n_bins - 1)


def _binned_gaps(
    bins: np.ndarray, p: FloatArray, y: FloatArray, n_bins: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    return counts, sum_p, sum_y


def _ece_mce(counts: FloatArray, sum_p: FloatArray, sum_y: FloatArray) -> tuple[float, float]:
    filled = counts > 0
    gaps = np.abs(sum_y[filled] - sum_p[filled]) / counts[filled]
    ece = float((counts[filled] * gaps).sum() / counts.sum())
    return ece, float(gaps.max())


def _equal_mass_bins(p: FloatArray, n_bins: int) -> np.ndarray:
    bins = np.empty(p.shape[0], dtype=np.intp)
    for b, chunk in enumerate(np.array_split(np.argsort(p, kind="stable"), n_bins)):
        bins[chunk] = b
    return bins


def _debiased(counts: FloatArray, sum_p: FloatArray, sum_y: FloatArray) -> float:
    # Kumar, Liang & Ma (2019): subtract each bin's sampling variance of the
    # observed rate, ybar(1 - ybar)/(n_b - 1), from its squared gap; reported as
    # the square root of the total so it reads on the same scale as ECE.
    filled = counts > 0
    n_b = counts[filled]
    ybar = sum_y[filled] / n_b
    sq_gap = (ybar - sum_p[filled] / n_b) ** 2
    multi = n_b > 1
    sq_gap[multi] -= ybar[multi] * (1.0 - ybar[multi]) / (n_b[multi] - 1.0)
    return float(np.sqrt(max(0.0, float((n_b * sq_gap).sum() / counts.sum()))))


def _auroc(p: FloatArray, y: FloatArray) -> float | None:
    n_pos = float(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(p)
    return float((ranks @ y - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))


def evaluate(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Calibration and accuracy metrics of probabilities against outcomes.

    Parameters
    ----------
    probs : array-like of shape (n_samples,)
        Predicted probabilities in [0, 1].
    labels : array-like of shape (n_samples,)
        0/1 outcomes (ints, floats or booleans).
    n_bins : int, default=10
        Bins B for the binned metrics.

    Returns
    -------
    dict
        ``n``; ``ece`` (B equal-width bins, index min(floor(p·B), B-1)); ``mce``
        (largest bin gap); ``ece_equal_mass`` (B equal-count bins in sorted order);
        ``ece_debiased`` (Kumar et al. 2019 debiased L2 calibration error on the
        equal-mass bins); ``brier``; ``log_loss`` (p clipped to [1e-15, 1-1e-15]);
        ``auroc`` (None with one class); ``base_rate``. All plain Python numbers.
    """
    p, y = _check(probs, labels, n_bins)
    ece, mce = _ece_mce(*_binned_gaps(equal_width_bins(p, n_bins), p, y, n_bins))
    mass = _binned_gaps(_equal_mass_bins(p, n_bins), p, y, n_bins)
    ece_mass, _ = _ece_mce(*mass)
    q = np.clip(p, LOG_LOSS_CLIP, 1.0 - LOG_LOSS_CLIP)
    log_loss = -float(np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))
    return {
        "n": int(p.shape[0]),
        "ece": ece,
        "ece_equal_mass": ece_mass,
        "ece_debiased": _debiased(*mass),
        "mce": mce,
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": log_loss,
        "auroc": _auroc(p, y),
        "base_rate": float(y.mean()),
    }


def _wilson(successes: float, n: float, z: float) -> tuple[float, float]:
    rate = successes / n
    denom = 1.0 + z * z / n
    centre = (rate + z * z / (2.0 * n)) / denom
    half = z * np.sqrt(rate * (1.0 - rate) / n + z * z / (4.0 * n * n)) / denom
    # In exact arithmetic the interval contains the rate; in floating point a bound can land a
    # rounding error past a rate of exactly 0 or 1, so clamp it back (Wilson 1927, JASA 22).
    return min(rate, max(0.0, float(centre - half))), max(rate, min(1.0, float(centre + half)))


def reliability_bins(
    probs: ArrayLike, labels: ArrayLike, n_bins: int = 10, confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Reliability-diagram data on the same equal-width bins as ``ece``.

    Parameters
    ----------
    probs : array-like of shape (n_samples,)
    labels : array-like of shape (n_samples,)
    n_bins : int, default=10
    confidence : float, default=0.95
        Level of the Wilson score interval for each bin's observed rate.

    Returns
    -------
    list of n_bins dicts
        ``bin``, ``lower``, ``upper``, ``count``, ``mean_confidence``,
        ``observed_rate``, ``ci_low``, ``ci_high``; the last four are None for an
        empty bin.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    p, y = _check(probs, labels, n_bins)
    counts, sum_p, sum_y = _binned_gaps(equal_width_bins(p, n_bins), p, y, n_bins)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    rows = []
    for b in range(n_bins):
        n_b = counts[b]
        row: dict[str, Any] = {
            "bin": b,
            "lower": b / n_bins,
            "upper": (b + 1) / n_bins,
            "count": int(n_b),
            "mean_confidence": None,
            "observed_rate": None,
            "ci_low": None,
            "ci_high": None,
        }
        if n_b > 0:
            low, high = _wilson(float(sum_y[b]), float(n_b), z)
            row |= {
                "mean_confidence": float(sum_p[b] / n_b),
                "observed_rate": float(sum_y[b] / n_b),
                "ci_low": low,
                "ci_high": high,
            }
        rows.append(row)
    return rows


# Each group of held-out samples in the band check holds at least this many: fewer and the
# observed rate's interval spans most of [0, 1], so the check could refuse nothing.
BAND_CHECK_MIN_PER_BIN = 20


def band_check(
    probs: ArrayLike,
    low: ArrayLike,
    high: ArrayLike,
    labels: ArrayLike,
    n_bins: int = 10,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Whether held-out outcomes agree with a calibrator's pointwise band.

    The held-out samples are cut into equal-mass groups by calibrated probability (as for
    ``ece_equal_mass``), at most ``n_bins`` and at least ``BAND_CHECK_MIN_PER_BIN`` samples
    per group. In each group the band for the group's mean probability is the mean of
    ``low`` and of ``high`` over it. A group is *inside* when its observed rate lies in that
    band, and *inconsistent* when even the rate's Wilson interval at confidence
    ``1 - alpha / groups`` (Bonferroni over the groups) misses the band: then binomial noise
    cannot explain the gap, and the band (so the map) is wrong there. If the band covers the
    true map, some group is inconsistent with probability at most about ``alpha``.

    Parameters
    ----------
    probs, low, high : array-like of shape (n_samples,)
        The calibrator's probabilities and band at the held-out scores.
    labels : array-like of shape (n_samples,)
    n_bins : int, default=10
    alpha : float, default=0.05

    Returns
    -------
    dict
        ``checked`` (False with a ``reason`` when too few samples); else ``n_groups``,
        ``groups_inside``, ``groups_inconsistent``, ``consistent`` (no inconsistent group),
        ``alpha`` and per group ``count``, ``p_low``/``p_high`` (its range of probabilities),
        ``mean_probability``, ``band_low``, ``band_high``, ``observed_rate``, ``ci_low``,
        ``ci_high``, ``inside``, ``consistent``.
    """
    p, y = _check(probs, labels, n_bins)
    lo = check_probabilities(low, "low")
    hi = check_probabilities(high, "high")
    if lo.shape != p.shape or hi.shape != p.shape:
        raise ValueError("low, high and probs must have the same length")
    n = p.shape[0]
    groups = min(n_bins, n // BAND_CHECK_MIN_PER_BIN)
    if groups < 1:
        return {
            "checked": False,
            "reason": f"{n} held-out samples; the check needs {BAND_CHECK_MIN_PER_BIN}",
        }
    z = NormalDist().inv_cdf(1.0 - alpha / (2.0 * groups))
    bins = _equal_mass_bins(p, groups)
    rows = []
    for b in range(groups):
        members = bins == b
        count = int(members.sum())
        rate = float(y[members].mean())
        ci_low, ci_high = _wilson(float(y[members].sum()), float(count), z)
        band_low, band_high = float(lo[members].mean()), float(hi[members].mean())
        rows.append(
            {
                "count": count,
                "p_low": float(p[members].min()),
                "p_high": float(p[members].max()),
                "mean_probability": float(p[members].mean()),
                "band_low": band_low,
                "band_high": band_high,
                "observed_rate": rate,
                "ci_low": ci_low,
                "ci_high": ci_high,
                "inside": band_low <= rate <= band_high,
                "consistent": not (ci_high < band_low or ci_low > band_high),
            }
        )
    inconsistent = sum(not r["consistent"] for r in rows)
    return {
        "checked": True,
        "alpha": alpha,
        "n_groups": groups,
        "groups_inside": sum(r["inside"] for r in rows),
        "groups_inconsistent": inconsistent,
        "consistent": inconsistent == 0,
        "groups": rows,
    }
