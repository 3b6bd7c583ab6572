"""The artifact's apply code exists once: the client's module, used by the service too."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from calibration_client.artifact import ArtifactCalibrator, band_interval, load_artifact

from app.calibration import fit_calibrator, load_calibrator
from app.calibration.methods import Calibrator

METHODS = ["identity", "platt", "beta", "isotonic", "histogram"]


def _data(n: int = 2000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 1.0, n)
    labels = (rng.uniform(0.0, 1.0, n) < 0.5 + (scores - 0.5) * 0.4).astype(float)
    return scores, labels


def test_the_service_calibrator_is_the_client_calibrator() -> None:
    assert issubclass(Calibrator, ArtifactCalibrator)
    assert Calibrator.predict is ArtifactCalibrator.predict


@pytest.mark.parametrize("method", METHODS)
def test_client_and_service_give_the_same_bits(method: str) -> None:
    scores, labels = _data()
    fitted = fit_calibrator(scores, labels, method=method, random_state=0)
    # Through JSON, as the analyzer receives it.
    document = json.loads(json.dumps(fitted.to_artifact()))
    probe = np.concatenate([[0.0, 1e-15, 1e-12, 0.5, 1 - 1e-12, 1.0], _data(500, seed=9)[0]])
    client_side = load_artifact(document).predict(probe)
    assert np.array_equal(client_side, fitted.predict(probe))
    assert np.array_equal(client_side, load_calibrator(document).predict(probe))


def test_band_is_interpolated_on_the_clipped_score_and_flat_beyond_the_ends() -> None:
    band = {"level": 0.9, "x": [0.2, 0.5, 0.8], "low": [0.1, 0.3, 0.6], "high": [0.3, 0.6, 0.9]}
    scores = [0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0]
    low, high = band_interval(band, scores)
    # By hand: halfway between two points is the mean of their bounds; outside, the end value.
    assert low.tolist() == pytest.approx([0.1, 0.1, 0.2, 0.3, 0.45, 0.6, 0.6], abs=1e-15)
    assert high.tolist() == pytest.approx([0.3, 0.3, 0.45, 0.6, 0.75, 0.9, 0.9], abs=1e-15)

    clipped = {"level": 0.9, "x": [0.0, 1e-6], "low": [0.0, 1.0], "high": [1.0, 1.0]}
    low, _ = band_interval(clipped, [0.0], input_clip=(1e-7, 1 - 1e-7))
    assert low[0] == pytest.approx(0.1, abs=1e-12)  # 0 is clipped to 1e-7 first


def test_an_artifact_with_a_band_offers_the_interval_and_old_readers_ignore_it() -> None:
    scores, labels = _data()
    document = fit_calibrator(scores, labels, method="platt", random_state=0).to_artifact()
    document["band"] = {"level": 0.9, "x": [0.0, 1.0], "low": [0.0, 0.5], "high": [0.5, 1.0]}
    calibrator = load_artifact(document)
    low, high = calibrator.predict_interval([0.5])
    assert (low[0], high[0]) == pytest.approx((0.25, 0.75))
    assert np.array_equal(load_calibrator(document).predict([0.5]), calibrator.predict([0.5]))
    with pytest.raises(ValueError, match="no band"):
        load_artifact({k: v for k, v in document.items() if k != "band"}).predict_interval([0.5])


@pytest.mark.parametrize(
    ("band", "message"),
    [
        ({"level": 1.5, "x": [0.0], "low": [0.0], "high": [1.0]}, "level"),
        ({"level": 0.9, "x": [0.0, 1.0], "low": [0.0], "high": [1.0, 1.0]}, "differ in length"),
        ({"level": 0.9, "x": [0.0], "low": [0.7], "high": [0.2]}, "low <= high"),
        ({"level": 0.9, "x": [0.0], "low": [0.0], "high": [1.5]}, "<= 1"),
        ({"level": 0.9, "x": [0.5, 0.1], "low": [0.0, 0.0], "high": [1.0, 1.0]}, "x"),
    ],
)
def test_a_bad_band_is_refused_by_name(band: dict, message: str) -> None:
    document = {"format": "calibrator/v1", "method": "identity", "params": {}, "band": band}
    with pytest.raises(ValueError, match=message):
        load_artifact(document)


def test_the_client_package_loads_no_server_library() -> None:
    code = (
        "import json, sys, calibration_client, calibration_client.client\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    roots = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert roots & {"app", "fastapi", "sqlalchemy", "sklearn", "scipy", "pydantic"} == set()
