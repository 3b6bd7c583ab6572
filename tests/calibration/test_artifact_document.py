"""docs/artifact.md is enough to apply an artifact: its formulas, in plain Python, agree.

Each map is implemented here from the document alone (the ``math`` module, no numpy), and
compared with the library's ``Calibrator.predict`` on fitted and hand-made artifacts, at the
awkward scores: 0, 1, the clip bounds, table points, bin edges and beyond the ends.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pytest

from app.calibration import fit_calibrator, load_calibrator


def documented(artifact: dict[str, Any], p: float) -> float:
    lo, hi = artifact.get("input_clip", [1e-12, 1 - 1e-12])
    c = min(max(p, lo), hi)
    params = artifact["params"]

    def sigmoid(s: float) -> float:
        return 0.0 if -s > 709.0 else 1.0 / (1.0 + math.exp(-s))

    method = artifact["method"]
    if method == "identity":
        return p
    if method == "platt":
        return sigmoid(params["a"] * (math.log(c) - math.log1p(-c)) + params["b"])
    if method == "beta":
        return sigmoid(params["a"] * math.log(c) - params["b"] * math.log1p(-c) + params["c"])
    if method == "isotonic":
        return interp(p, params["x"], params["y"])
    if method == "histogram":
        inner = params["edges"][1:-1]
        return params["values"][sum(1 for e in inner if e <= p)]
    raise AssertionError(method)


def interp(p: float, x: list[float], y: list[float]) -> float:
    if p <= x[0]:
        return y[0]
    if p >= x[-1]:
        return y[-1]
    i = bisect.bisect_right(x, p) - 1  # the largest index with x_i <= p
    return y[i] + (p - x[i]) * (y[i + 1] - y[i]) / (x[i + 1] - x[i])


def probes(artifact: dict[str, Any]) -> list[float]:
    params = artifact["params"]
    points = [0.0, 1.0, 1e-13, 1e-12, 1 - 1e-12, 0.5, *np.linspace(0, 1, 101)]
    for key in ("x", "edges"):
        for v in params.get(key, []):
            points += [v, max(0.0, v - 1e-9), min(1.0, v + 1e-9)]
    return [float(p) for p in points if 0.0 <= p <= 1.0]


@pytest.mark.parametrize("method", ["identity", "platt", "beta", "isotonic", "histogram"])
def test_fitted_artifacts_apply_as_documented(method: str) -> None:
    rng = np.random.default_rng(3)
    scores = rng.beta(0.5, 0.5, 2000)
    labels = rng.uniform(size=2000) < 0.5 + (scores - 0.5) * 0.4
    artifact = fit_calibrator(scores, labels, method=method).to_artifact()
    points = probes(artifact)
    served = load_calibrator(artifact).predict(points)
    for p, q in zip(points, served, strict=True):
        assert abs(documented(artifact, p) - q) <= 1e-12, (method, p)


def test_hand_made_tables_with_steps_and_scores_outside_the_edges() -> None:
    isotonic = {
        "format": "calibrator/v1",
        "method": "isotonic",
        "params": {"x": [0.2, 0.4, 0.4, 0.8], "y": [0.1, 0.3, 0.6, 0.9]},
    }
    histogram = {
        "format": "calibrator/v1",
        "method": "histogram",
        "params": {"edges": [0.1, 0.3, 0.6, 0.9], "values": [0.2, 0.5, 0.7]},
    }
    for artifact in (isotonic, histogram):
        points = probes(artifact)
        served = load_calibrator(artifact).predict(points)
        for p, q in zip(points, served, strict=True):
            assert documented(artifact, p) == pytest.approx(q, abs=1e-12), (artifact["method"], p)
    # The document's worked cases: on a vertical step the higher point applies; a score on
    # an inner edge belongs to the bin on its right; outside the outer edges, the end bins.
    assert load_calibrator(isotonic).predict([0.4])[0] == 0.6
    assert list(load_calibrator(histogram).predict([0.0, 0.3, 0.95, 1.0])) == [0.2, 0.5, 0.7, 0.7]


def test_a_fitted_band_applies_as_documented() -> None:
    rng = np.random.default_rng(4)
    scores = rng.beta(0.5, 0.5, 1000)
    labels = rng.uniform(size=1000) < 0.5 + (scores - 0.5) * 0.4
    artifact = fit_calibrator(scores, labels).to_artifact()
    band = artifact["band"]
    lo, hi = artifact["input_clip"]
    points = probes(artifact)
    low, high = load_calibrator(artifact).predict_interval(points, level=band["level"])
    for p, a, b in zip(points, low, high, strict=True):
        c = min(max(p, lo), hi)
        assert abs(interp(c, band["x"], band["low"]) - a) <= 1e-12, p
        assert abs(interp(c, band["x"], band["high"]) - b) <= 1e-12, p
        assert a <= documented(artifact, p) <= b
