"""Anytime-valid confidence sequences for the mean of paired, bounded loss differences.

The method is the betting confidence sequence of Waudby-Smith and Ramdas (2023), "Estimating
means of bounded random variables by betting", JRSS B 86(1): for every candidate mean ``m`` two
capital processes bet on the differences ``d_i - m`` (one on each side), with the aGRAPA plug-in
bet of their Section 5, and ``m`` is ruled out once either capital reaches ``2 / alpha`` (the
hedged capital process, their Section 4.2, with theta = 1/2). Ville's inequality makes the result
valid simultaneously over every number of observations, whenever one stops or looks.

As in that paper, the candidate means are a grid. The grid is denser near 0, where the decision
of a champion/challenger comparison is taken; 0 itself is a grid point, so "0 is excluded" is
exact. A grid point once excluded stays excluded (a running intersection, still valid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

_GRID_SIZE = 401
_GRID_SHAPE = 6.0
# A grid point 0 < |m| < 1 with sinh spacing: about 1.5e-4 apart near 0, coarser far out.
GRID = np.sinh(_GRID_SHAPE * np.linspace(-1.0, 1.0, _GRID_SIZE + 2)[1:-1]) / np.sinh(_GRID_SHAPE)
GRID[_GRID_SIZE // 2] = 0.0
# Bets are truncated at this share of the largest bet that keeps the capital non-negative.
# WSR suggest 1/2 or 3/4; bench/shadow.py measured 0.9 to reach a decision sooner on Brier
# differences, whose spread is far smaller than their range.
_TRUNCATION = 0.9
# The plug-in variance starts from this prior worth one observation (about the variance of
# Brier differences between calibrators a few points apart); it only shapes the bets, never the
# validity.
_PRIOR_VARIANCE = 0.05
_CHUNK = 1024


@dataclass
class ConfidenceSequenceState:
    """Everything needed to continue a confidence sequence with more observations."""

    alpha: float
    n: int = 0
    total: float = 0.0
    residual_ss: float = 0.0
    log_capital_up: np.ndarray = field(default_factory=lambda: np.zeros(_GRID_SIZE))
    log_capital_down: np.ndarray = field(default_factory=lambda: np.zeros(_GRID_SIZE))
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(_GRID_SIZE, dtype=bool))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy (lists of floats), for storing between updates."""
        return {
            "alpha": self.alpha,
            "n": self.n,
            "total": self.total,
            "residual_ss": self.residual_ss,
            "log_capital_up": self.log_capital_up.tolist(),
            "log_capital_down": self.log_capital_down.tolist(),
            "excluded": np.flatnonzero(self.excluded).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceSequenceState:
        excluded = np.zeros(_GRID_SIZE, dtype=bool)
        excluded[np.asarray(data["excluded"], dtype=np.int64)] = True
        return cls(
            alpha=float(data["alpha"]),
            n=int(data["n"]),
            total=float(data["total"]),
            residual_ss=float(data["residual_ss"]),
            log_capital_up=np.asarray(data["log_capital_up"], dtype=np.float64),
            log_capital_down=np.asarray(data["log_capital_down"], dtype=np.float64),
            excluded=excluded,
        )

    def interval(self) -> tuple[float, float]:
        """The current bounds (low, high): every value outside the open interval is excluded."""
        low, high = _bounds(self.excluded[None, :])
        return float(low[0]), float(high[0])


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_differences(differences: ArrayLike) -> np.ndarray:
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"differences must be one-dimensional, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences contain NaN or infinite values")
    if d.size and (d.min() < -1.0 or d.max() > 1.0):
        raise ValueError(
            f"differences must lie in [-1, 1] (Brier differences do); "
            f"got values in [{d.min():.6g}, {d.max():.6g}]"
        )
    return d


def _bounds(excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of an exclusion mask: the grid neighbours just outside the surviving points.

    When every grid point is excluded (possible, with probability at most alpha) the row's
    bounds close in on the point excluded last, so they still bracket the estimate.
    """
    alive = ~excluded
    any_alive = alive.any(axis=1)
    first = np.where(any_alive, alive.argmax(axis=1), _GRID_SIZE // 2)
    last = np.where(any_alive, _GRID_SIZE - 1 - alive[:, ::-1].argmax(axis=1), _GRID_SIZE // 2)
    padded = np.concatenate([[-1.0], GRID, [1.0]])
    return padded[first], padded[last + 2]


def _extend_chunk(
    state: ConfidenceSequenceState, d: np.ndarray
) -> tuple[ConfidenceSequenceState, np.ndarray]:
    n0 = state.n
    t = np.arange(n0 + 1, n0 + d.shape[0] + 1, dtype=np.float64)
    # Plug-in mean and variance after each observation, with a prior worth one observation
    # (mean 0, variance _PRIOR_VARIANCE), as in WSR's mu-hat and sigma-hat.
    mean = (state.total + np.cumsum(d)) / (t + 1.0)
    residual_ss = state.residual_ss + np.cumsum((d - mean) ** 2)
    variance = (_PRIOR_VARIANCE + residual_ss) / (t + 1.0)
    mean_before = np.concatenate([[state.total / (n0 + 1.0)], mean[:-1]])
    variance_before = np.concatenate(
        [[(_PRIOR_VARIANCE + state.residual_ss) / (n0 + 1.0)], variance[:-1]]
    )
    gap = mean_before[:, None] - GRID[None, :]
    # aGRAPA: the bet that maximises a second-order expansion of the log capital.
    bet = gap / (variance_before[:, None] + gap**2)
    bet_up = np.minimum(np.maximum(bet, 0.0), _TRUNCATION / (1.0 + GRID))
    bet_down = np.minimum(np.maximum(-bet, 0.0), _TRUNCATION / (1.0 - GRID))
    centred = d[:, None] - GRID[None, :]
    log_up = state.log_capital_up + np.cumsum(np.log1p(bet_up * centred), axis=0)
    log_down = state.log_capital_down + np.cumsum(np.log1p(-bet_down * centred), axis=0)
    threshold = np.log(2.0 / state.alpha)
    excluded = np.logical_or.accumulate(
        np.vstack([state.excluded, (log_up >= threshold) | (log_down >= threshold)]), axis=0
    )[1:]
    new_state = ConfidenceSequenceState(
        alpha=state.alpha,
        n=n0 + d.shape[0],
        total=state.total + float(d.sum()),
        residual_ss=float(residual_ss[-1]),
        log_capital_up=log_up[-1].copy(),
        log_capital_down=log_down[-1].copy(),
        excluded=excluded[-1].copy(),
    )
    return new_state, excluded


def extend_confidence_sequence(
    state: ConfidenceSequenceState, differences: ArrayLike
) -> tuple[ConfidenceSequenceState, np.ndarray, np.ndarray]:
    """Continue a confidence sequence with more observations, in their order.

    Parameters
    ----------
    state : ConfidenceSequenceState
        Where the sequence stands (``ConfidenceSequenceState(alpha)`` to start one).
    differences : array-like of shape (n_new,)
        The next differences, each in [-1, 1].

    Returns
    -------
    state : ConfidenceSequenceState
        The state after the last observation.
    low, high : ndarray of shape (n_new,)
        The bounds after each new observation; the same numbers as one call on the whole
        stream.
    """
    d = _check_differences(differences)
    lows, highs = [np.empty(0)], [np.empty(0)]
    for start in range(0, d.shape[0], _CHUNK):
        state, excluded = _extend_chunk(state, d[start : start + _CHUNK])
        low, high = _bounds(excluded)
        lows.append(low)
        highs.append(high)
    return state, np.concatenate(lows), np.concatenate(highs)


def paired_confidence_sequence(
    differences: ArrayLike, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Running bounds on the mean of paired differences, valid over all n at once.

    With probability at least ``1 - alpha`` the true mean lies strictly between ``low[n]`` and
    ``high[n]`` for every n simultaneously, so the bounds may be checked after every record
    without inflating the error rate. The observations must share a mean (conditional on the
    past) and lie in [-1, 1]; Brier score differences (challenger - champion) do.

    Parameters
    ----------
    differences : array-like of shape (n_samples,)
        Per-record loss differences, in the order they arrived.
    alpha : float, default=0.05
        Error probability over the whole sequence.

    Returns
    -------
    low, high : ndarray of shape (n_samples,)
        Non-decreasing ``low`` and non-increasing ``high``; ``high[n] <= 0`` says the mean is
        below 0 (the first argument's loss is lower), ``low[n] >= 0`` that it is above.
    """
    state = ConfidenceSequenceState(alpha=_check_alpha(alpha))
    _, low, high = extend_confidence_sequence(state, differences)
    return low, high
