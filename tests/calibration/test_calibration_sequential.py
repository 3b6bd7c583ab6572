"""The paired confidence sequence: validity over every look, shrinking, increments, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from app.calibration import (
    ConfidenceSequenceState,
    extend_confidence_sequence,
    paired_confidence_sequence,
)

ALPHA = 0.1
STREAMS = 400
RECORDS = 1000


def _brier_differences(rng: np.random.Generator, size: tuple[int, int], shift: float) -> np.ndarray:
    """Brier differences of two calibrators on the same labels; ``shift`` = their true mean.

    The champion predicts p perturbed by +/-0.1 at random, the challenger p itself; the
    champion's expected excess Brier score is 0.01, so a challenger that also adds noise of
    spread sqrt(0.01 + shift) has expected difference exactly ``shift``.
    """
    p = rng.uniform(0.15, 0.85, size)
    y = rng.random(size) < p
    champion = p + rng.choice([-0.1, 0.1], size)
    challenger = p + rng.choice([-1.0, 1.0], size) * np.sqrt(0.01 + shift)
    return (challenger - y) ** 2 - (champion - y) ** 2


def test_equal_losses_rarely_ever_exclude_zero_across_all_looks():
    rng = np.random.default_rng(7)
    d = _brier_differences(rng, (STREAMS, RECORDS), 0.0)
    excluded = 0
    for row in d:
        low, high = paired_confidence_sequence(row, alpha=ALPHA)
        excluded += bool(((low >= 0.0) | (high <= 0.0)).any())
    # Even the lower end of the 99% Clopper-Pearson interval of the observed share must stay
    # at most alpha; a CS computed as a fixed-sample interval at every look fails this clearly.
    lower = stats.beta.ppf(0.005, excluded, STREAMS - excluded + 1) if excluded else 0.0
    assert lower <= ALPHA


def test_the_true_mean_stays_inside_at_every_look_for_a_nonzero_mean():
    rng = np.random.default_rng(11)
    shift = 0.02
    d = _brier_differences(rng, (STREAMS, RECORDS), shift)
    misses = 0
    for row in d:
        low, high = paired_confidence_sequence(row, alpha=ALPHA)
        misses += bool(((low >= shift) | (high <= shift)).any())
    lower = stats.beta.ppf(0.005, misses, STREAMS - misses + 1) if misses else 0.0
    assert lower <= ALPHA


def test_a_naive_t_test_at_every_look_would_fail_the_same_check():
    # The contrast that motivates the method, on the same generator: it shows the validity
    # test above can fail.
    rng = np.random.default_rng(7)
    d = _brier_differences(rng, (STREAMS, RECORDS), 0.0)
    n = np.arange(2, RECORDS + 1)
    mean = np.cumsum(d, axis=1)[:, 1:] / n
    sd = np.sqrt((np.cumsum(d**2, axis=1)[:, 1:] - n * mean**2) / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    rejected = (np.abs(t) > stats.t.ppf(1 - ALPHA / 2, n - 1)).any(axis=1).mean()
    assert rejected > 2 * ALPHA


def test_a_better_challenger_is_found_and_the_bounds_shrink():
    rng = np.random.default_rng(3)
    d = _brier_differences(rng, (1, 20_000), -0.01)[0]
    low, high = paired_confidence_sequence(d, alpha=0.05)
    assert np.all(np.diff(low) >= 0) and np.all(np.diff(high) <= 0)
    assert np.all(low < high)
    assert low[0] == -1.0 and high[0] == 1.0
    assert high[-1] <= 0.0
    assert low[-1] < d.mean() < high[-1]
    assert high[-1] - low[-1] < 0.01


def test_continuing_from_a_stored_state_gives_the_same_bounds():
    rng = np.random.default_rng(5)
    d = _brier_differences(rng, (1, 3000), -0.005)[0]
    low, high = paired_confidence_sequence(d, alpha=0.05)
    state = ConfidenceSequenceState(alpha=0.05)
    lows, highs = [], []
    for part in np.array_split(d, [1, 2, 700, 2500]):
        # Through the JSON-safe form, as the service stores it between posts.
        state = ConfidenceSequenceState.from_dict(state.to_dict())
        state, part_low, part_high = extend_confidence_sequence(state, part)
        lows.append(part_low)
        highs.append(part_high)
    np.testing.assert_array_equal(np.concatenate(lows), low)
    np.testing.assert_array_equal(np.concatenate(highs), high)
    assert state.n == 3000
    assert state.interval() == (low[-1], high[-1])


def test_empty_input_gives_empty_bounds():
    low, high = paired_confidence_sequence([])
    assert low.shape == (0,) and high.shape == (0,)
    assert ConfidenceSequenceState(alpha=0.05).interval() == (-1.0, 1.0)


@pytest.mark.parametrize(
    ("differences", "alpha", "message"),
    [
        ([0.1, float("nan")], 0.05, "NaN"),
        ([0.1, 1.5], 0.05, r"\[-1, 1\]"),
        ([[0.1, 0.2]], 0.05, "one-dimensional"),
        ([0.1], 0.0, "alpha"),
        ([0.1], 1.0, "alpha"),
        ([0.1], True, "alpha"),
    ],
)
def test_bad_input_raises_a_precise_value_error(differences, alpha, message):
    with pytest.raises(ValueError, match=message):
        paired_confidence_sequence(differences, alpha=alpha)
