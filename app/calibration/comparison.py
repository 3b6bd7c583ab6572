"""Paired bootstrap of metric differences between two calibrators on the same samples."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from app.calibration.metrics import equal_width_bins
from app.calibration.validation import check_probabilities, validate_scores_labels

_ECE_BINS = 10


def paired_bootstrap(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    labels: ArrayLike,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Percentile bootstrap intervals for ECE(a) - ECE(b) and Brier(a) - Brier(b).

    Each resample draws one set of indices with replacement and scores both
    ``a`` and ``b`` on it, so the interval reflects the paired difference.

    Parameters
    ----------
    probs_a, probs_b : array-like of shape (n_samples,)
        Two sets of probabilities for the same samples.
    labels : array-like of shape (n_samples,)
        0/1 outcomes.
    n_resamples : int, default=1000
    confidence : float, default=0.95
    random_state : int or None, default=0

    Returns
    -------
    dict
        ``n_resamples``, ``confidence``, and ``ece_diff`` / ``brier_diff``, each
        ``{"estimate", "low", "high"}`` (estimate on the full sample; ECE with 10
        equal-width bins as in ``evaluate``).
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    a = check_probabilities(probs_a, "probs_a")
    b = check_probabilities(probs_b, "probs_b")
    if a.shape != b.shape:
        raise ValueError(
            f"probs_a and probs_b have different lengths: {a.shape[0]} != {b.shape[0]}"
        )
    _, y = validate_scores_labels(a, labels)
    assert y is not None
    n = a.shape[0]
    # Resampling is expressed as multiplicity weights per sample: the same sums
    # as indexing, without materialising resampled copies of every array.
    sides = []
    for p in (a, b):
        bins = equal_width_bins(p, _ECE_BINS)
        sides.append((bins, p - y, (p - y) ** 2))

    def metrics(weights: np.ndarray) -> tuple[float, float]:
        ece, brier = [], []
        total = weights.sum()
        for bins, resid, sq in sides:
            gap = np.bincount(bins, weights=weights * resid, minlength=_ECE_BINS)
            ece.append(float(np.abs(gap).sum() / total))
            brier.append(float(weights @ sq / total))
        return ece[0] - ece[1], brier[0] - brier[1]

    est_ece, est_brier = metrics(np.ones(n))
    rng = np.random.default_rng(random_state)
    draws = np.empty((n_resamples, 2))
    for r in range(n_resamples):
        weights = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        draws[r] = metrics(weights)
    tail = (1.0 - confidence) / 2.0
    low = np.quantile(draws, tail, axis=0)
    high = np.quantile(draws, 1.0 - tail, axis=0)
    return {
        "n_resamples": n_resamples,
        "confidence": float(confidence),
        "ece_diff": {"estimate": est_ece, "low": float(low[0]), "high": float(high[0])},
        "brier_diff": {"estimate": est_brier, "low": float(low[1]), "high": float(high[1])},
    }
