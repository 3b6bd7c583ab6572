"""The quality gate's decisions on given numbers, and the pipeline on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from app.calibration import Calibrator, identity_calibrator
from app.training.evaluation import TrainingPolicy, _gate, evaluate_candidate

POLICY = TrainingPolicy(threshold=0.05)
INTERVAL = {"low": -0.02, "high": -0.01, "estimate": -0.015}


def test_deploys_when_ece_improves_enough_and_brier_holds() -> None:
    deploy, reason = _gate(
        POLICY, {"ece": 0.09, "brier": 0.2}, {"ece": 0.1, "brier": 0.2}, 0.1, INTERVAL
    )
    assert deploy and "10.0%" in reason


def test_rejects_small_improvement_and_worse_brier() -> None:
    deploy, reason = _gate(
        POLICY, {"ece": 0.098, "brier": 0.1}, {"ece": 0.1, "brier": 0.2}, 0.02, INTERVAL
    )
    assert not deploy and "below the 5.0% threshold" in reason
    deploy, reason = _gate(
        POLICY, {"ece": 0.01, "brier": 0.21}, {"ece": 0.1, "brier": 0.2}, 0.9, INTERVAL
    )
    assert not deploy and "Brier score got worse" in reason


def test_significance_setting_requires_the_interval_to_exclude_zero() -> None:
    strict = TrainingPolicy(threshold=0.05, require_significant=True)
    wide = {"low": -0.05, "high": 0.01, "estimate": -0.02}
    args = ({"ece": 0.05, "brier": 0.1}, {"ece": 0.1, "brier": 0.2}, 0.5)
    assert _gate(POLICY, *args, wide)[0]
    deploy, reason = _gate(strict, *args, wide)
    assert not deploy and "does not exclude zero" in reason
    assert _gate(strict, *args, INTERVAL)[0]


def test_pipeline_on_arrays_reports_the_contract_fields() -> None:
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 2000)
    labels = (rng.uniform(0, 1, 2000) < 0.5 + (scores - 0.5) * 0.3).astype(np.float64)
    evaluation = evaluate_candidate(scores, labels, identity_calibrator(), POLICY)
    results = evaluation.results
    assert evaluation.deploy and results["deployed"]
    assert (results["n_train"], results["n_validation"]) == (1600, 400)
    assert results["ece_improvement"] > 0.5
    assert results["bootstrap"]["ece_diff"]["high"] < 0
    assert len(results["reliability"]["candidate"]) == 10


def _truth(scores: np.ndarray) -> np.ndarray:
    return 0.5 + (scores - 0.5) * 0.3


def _overconfident_candidate() -> Calibrator:
    """Right below 0.8, 0.15 too high above it, and sure of itself everywhere (band +-0.01)."""
    x = np.linspace(0.0, 1.0, 201)
    y = _truth(x) + np.where(x > 0.8, 0.15, 0.0)
    band = {"level": 0.9, "x": x.tolist(), "low": (y - 0.01).tolist(), "high": (y + 0.01).tolist()}
    return Calibrator("isotonic", {"x": x.tolist(), "y": y.tolist()}, band=band)


def test_gate_refuses_a_candidate_whose_band_the_held_out_outcomes_contradict() -> None:
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 2000)
    labels = (rng.uniform(0, 1, 2000) < _truth(scores)).astype(np.float64)
    candidate = _overconfident_candidate()
    evaluation = evaluate_candidate(
        scores, labels, identity_calibrator(), POLICY, lambda rows: candidate
    )
    results = evaluation.results
    # ECE and Brier alone would deploy it: the identity is far worse.
    assert results["ece_improvement"] > 0.5 and results["brier_improvement"] > 0
    assert not evaluation.deploy
    assert "contradict the candidate's 90% band" in evaluation.reason
    band = results["band_check"]
    assert band["checked"] and not band["consistent"]
    # The held-out groups above 0.8 are the top two of ten (400 validation samples, 40 each).
    top = band["groups"][-1]
    assert top["p_low"] > 0.74  # the map at 0.8 and above: 0.59 + 0.15
    assert not top["consistent"] and top["ci_high"] < top["band_low"]
    assert all(g["consistent"] for g in band["groups"][:7])
    assert evaluation.metrics["band_check"] == {key: band[key] for key in band if key != "groups"}


def test_band_check_groups_match_a_direct_computation() -> None:
    rng = np.random.default_rng(5)
    scores = rng.uniform(0, 1, 2000)
    labels = (rng.uniform(0, 1, 2000) < _truth(scores)).astype(np.float64)
    evaluation = evaluate_candidate(scores, labels, identity_calibrator(), POLICY)
    band = evaluation.results["band_check"]
    assert evaluation.deploy and band["checked"] and band["consistent"]
    assert band["level"] == 0.9 and band["n_groups"] == 10
    # The validation rows are the 20% test split of train_test_split with the policy's seed.
    from sklearn.model_selection import train_test_split

    _, val = train_test_split(
        np.arange(2000), test_size=0.2, stratify=labels, random_state=POLICY.random_seed
    )
    probs = evaluation.calibrator.predict(scores[val])
    low, high = evaluation.calibrator.predict_interval(scores[val], level=0.9)
    order = np.argsort(probs, kind="stable")
    for g, rows in zip(band["groups"], np.array_split(order, 10), strict=True):
        assert g["count"] == rows.shape[0] == 40
        assert g["observed_rate"] == pytest.approx(labels[val][rows].mean())
        assert g["band_low"] == pytest.approx(low[rows].mean())
        assert g["band_high"] == pytest.approx(high[rows].mean())
        assert g["inside"] == (g["band_low"] <= g["observed_rate"] <= g["band_high"])
    assert band["groups_inside"] == sum(g["inside"] for g in band["groups"])


def test_band_check_needs_twenty_held_out_samples() -> None:
    from app.calibration import band_check

    p = np.full(19, 0.5)
    result = band_check(p, p - 0.1, p + 0.1, np.arange(19) % 2)
    assert not result["checked"] and "19 held-out samples" in result["reason"]
    with pytest.raises(ValueError, match="same length"):
        band_check(np.full(30, 0.5), np.full(29, 0.4), np.full(30, 0.6), np.arange(30) % 2)


def test_cross_validation_gate_checks_each_folds_band_on_its_held_out_samples() -> None:
    from app.training.evaluation import evaluate_by_cross_validation

    rng = np.random.default_rng(4)
    scores = rng.uniform(0, 1, 190)
    labels = (rng.uniform(0, 1, 190) < _truth(scores)).astype(np.float64)
    candidate = _overconfident_candidate()
    evaluation = evaluate_by_cross_validation(
        scores, labels, identity_calibrator(), POLICY, lambda rows: candidate
    )
    band = evaluation.results["band_check"]
    # 190 out-of-fold samples: 9 groups of 21 or 22.
    assert band["checked"] and band["n_groups"] == 9
    assert sum(g["count"] for g in band["groups"]) == 190
    assert not band["consistent"] and not evaluation.deploy
    assert "contradict the candidate's 90% band" in evaluation.reason
    # Its log loss and Brier beat the identity's: only the band refuses it.
    cand, prod = evaluation.results["candidate"], evaluation.results["production"]
    assert cand["log_loss"] < prod["log_loss"] and cand["brier"] <= prod["brier"]
