"""predict_interval and the artifact's band: containment, range, round trip, narrowing, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.calibration import Calibrator, fit_calibrator, identity_calibrator, load_calibrator

GRID = np.sort(
    np.concatenate([[0.0, 1e-300, 1e-13, 0.5, 1.0 - 1e-13, 1.0], np.linspace(0.0, 1.0, 3001)])
)


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-s))


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.6, 0.6, n)
    truth = _sigmoid(0.5 * np.log(scores / (1.0 - scores)) + 0.3)
    return scores, (rng.random(n) < truth).astype(np.float64), truth


def kinked(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    truth = np.where(scores < 0.6, 0.3 * scores, 0.18 + 1.8 * (scores - 0.6))
    return scores, (rng.random(n) < truth).astype(np.float64), truth


def saturated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_odds = rng.normal(0.0, 12.0, n)
    scores = _sigmoid(log_odds)
    truth = _sigmoid(0.2 * log_odds)
    return scores, (rng.random(n) < truth).astype(np.float64), truth


@pytest.mark.parametrize("make", [overconfident, kinked, saturated])
@pytest.mark.parametrize("n", [40, 600])
def test_band_contains_the_map_and_stays_in_the_unit_interval(make, n):
    scores, labels, _ = make(n, 3)
    cal = fit_calibrator(scores, labels, random_state=1)
    for level in (0.9, 0.5, 0.99):
        low, high = cal.predict_interval(GRID, level=level)
        mid = cal.predict(GRID)
        assert low.shape == high.shape == GRID.shape
        assert np.all((low >= 0.0) & (low <= mid) & (mid <= high) & (high <= 1.0))


def test_wider_levels_give_wider_bands():
    scores, labels, _ = overconfident(300, 4)
    cal = fit_calibrator(scores, labels)
    inside = np.linspace(0.01, 0.99, 99)
    l50, h50 = cal.predict_interval(inside, level=0.5)
    l90, h90 = cal.predict_interval(inside, level=0.9)
    l99, h99 = cal.predict_interval(inside, level=0.99)
    assert np.all(l99 <= l90) and np.all(l90 <= l50) and np.all(h50 <= h90) and np.all(h90 <= h99)
    assert np.mean(h99 - l99) > np.mean(h90 - l90) > np.mean(h50 - l50) > 0.0


def test_band_narrows_as_labels_accumulate():
    inside = np.linspace(0.02, 0.98, 49)
    widths = []
    for n in (100, 1000, 10000):
        scores, labels, _ = overconfident(n, 5)
        low, high = fit_calibrator(scores, labels).predict_interval(inside)
        widths.append(float(np.mean(high - low)))
    assert widths[0] > widths[1] > widths[2]


def test_band_round_trips_through_json_with_the_same_numbers():
    scores, labels, _ = kinked(500, 6)
    cal = fit_calibrator(scores, labels)
    artifact = json.loads(json.dumps(cal.to_artifact()))
    assert artifact["format"] == "calibrator/v1" and artifact["band"]["level"] == 0.9
    x, band_x = np.asarray(artifact["params"]["x"]), artifact["band"]["x"]
    assert band_x == x[(x >= 1e-12) & (x <= 1.0 - 1e-12)].tolist()
    loaded = load_calibrator(artifact)
    for level in (0.9, 0.8):
        a, b = cal.predict_interval(GRID, level=level), loaded.predict_interval(GRID, level=level)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_band_apply_is_interpolation_of_the_clipped_score_flat_beyond_the_ends():
    band = {"level": 0.9, "x": [0.2, 0.5, 0.8], "low": [0.1, 0.3, 0.6], "high": [0.3, 0.6, 0.9]}
    cal = Calibrator("isotonic", {"x": [0.2, 0.5, 0.8], "y": [0.2, 0.45, 0.75]}, band=band)
    low, high = cal.predict_interval([0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0])
    assert low.tolist() == pytest.approx([0.1, 0.1, 0.2, 0.3, 0.45, 0.6, 0.6])
    assert high.tolist() == pytest.approx([0.3, 0.3, 0.45, 0.6, 0.75, 0.9, 0.9])


def test_readers_that_ignore_the_band_keep_working():
    scores, labels, _ = overconfident(200, 7)
    artifact = fit_calibrator(scores, labels).to_artifact()
    without = {k: v for k, v in artifact.items() if k != "band"}
    plain = load_calibrator(without)
    assert np.array_equal(plain.predict(GRID), load_calibrator(artifact).predict(GRID))
    assert "band" not in plain.to_artifact()


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.9", True, None])
def test_level_outside_the_open_unit_interval_is_rejected(level):
    scores, labels, _ = overconfident(200, 8)
    cal = fit_calibrator(scores, labels)
    with pytest.raises(ValueError, match="level"):
        cal.predict_interval([0.5], level=level)


def test_calibrators_without_a_band_say_so():
    scores, labels, _ = overconfident(200, 8)
    for cal in (identity_calibrator(), fit_calibrator(scores, labels, method="platt")):
        with pytest.raises(ValueError, match="carries no band"):
            cal.predict_interval([0.5])


def test_bad_scores_are_rejected():
    scores, labels, _ = overconfident(200, 8)
    cal = fit_calibrator(scores, labels)
    with pytest.raises(ValueError, match="NaN at index 1"):
        cal.predict_interval([0.5, float("nan")])
    with pytest.raises(ValueError, match="must lie in"):
        cal.predict_interval([1.5])


@pytest.mark.parametrize(
    ("band", "message"),
    [
        ({"level": 1.2, "x": [0.5], "low": [0.1], "high": [0.2]}, "'level' must lie in"),
        ({"level": 0.9, "x": [0.5, 0.6], "low": [0.1], "high": [0.2]}, "differ in length"),
        ({"level": 0.9, "x": [0.5], "low": [0.3], "high": [0.2]}, "low <= high"),
        ({"level": 0.9, "x": [0.6, 0.5], "low": [0.1, 0.1], "high": [0.2, 0.2]}, "'x' must be"),
        ({"level": 0.9, "x": [0.5], "low": [-0.1], "high": [0.2]}, "low <= high"),
        ({"x": [0.5], "low": [0.1], "high": [0.2]}, "missing 'level'"),
        ([0.1, 0.2], "band must be an object"),
    ],
)
def test_load_rejects_bad_bands(band, message):
    artifact = {"format": "calibrator/v1", "method": "identity", "params": {}, "band": band}
    with pytest.raises(ValueError, match=message):
        load_calibrator(artifact)


def test_band_covers_a_known_truth_about_as_often_as_it_claims():
    covered = []
    for rep in range(8):
        scores, labels, _ = overconfident(400, 100 + rep)
        cal = fit_calibrator(scores, labels, random_state=rep)
        evaluation = np.random.default_rng(rep).beta(0.6, 0.6, 2000)
        truth = _sigmoid(0.5 * np.log(evaluation / (1.0 - evaluation)) + 0.3)
        low, high = cal.predict_interval(evaluation, level=0.9)
        covered.append(np.mean((truth >= low) & (truth <= high)))
    assert 0.75 <= np.mean(covered) <= 1.0


def test_scores_beyond_the_input_clip_keep_their_own_value_inside_the_band():
    # A naive-Bayes-like analyzer: many findings at exactly 1.0 and at 1 - 1e-14,
    # which are right at very different rates.
    rng = np.random.default_rng(9)
    body = rng.random(2000)
    scores = np.concatenate([body, np.full(1000, 1.0 - 1e-14), np.full(1000, 1.0)])
    truth = np.concatenate([body, np.full(1000, 0.6), np.full(1000, 0.95)])
    labels = (rng.random(4000) < truth).astype(np.float64)
    cal = fit_calibrator(scores, labels)
    edge = np.array([0.0, 1e-14, 1.0 - 1e-14, 1.0])
    fitted = cal.predict(edge)
    assert fitted[3] - fitted[2] > 0.2
    assert fitted[3] == pytest.approx(labels[3000:].mean(), abs=0.03)
    low, high = cal.predict_interval(edge)
    assert np.all((low <= fitted) & (fitted <= high))
    for level in (0.5, 0.99):
        low, high = cal.predict_interval(edge, level=level)
        assert np.all((low <= fitted) & (fitted <= high))
