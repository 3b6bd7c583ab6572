"""fit_segments: partial pooling toward the pooled calibrator, by how much segments differ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import expit

from app.calibration import Calibrator, fit_calibrator, load_calibrator
from app.calibration.segments import (
    POOLED_SEGMENT,
    SegmentSpread,
    estimate_spread,
    fit_segments,
    fit_with_prior,
    pooled_log_odds,
)


def simulate(sizes, shifts, *, seed: int = 0, slope: float = 0.6):
    """Segments whose true log-odds are ``slope * logit(p) + shift_s``."""
    rng = np.random.default_rng(seed)
    scores, labels, names, truths = [], [], [], {}
    for i, (n, shift) in enumerate(zip(sizes, shifts, strict=True)):
        p = rng.uniform(0.01, 0.99, n)
        q = expit(slope * np.log(p / (1 - p)) + shift)
        scores.append(p)
        labels.append(rng.uniform(size=n) < q)
        names += [f"s{i:02d}"] * n
        truths[f"s{i:02d}"] = (slope, shift)
    return np.concatenate(scores), np.concatenate(labels), np.array(names), truths


def true_map(truth: tuple[float, float], p: np.ndarray) -> np.ndarray:
    slope, shift = truth
    return expit(slope * np.log(p / (1 - p)) + shift)


GRID = np.linspace(0.02, 0.98, 49)


def test_returns_the_pooled_calibrator_and_one_per_segment() -> None:
    scores, labels, names, _ = simulate([200, 50, 8], [0.0, 0.5, -0.5])
    result = fit_segments(scores, labels, names)
    assert set(result) == {POOLED_SEGMENT, "s00", "s01", "s02"}
    pooled = fit_calibrator(scores, labels, random_state=0)
    assert result[POOLED_SEGMENT].method == pooled.method
    assert result[POOLED_SEGMENT].params == pooled.params
    # The pooled calibrator keeps the band of the fit it comes from.
    assert result[POOLED_SEGMENT].to_artifact()["band"] == pooled.to_artifact()["band"]
    for cal in result.values():
        assert isinstance(cal, Calibrator)
        probs = cal.predict(GRID)
        assert np.all(np.diff(probs) >= 0) and probs.min() >= 0 and probs.max() <= 1
        reloaded = load_calibrator(cal.to_artifact())
        np.testing.assert_array_equal(reloaded.predict(GRID), probs)


def test_segments_that_share_one_map_get_the_pooled_map() -> None:
    sizes = [10, 20, 40, 80, 160, 320, 640, 15, 30, 60]
    spurious = 0
    for seed in range(20):
        scores, labels, names, _ = simulate(sizes, [0.0] * len(sizes), seed=seed)
        result = fit_segments(scores, labels, names)
        pooled = result[POOLED_SEGMENT]
        if not SegmentSpread.from_dict(pooled.selection["segment_spread"]).is_zero:
            spurious += 1
            continue
        for name in set(names):
            assert (result[name].method, result[name].params) == (pooled.method, pooled.params)
    # A spread is kept only when a 5% test rejects "no spread": among 20 data sets, 4 or more
    # false positives would happen with probability 1.6%.
    assert spurious <= 3


def test_zero_spread_gives_exactly_the_pooled_calibrator() -> None:
    scores, labels, _, _ = simulate([100], [1.0])
    prior = fit_calibrator(scores, labels, method="beta")
    cal = fit_with_prior(scores[:30], labels[:30], prior, SegmentSpread(0.0, 0.0, 0.0, 5))
    assert (cal.method, cal.params) == (prior.method, prior.params)
    assert cal.selection["pooling"]["pooling_weight"] == 1.0
    assert cal.selection["pooling"]["distance_from_pooled"] == 0.0


def test_large_segments_follow_their_data_and_small_ones_sit_between() -> None:
    rng = np.random.default_rng(11)
    shifts = rng.normal(0.0, 1.0, 30)
    sizes = np.where(np.arange(30) % 3 == 0, 2000, 15)
    scores, labels, names, truths = simulate(sizes, shifts, seed=11)
    result = fit_segments(scores, labels, names)
    pooled = result[POOLED_SEGMENT]
    spread = pooled.selection["segment_spread"]
    # Independent check of the empirical-Bayes estimate: the simulated spread is 1.0.
    assert 0.6 < spread["tau_intercept"] < 1.5

    small_errors, small_pooled_errors = [], []
    for name, truth in truths.items():
        own = result[name]
        error = np.abs(own.predict(GRID) - true_map(truth, GRID)).mean()
        pooled_error = np.abs(pooled.predict(GRID) - true_map(truth, GRID)).mean()
        weight = own.selection["pooling"]["pooling_weight"]
        if sizes[int(name[1:])] == 2000:
            assert error < 0.03
            assert weight < 0.05
        else:
            # About 1 / (1 + tau^2 n q(1 - q)) with tau ~ 1 and n = 15: 0.2-0.4.
            assert 0.1 < weight < 0.6
            small_errors.append(error)
            small_pooled_errors.append(pooled_error)
    # On average (not every one: 15 labels can mislead) small segments gain on the pooled map.
    assert np.mean(small_errors) < 0.9 * np.mean(small_pooled_errors)


def test_pooling_weight_falls_as_a_segment_grows() -> None:
    scores, labels, _, _ = simulate([3000], [0.0], seed=2)
    prior = fit_calibrator(scores, labels, method="platt")
    spread = SegmentSpread(0.5, 0.2, 0.0, 10)
    weights = []
    for n in (10, 40, 160, 640):
        s, y, _, _ = simulate([n], [1.0], seed=n)
        weights.append(fit_with_prior(s, y, prior, spread).selection["pooling"]["pooling_weight"])
    assert all(a > b for a, b in itertools.pairwise(weights))


@pytest.mark.parametrize("method", ["identity", "platt", "beta", "isotonic", "histogram"])
def test_a_segment_map_is_the_recalibrated_prior_in_the_prior_method(method: str) -> None:
    scores, labels, _, _ = simulate([2000], [0.3], seed=4)
    prior = fit_calibrator(scores, labels, method=method)
    s, y, _, _ = simulate([300], [1.0], seed=5)
    spread = SegmentSpread(0.8, 0.3, 0.1, 12)
    cal = fit_with_prior(s, y, prior, spread)
    assert cal.method == (prior.method if method != "identity" else "platt")
    info = cal.selection["pooling"]
    slope, intercept = info["slope"], info["intercept"]
    shift = intercept - (slope - 1.0) * spread.center
    # Where the prior is exact (parametric maps, table knots) the composition is exact.
    points = np.asarray(prior.params["x"]) if method == "isotonic" else GRID
    expected = expit(slope * pooled_log_odds(prior, points) + shift)
    np.testing.assert_allclose(cal.predict(points), expected, rtol=1e-9, atol=1e-12)
    assert info["intercept"] > 0  # this segment's labels run above the prior's map


def test_estimated_spread_is_zero_for_a_single_segment() -> None:
    scores, labels, names, _ = simulate([300], [0.0])
    prior = fit_calibrator(scores, labels)
    spread = estimate_spread(prior, scores, labels, names)
    assert spread.is_zero and spread.n_segments == 1


def test_bad_input_names_the_problem() -> None:
    scores, labels, names, _ = simulate([50, 50], [0.0, 0.0])
    with pytest.raises(ValueError, match="reserved"):
        fit_segments(scores, labels, np.where(names == "s00", POOLED_SEGMENT, names))
    with pytest.raises(ValueError, match="one name per score"):
        fit_segments(scores, labels, names[:-1])
    with pytest.raises(ValueError, match="NaN"):
        fit_segments(np.append(scores[:-1], np.nan), labels, names)
    with pytest.raises(ValueError, match="segment spread field 'tau_slope'"):
        SegmentSpread.from_dict(
            {"tau_intercept": 1.0, "tau_slope": -1, "center": 0, "n_segments": 3}
        )


def test_small_segments_are_pulled_toward_the_typical_segment_not_the_largest() -> None:
    # One segment of 4,000 labels runs 1.5 above the others on the log-odds; 30 segments of
    # 30 labels share one map. The pooled fit leans toward the big one; the prior mean does not.
    sizes = [4000] + [30] * 30
    shifts = [1.5] + [0.0] * 30
    scores, labels, names, truths = simulate(sizes, shifts, seed=7)
    result = fit_segments(scores, labels, names)
    spread = SegmentSpread.from_dict(result[POOLED_SEGMENT].selection["segment_spread"])
    assert spread.mean_intercept < -0.5
    small = [f"s{i:02d}" for i in range(1, 31)]
    without_mean = SegmentSpread(
        spread.tau_intercept, spread.tau_slope, spread.center, spread.n_segments
    )
    errors, errors_without = [], []
    for name in small:
        rows = names == name
        truth = true_map(truths[name], GRID)
        errors.append(np.abs(result[name].predict(GRID) - truth).mean())
        zero_mean = fit_with_prior(scores[rows], labels[rows], result[POOLED_SEGMENT], without_mean)
        errors_without.append(np.abs(zero_mean.predict(GRID) - truth).mean())
    assert np.mean(errors) < 0.7 * np.mean(errors_without)


def test_spreads_stored_without_prior_means_read_as_zero_means() -> None:
    stored = {"tau_intercept": 0.4, "tau_slope": 0.1, "center": -0.2, "n_segments": 8}
    spread = SegmentSpread.from_dict(stored)
    assert spread.mean == (0.0, 0.0)
    assert SegmentSpread.from_dict(spread.to_dict()) == spread
    with pytest.raises(ValueError, match="segment spread field 'mean_slope'"):
        SegmentSpread.from_dict({**stored, "mean_slope": "x"})


def test_segment_band_contains_its_map_narrows_with_labels_and_covers_the_truth() -> None:
    sizes = [8, 15, 30, 60, 120, 250, 500, 1000] * 3
    rng = np.random.default_rng(3)
    shifts = rng.normal(0.0, 0.5, len(sizes))
    scores, labels, names, truths = simulate(sizes, shifts, seed=3)
    result = fit_segments(scores, labels, names)
    widths, covered = {}, []
    for name, truth in truths.items():
        cal = result[name]
        low, high = cal.predict_interval(GRID)
        probs = cal.predict(GRID)
        assert np.all(low <= probs) and np.all(probs <= high)
        reloaded = load_calibrator(cal.to_artifact())
        np.testing.assert_array_equal(reloaded.predict_interval(GRID)[0], low)
        n = int((names == name).sum())
        widths.setdefault(n, []).append(float(np.mean(high - low)))
        true = true_map(truth, GRID)
        covered.append(float(np.mean((low <= true) & (true <= high))))
    mean_width = [np.mean(widths[n]) for n in sorted(widths)]
    assert all(a > b for a, b in itertools.pairwise(mean_width))
    # A 90% band: over 24 segments the share of grid points covered is near 0.9.
    assert 0.8 <= np.mean(covered) <= 0.99
