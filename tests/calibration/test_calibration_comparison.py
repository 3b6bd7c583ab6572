"""Paired bootstrap of metric differences."""

from __future__ import annotations

import numpy as np
import pytest

from app.calibration import evaluate, fit_calibrator, paired_bootstrap


def sample(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    return scores, rng.random(n) < scores**3


def test_identical_inputs_give_zero_intervals():
    scores, labels = sample()
    result = paired_bootstrap(scores, scores, labels, n_resamples=200)
    assert result["n_resamples"] == 200 and result["confidence"] == 0.95
    for key in ("ece_diff", "brier_diff"):
        assert result[key] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_clearly_better_calibrator_excludes_zero():
    scores, labels = sample()
    calibrated = fit_calibrator(scores, labels).predict(scores)
    result = paired_bootstrap(calibrated, scores, labels, n_resamples=300)
    assert result["ece_diff"]["high"] < 0.0 and result["brier_diff"]["high"] < 0.0
    a, b = evaluate(calibrated, labels), evaluate(scores, labels)
    assert result["ece_diff"]["estimate"] == pytest.approx(a["ece"] - b["ece"], abs=1e-12)
    assert result["brier_diff"]["estimate"] == pytest.approx(a["brier"] - b["brier"], abs=1e-12)
    low, est, high = (result["ece_diff"][k] for k in ("low", "estimate", "high"))
    assert low <= est <= high


def test_same_random_state_same_result_and_different_state_differs():
    scores, labels = sample(500)
    other = np.clip(scores + 0.05, 0, 1)
    first = paired_bootstrap(other, scores, labels, n_resamples=100, random_state=3)
    assert first == paired_bootstrap(other, scores, labels, n_resamples=100, random_state=3)
    assert first != paired_bootstrap(other, scores, labels, n_resamples=100, random_state=4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="different lengths: 2 != 3"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="n_resamples must be a positive integer"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.2], [0, 1], n_resamples=0)
    with pytest.raises(ValueError, match="probs_b contain NaN at index 0"):
        paired_bootstrap([0.1, 0.2], [np.nan, 0.2], [0, 1])
