"""Metric definitions: bin edges, agreement with scikit-learn, invariants, reliability bins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from app.calibration import evaluate, reliability_bins

KEYS = {
    "n",
    "ece",
    "ece_equal_mass",
    "ece_debiased",
    "mce",
    "brier",
    "log_loss",
    "auroc",
    "base_rate",
}


def test_ece_at_exact_bin_edges_matches_hand_computation():
    probs = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1])
    # Bins 0..8 hold one score each (k/10 lands in bin k); bin 9 holds 0.9 and 1.0.
    gaps = [abs(labels[k] - probs[k]) for k in range(9)]
    top = abs((labels[9] + labels[10]) / 2 - 0.95)
    expected = (sum(gaps) + 2 * top) / 11
    result = evaluate(probs, labels)
    assert result["ece"] == pytest.approx(expected, abs=1e-15)
    assert result["mce"] == pytest.approx(max([*gaps, top]), abs=1e-15)
    counts = [row["count"] for row in reliability_bins(probs, labels)]
    assert counts == [1, 1, 1, 1, 1, 1, 1, 1, 1, 2]


def test_empty_bins_add_nothing():
    result = evaluate([0.05, 0.05, 0.95, 0.95], [0, 1, 1, 1])
    assert result["ece"] == pytest.approx((2 * 0.45 + 2 * 0.05) / 4)
    assert result["mce"] == pytest.approx(0.45)


@settings(max_examples=40, deadline=None)
@given(
    probs=arrays(np.float64, st.integers(2, 200), elements=st.floats(1e-9, 1 - 1e-9)),
    seed=st.integers(0, 2**32 - 1),
)
def test_brier_log_loss_auroc_agree_with_scikit_learn(probs, seed):
    labels = np.random.default_rng(seed).random(probs.size) < 0.5
    labels[0], labels[1] = True, False
    result = evaluate(probs, labels)
    assert set(result) == KEYS
    assert result["brier"] == pytest.approx(brier_score_loss(labels, probs), abs=1e-12)
    assert result["log_loss"] == pytest.approx(log_loss(labels, probs), abs=1e-12)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert all(isinstance(v, int | float) for v in result.values())
    assert 0.0 <= result["ece"] <= result["mce"] <= 1.0
    assert 0.0 <= result["ece_equal_mass"] <= 1.0 and result["ece_debiased"] >= 0.0
    assert result["base_rate"] == pytest.approx(labels.mean())
    assert result["n"] == probs.size


def test_log_loss_clips_at_1e15():
    result = evaluate([0.0, 1.0], [1, 0])
    expected = -(np.log(1e-15) + np.log(1.0 - (1.0 - 1e-15))) / 2
    assert result["log_loss"] == pytest.approx(expected, rel=1e-12)


def test_auroc_is_none_with_one_class_and_perfect_predictor_has_zero_ece():
    result = evaluate([0.0, 0.0, 1.0], [0, 0, 1])
    assert result["ece"] == 0.0 and result["brier"] == 0.0
    assert result["auroc"] == 1.0
    assert evaluate([0.2, 0.3], [1, 1])["auroc"] is None


def test_ece_equal_mass_uses_equal_count_groups():
    probs = np.array([0.1, 0.1, 0.9, 0.9])
    labels = np.array([0, 1, 1, 1])
    # Two groups of two in sorted order: |0.5 - 0.1| and |1 - 0.9|.
    assert evaluate(probs, labels, n_bins=2)["ece_equal_mass"] == pytest.approx(0.25)


def test_debiased_ece_is_smaller_on_perfectly_calibrated_noise():
    rng = np.random.default_rng(0)
    probs = rng.random(300)
    labels = rng.random(300) < probs
    result = evaluate(probs, labels)
    assert result["ece_debiased"] < result["ece_equal_mass"]


def test_reliability_bins_shape_and_wilson_interval():
    probs = np.r_[np.full(20, 0.05), np.full(10, 0.95)]
    labels = np.r_[np.zeros(19), [1], np.ones(10)]
    rows = reliability_bins(probs, labels, n_bins=10, confidence=0.95)
    assert [r["bin"] for r in rows] == list(range(10))
    assert rows[0]["lower"] == 0.0 and rows[9]["upper"] == 1.0
    first, empty, last = rows[0], rows[5], rows[9]
    assert first["count"] == 20 and first["observed_rate"] == pytest.approx(0.05)
    # Wilson 95% for 1/20: (0.0089, 0.2361).
    assert first["ci_low"] == pytest.approx(0.00889, abs=1e-4)
    assert first["ci_high"] == pytest.approx(0.23611, abs=1e-4)
    assert empty == {
        "bin": 5,
        "lower": 0.5,
        "upper": 0.6,
        "count": 0,
        "mean_confidence": None,
        "observed_rate": None,
        "ci_low": None,
        "ci_high": None,
    }
    assert last["ci_high"] == 1.0 and last["ci_low"] < 1.0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_bin_count(bad):
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        evaluate([0.5, 0.5], [0, 1], n_bins=bad)


def test_bad_confidence():
    with pytest.raises(ValueError, match="confidence must lie in"):
        reliability_bins([0.5, 0.5], [0, 1], confidence=1.0)


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="probs contain NaN at index 1"):
        evaluate([0.5, np.nan], [0, 1])
