"""Automatic method selection by cross-validated log loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.calibration import METHODS, evaluate, fit_calibrator


def logistic_miscalibration(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(2.0, 2.0, n)
    logit = np.log(scores / (1 - scores))
    return scores, rng.random(n) < 1.0 / (1.0 + np.exp(-(2.5 * logit - 0.7)))


def step_miscalibration(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    truth = np.where(scores < 0.5, 0.15, 0.55) + 0.3 * (scores > 0.8)
    return scores, rng.random(n) < truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_picks_platt_on_logistic_miscalibration(seed):
    cal = fit_calibrator(*logistic_miscalibration(5000, seed), method="auto", random_state=seed)
    assert cal.method == "platt"
    assert cal.params["a"] == pytest.approx(2.5, rel=0.15)
    sel = cal.selection
    assert sel["chosen"] == "platt" and sel["n_splits"] == 5
    assert set(sel["cv_log_loss"]) == set(METHODS)
    assert json.loads(json.dumps(sel)) == sel


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_picks_a_nonparametric_map_on_a_step_function(seed):
    scores, labels = step_miscalibration(5000, seed)
    cal = fit_calibrator(scores, labels, method="auto", random_state=seed)
    assert cal.method in ("isotonic", "histogram")
    cv = cal.selection["cv_log_loss"]
    assert min(cv["isotonic"], cv["histogram"]) < min(cv["platt"], cv["beta"])
    test_scores, test_labels = step_miscalibration(20000, seed + 100)
    ours = evaluate(cal.predict(test_scores), test_labels)
    platt = evaluate(fit_calibrator(scores, labels, "platt").predict(test_scores), test_labels)
    assert ours["brier"] < platt["brier"]


def test_small_samples_skip_nonparametric_candidates_and_tiny_ones_fall_back_to_platt():
    scores, labels = logistic_miscalibration(60, 3)
    cal = fit_calibrator(scores, labels)
    assert set(cal.selection["cv_log_loss"]) == {"identity", "platt", "beta"}
    tiny = fit_calibrator([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 1, 0, 1, 1])
    assert tiny.method == "platt"
    assert tiny.selection["n_splits"] == 0 and "too few" in tiny.selection["reason"]


def test_rare_minority_reduces_the_number_of_folds():
    rng = np.random.default_rng(4)
    scores = rng.random(400)
    labels = np.zeros(400)
    labels[np.argsort(scores)[-6:]] = 1
    assert fit_calibrator(scores, labels).selection["n_splits"] == 3


def test_auto_is_deterministic_for_a_random_state():
    scores, labels = step_miscalibration(3000, 5)
    a = fit_calibrator(scores, labels, random_state=7)
    b = fit_calibrator(scores, labels, random_state=7)
    assert a.to_artifact() == b.to_artifact() and a.selection == b.selection


def test_well_calibrated_scores_tie_to_a_simple_method():
    rng = np.random.default_rng(6)
    scores = rng.random(4000)
    cal = fit_calibrator(scores, rng.random(4000) < scores)
    assert cal.method in ("identity", "platt")


def test_blend_is_stored_as_a_monotone_isotonic_table(monkeypatch):
    import app.calibration.selection as selection

    scores, labels = logistic_miscalibration(3000, 8)
    # Force the blend path: any blend is then "better" than the chosen method.
    monkeypatch.setattr(selection, "TIE_SE", -1e9)
    monkeypatch.setattr(selection, "TIE_RTOL", -1e9)
    cal = fit_calibrator(scores, labels)
    assert cal.method == "isotonic" and cal.selection["blend"] is not None
    assert np.all(np.diff(cal.params["x"]) > 0) and np.all(np.diff(cal.params["y"]) >= 0)
    grid = np.linspace(0.0, 1.0, 1001)
    assert np.all(np.diff(cal.predict(grid)) >= 0.0)
