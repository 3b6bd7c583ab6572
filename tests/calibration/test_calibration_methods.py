"""Properties of every calibration method: monotone, in range, exact JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from app.calibration import (
    ARTIFACT_FORMAT,
    METHODS,
    Calibrator,
    evaluate,
    fit_calibrator,
    identity_calibrator,
    load_calibrator,
)
from app.calibration.methods import _fit_isotonic

FITTED = [m for m in METHODS if m != "identity"]


@st.composite
def scored_samples(draw):
    n = draw(st.integers(min_value=4, max_value=300))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "saturated", "ties", "extremes"]))
    if kind == "uniform":
        scores = rng.random(n)
    elif kind == "saturated":
        scores = 1.0 / (1.0 + np.exp(-rng.normal(0.0, 25.0, n)))
    elif kind == "ties":
        scores = rng.choice([0.1, 0.35, 0.5, 0.9], size=n)
    else:
        scores = rng.choice([0.0, 1.0, 0.5, 1e-13, 1.0 - 1e-13], size=n)
    labels = (rng.random(n) < np.clip(scores, 0.2, 0.8)).astype(np.int64)
    labels[:2], labels[2:4] = 0, 1
    return scores, labels


def roundtrip(cal: Calibrator) -> Calibrator:
    return load_calibrator(json.loads(json.dumps(cal.to_artifact())))


@settings(max_examples=30, deadline=None)
@given(data=scored_samples(), method=st.sampled_from(METHODS))
def test_every_method_is_monotone_in_range_and_round_trips(data, method):
    scores, labels = data
    cal = fit_calibrator(scores, labels, method=method)
    grid = np.concatenate([[0.0, 1e-300, 1e-13, 1.0 - 1e-13, 1.0], np.linspace(0.0, 1.0, 501)])
    grid = np.sort(np.concatenate([grid, scores]))
    out = cal.predict(grid)
    assert out.dtype == np.float64 and out.shape == grid.shape
    assert np.all((out >= 0.0) & (out <= 1.0))
    assert np.all(np.diff(out) >= 0.0)
    again = roundtrip(cal)
    assert again.method == cal.method and again.params == cal.params
    np.testing.assert_allclose(again.predict(grid), out, rtol=0, atol=1e-12)
    metrics = evaluate(cal.predict(scores), labels)
    assert 0.0 <= metrics["ece"] <= metrics["mce"] <= 1.0
    assert 0.0 <= metrics["brier"] <= 1.0


@pytest.mark.parametrize("method", FITTED)
def test_artifact_is_plain_json(method):
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    cal = fit_calibrator(scores, rng.random(500) < scores, method=method)
    art = cal.to_artifact()
    assert set(art) == {"format", "method", "params", "input_clip"}
    assert art["format"] == ARTIFACT_FORMAT == "calibrator/v1"
    assert art["input_clip"] == [1e-12, 1.0 - 1e-12]
    assert cal.input_clip == (1e-12, 1.0 - 1e-12)
    for value in art["params"].values():
        assert type(value) is float or all(type(v) is float for v in value)
    assert json.loads(json.dumps(art)) == art


@pytest.mark.parametrize("method", FITTED)
def test_nonparametric_outputs_avoid_exact_zero_and_one(method):
    scores = np.r_[np.zeros(50), np.ones(50)]
    labels = np.r_[np.zeros(48), [1, 1], np.ones(48), [0, 0]]
    out = fit_calibrator(scores, labels, method=method).predict(np.array([0.0, 1.0]))
    assert 0.0 < out[0] < 0.2 and 0.8 < out[1] < 1.0


def test_platt_matches_weighted_logistic_regression_on_logits():
    rng = np.random.default_rng(1)
    scores = rng.beta(2.0, 3.0, 2000)
    labels = rng.random(2000) < 1.0 / (1.0 + np.exp(-(1.7 * np.log(scores / (1 - scores)) - 0.4)))
    cal = fit_calibrator(scores, labels, method="platt")
    n_pos, n_neg = labels.sum(), (~labels).sum()
    target = np.where(labels, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = np.log(scores / (1 - scores))[:, None]
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(
        np.r_[z, z], np.r_[np.ones(2000), np.zeros(2000)], sample_weight=np.r_[target, 1 - target]
    )
    assert cal.params["a"] == pytest.approx(reference.coef_[0, 0], rel=1e-4)
    assert cal.params["b"] == pytest.approx(reference.intercept_[0], abs=1e-4)
    assert cal.params["a"] == pytest.approx(1.7, rel=0.15)


def test_beta_contains_identity_and_keeps_nonnegative_shape():
    rng = np.random.default_rng(2)
    scores = rng.random(20000)
    cal = fit_calibrator(scores, rng.random(20000) < scores, method="beta")
    assert cal.params["a"] == pytest.approx(1.0, abs=0.1)
    assert cal.params["b"] == pytest.approx(1.0, abs=0.1)
    # Scores anti-correlated with the outcome: the best monotone map is flat.
    flipped = fit_calibrator(scores, rng.random(20000) < 1 - scores, method="beta")
    assert flipped.params["a"] >= 0.0 and flipped.params["b"] >= 0.0


def test_unshrunk_isotonic_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(3000), 2)
    labels = (rng.random(3000) < scores**2).astype(float)
    ours = _fit_isotonic(scores, labels, prior_strength=0.0)
    ref = IsotonicRegression(out_of_bounds="clip").fit(scores, labels)
    grid = np.linspace(0.0, 1.0, 2001)
    np.testing.assert_allclose(
        np.interp(grid, ours["x"], ours["y"]), ref.predict(grid), rtol=0, atol=1e-12
    )
    shrunk = fit_calibrator(scores, labels, method="isotonic")
    assert len(shrunk.params["x"]) <= len(ref.X_thresholds_)


def test_histogram_is_a_nondecreasing_step_function():
    rng = np.random.default_rng(4)
    scores = rng.random(5000)
    cal = fit_calibrator(scores, rng.random(5000) < scores, method="histogram")
    edges, values = cal.params["edges"], cal.params["values"]
    assert edges[0] == 0.0 and edges[-1] == 1.0 and len(edges) == len(values) + 1
    assert np.all(np.diff(values) > 0.0)
    mids = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
    np.testing.assert_array_equal(cal.predict(mids), values)


@pytest.mark.parametrize("method", METHODS)
def test_edge_case_all_scores_equal(method):
    scores = np.full(40, 0.3)
    labels = np.r_[np.ones(10), np.zeros(30)]
    out = fit_calibrator(scores, labels, method=method).predict(np.array([0.0, 0.3, 1.0]))
    if method == "identity":
        np.testing.assert_array_equal(out, [0.0, 0.3, 1.0])
    else:
        assert out[1] == pytest.approx(0.25, abs=0.05)
        assert np.all(np.diff(out) >= 0.0)


@pytest.mark.parametrize("method", [*METHODS, "auto"])
def test_edge_case_two_samples_per_class(method):
    cal = fit_calibrator([0.2, 0.4, 0.6, 0.8], [0, 1, 0, 1], method=method)
    out = cal.predict(np.linspace(0, 1, 11))
    assert np.all(np.diff(out) >= 0.0) and np.all((out >= 0) & (out <= 1))


def test_saturated_scores_keep_their_information():
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, 30.0, 4000)
    scores = 1.0 / (1.0 + np.exp(-logits))
    labels = rng.random(4000) < 1.0 / (1.0 + np.exp(-logits / 10.0))
    for method in ("platt", "beta"):
        out = fit_calibrator(scores, labels, method=method).predict(np.array([1e-10, 1e-5, 0.5]))
        assert out[0] < out[1] < out[2]


def test_identity_calibrator():
    cal = identity_calibrator()
    assert cal.method == "identity" and cal.params == {} and cal.selection is None
    np.testing.assert_array_equal(cal.predict([0.0, 0.25, 1.0]), [0.0, 0.25, 1.0])
    assert roundtrip(cal).predict([0.5])[0] == 0.5


def test_load_ignores_extra_keys():
    art = {
        "format": "calibrator/v1",
        "segment": "default",
        "version": 3,
        "method": "platt",
        "params": {"a": 1.7, "b": -0.4},
        "input_clip": [1e-12, 0.999999999999],
        "trained_at": "2024-01-01T00:00:00Z",
        "metrics": {"ece": 0.01},
    }
    cal = load_calibrator(art)
    expected = 1.0 / (1.0 + np.exp(-(1.7 * np.log(0.3 / 0.7) - 0.4)))
    assert cal.predict([0.3])[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        ({"format": "calibrator/v2", "method": "platt", "params": {}}, "'calibrator/v2'"),
        ({"method": "platt", "params": {}}, "unknown artifact format None"),
        ({"format": "calibrator/v1", "method": "spline", "params": {}}, "'spline'"),
        ({"format": "calibrator/v1", "method": "platt"}, "no 'params'"),
        ({"format": "calibrator/v1", "method": "platt", "params": {"a": 1.0}}, "missing 'b'"),
        (
            {"format": "calibrator/v1", "method": "platt", "params": {"a": -1.0, "b": 0}},
            "'a' must be >= 0",
        ),
        (
            {"format": "calibrator/v1", "method": "beta", "params": {"a": 1, "b": "x", "c": 0}},
            "'b' must be a number",
        ),
        (
            {"format": "calibrator/v1", "method": "isotonic", "params": {"x": [0, 1], "y": [1]}},
            "differ in length",
        ),
        (
            {"format": "calibrator/v1", "method": "isotonic", "params": {"x": [0, 1], "y": [1, 0]}},
            "'y' must be non-decreasing",
        ),
        (
            {
                "format": "calibrator/v1",
                "method": "histogram",
                "params": {"edges": [0, 0.5, 1], "values": [0.1]},
            },
            "len(edges) == len(values) + 1",
        ),
        (
            {
                "format": "calibrator/v1",
                "method": "histogram",
                "params": {"edges": [0, 1], "values": [float("nan")]},
            },
            "finite",
        ),
        (
            {"format": "calibrator/v1", "method": "identity", "params": {}, "input_clip": [1, 0]},
            "input_clip",
        ),
    ],
)
def test_load_rejects_bad_artifacts(artifact, message):
    with pytest.raises(ValueError, match=None) as info:
        load_calibrator(artifact)
    assert message in str(info.value)


def test_fit_rejects_unknown_method():
    with pytest.raises(ValueError, match="'spline'"):
        fit_calibrator([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], method="spline")
