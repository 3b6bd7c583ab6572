"""The quality gate's decisions on given numbers, and the pipeline on arrays."""

from __future__ import annotations

import numpy as np

from app.calibration import identity_calibrator
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
