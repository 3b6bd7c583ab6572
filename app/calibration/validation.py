"""Entry-point checks that turn raw score/label inputs into clean float64 arrays.

``check_probabilities`` is the client's, so the service and the SDK refuse the same scores.
"""

from __future__ import annotations

import numpy as np
from calibration_client.artifact import INPUT_CLIP, check_probabilities
from numpy.typing import ArrayLike, NDArray

# Two of each class is the least that lets a calibrator see both outcomes even
# after a held-out sample is removed; below that every fit is a guess.
MIN_PER_CLASS = 2


def _check_labels(labels: ArrayLike, n: int) -> NDArray[np.float64]:
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {raw.shape}")
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"labels must be 0/1 numbers or booleans, got dtype {raw.dtype}")
    if raw.shape[0] != n:
        raise ValueError(f"scores and labels have different lengths: {n} != {raw.shape[0]}")
    arr = raw.astype(np.float64, copy=False)
    bad = np.flatnonzero((arr != 0.0) & (arr != 1.0))
    if bad.size:
        raise ValueError(f"labels must be 0 or 1; found {raw[bad[0]].item()!r} at index {bad[0]}")
    return arr


def validate_scores_labels(
    scores: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    require_both_classes: bool = False,
    min_samples: int | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Check scores (and labels) once, at the entry point.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Confidence scores; finite and in [0, 1].
    labels : array-like of shape (n_samples,), optional
        Outcomes as 0/1 integers or floats, or booleans.
    require_both_classes : bool, default=False
        Demand at least ``MIN_PER_CLASS`` (2) samples of each class, as fitting does.
    min_samples : int, optional
        Minimum number of samples.

    Returns
    -------
    scores : ndarray of shape (n_samples,), float64
    labels : ndarray of shape (n_samples,), float64 with values 0.0/1.0, or None

    Raises
    ------
    ValueError
        Naming the first offending index or the count that is short.
    """
    p = check_probabilities(scores, "scores")
    if min_samples is not None and p.shape[0] < min_samples:
        raise ValueError(f"need at least {min_samples} samples, got {p.shape[0]}")
    if labels is None:
        if require_both_classes:
            raise ValueError("labels are required to fit a calibrator")
        return p, None
    y = _check_labels(labels, p.shape[0])
    if require_both_classes:
        n_pos = int(np.count_nonzero(y))
        n_neg = y.shape[0] - n_pos
        if n_pos == 0 or n_neg == 0:
            only = "1 (positive)" if n_neg == 0 else "0 (negative)"
            raise ValueError(f"labels contain only one class: {only}; fitting needs both")
        if min(n_pos, n_neg) < MIN_PER_CLASS:
            raise ValueError(
                f"need at least {MIN_PER_CLASS} samples of each class to fit, "
                f"got {n_pos} positive and {n_neg} negative"
            )
    return p, y


__all__ = ["INPUT_CLIP", "MIN_PER_CLASS", "check_probabilities", "validate_scores_labels"]
