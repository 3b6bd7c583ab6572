"""Reliability data and diagrams per model version, checked against an independent computation."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import overconfident_feedback, train
from PIL import Image
from scipy.stats import binomtest
from seeding import RECENT_SAMPLES, seed_service, stored_feedback
from sklearn.model_selection import train_test_split

from app.calibration import load_calibrator
from app.config import Settings
from app.dashboard import charts
from app.dashboard.schemas import ReliabilityRead
from app.main import create_app

BIN_KEYS = {"bin", "lower", "upper", "count", "mean_confidence", "observed_rate", "ci_low"}


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    seed_service(client)
    return client


def expected_bins(probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Equal-width bins and Wilson intervals, computed here without the service's code."""
    index = np.minimum(np.floor(probs * 10).astype(int), 9)
    rows = []
    for b in range(10):
        inside = index == b
        n, k = int(inside.sum()), int(labels[inside].sum())
        row = {"bin": b, "count": n}
        if n:
            interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            row |= {
                "mean_confidence": float(probs[inside].mean()),
                "observed_rate": k / n,
                "ci_low": interval.low,
                "ci_high": interval.high,
            }
        rows.append(row)
    return rows


def assert_bins_match(served: list[dict], expected: list[dict]) -> None:
    assert len(served) == 10
    for got, want in zip(served, expected, strict=True):
        assert set(got) >= BIN_KEYS
        assert (got["bin"], got["count"]) == (want["bin"], want["count"])
        assert got["lower"] == pytest.approx(want["bin"] / 10)
        if want["count"] == 0:
            assert got["observed_rate"] is None and got["ci_low"] is None
            continue
        for key in ("mean_confidence", "observed_rate", "ci_low", "ci_high"):
            assert got[key] == pytest.approx(want[key], abs=1e-9), (got["bin"], key)
        assert got["ci_low"] <= got["observed_rate"] <= got["ci_high"]


def calibrator_of(client: TestClient, version: int):
    model = client.get(f"/v1/models/default/{version}").json()
    return load_calibrator(
        {"format": "calibrator/v1", "method": model["method"], "params": model["params"]}
    ), model


def validation_split(client: TestClient, last_feedback_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's held-out 20%, re-derived from the stored feedback (80/20, stratified, seed 0)."""
    rows = [r for r in stored_feedback(client, "default") if r["id"] <= last_feedback_id]
    scores = np.array([r["score"] for r in rows])
    labels = np.array([float(r["label"]) for r in rows])
    _, val_idx = train_test_split(
        np.arange(scores.shape[0]), test_size=0.2, stratify=labels, random_state=0
    )
    return scores[val_idx], labels[val_idx]


def test_active_version_data_matches_recomputation_from_feedback(seeded: TestClient) -> None:
    response = seeded.get("/v1/models/default/1/reliability")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["segment"], body["version"], body["status"]) == ("default", 1, "active")

    calibrator, model = calibrator_of(seeded, 1)
    val_scores, val_labels = validation_split(seeded, model["last_feedback_id"])
    validation = body["validation"]
    assert validation["n_validation"] == val_scores.shape[0] == 80
    assert validation["method"] == model["method"]
    assert validation["production_method"] == "identity"
    # v1 replaced nothing: production was the identity, so its bins are the raw scores'.
    assert_bins_match(validation["production"], expected_bins(val_scores, val_labels))
    assert_bins_match(
        validation["candidate"], expected_bins(calibrator.predict(val_scores), val_labels)
    )

    recent_rows = [
        r for r in stored_feedback(seeded, "default") if r["id"] > model["last_feedback_id"]
    ]
    assert len(recent_rows) == RECENT_SAMPLES
    recent_scores = np.array([r["score"] for r in recent_rows])
    recent_labels = np.array([float(r["label"]) for r in recent_rows])
    recent_probs = calibrator.predict(recent_scores)
    recent = body["recent"]
    assert recent["n"] == RECENT_SAMPLES
    assert recent["after_feedback_id"] == model["last_feedback_id"]
    assert recent["validation_ece"] == pytest.approx(model["metrics"]["ece"])
    assert_bins_match(recent["bins"], expected_bins(recent_probs, recent_labels))
    gaps = [
        abs(b["observed_rate"] - b["mean_confidence"]) * b["count"] / RECENT_SAMPLES
        for b in recent["bins"]
        if b["count"]
    ]
    assert recent["ece"] == pytest.approx(sum(gaps), abs=1e-12)

    # The same records and number as the health report's drift check.
    drift = seeded.get("/health").json()["checks"]["calibration_drift"]["segments"]["default"]
    assert drift["recent_ece"] == pytest.approx(recent["ece"], abs=1e-12)
    assert drift["n_recent"] == recent["n"]


def test_rejected_version_was_compared_with_the_then_active_one(seeded: TestClient) -> None:
    body = seeded.get("/v1/models/default/2/reliability").json()
    assert body["status"] == "rejected"
    assert body["recent"] is None
    v1, _ = calibrator_of(seeded, 1)
    v2, model = calibrator_of(seeded, 2)
    val_scores, val_labels = validation_split(seeded, model["last_feedback_id"])
    assert body["validation"]["production_method"] == v1.method
    assert_bins_match(
        body["validation"]["production"], expected_bins(v1.predict(val_scores), val_labels)
    )
    assert_bins_match(
        body["validation"]["candidate"], expected_bins(v2.predict(val_scores), val_labels)
    )


def test_recent_feedback_is_the_newest_drift_window_records(
    clean_database: str,
) -> None:
    settings = Settings(
        database_url=clean_database, env="test", scheduler_enabled=False, drift_window=50
    )
    with TestClient(create_app(settings)) as client:
        seed_service(client)
        recent = client.get("/v1/models/default/1/reliability").json()["recent"]
        calibrator, model = calibrator_of(client, 1)
        newest = stored_feedback(client, "default")[-50:]
    assert recent["window"] == 50 and recent["n"] == 50
    assert newest[0]["id"] > model["last_feedback_id"]
    scores = np.array([r["score"] for r in newest])
    labels = np.array([float(r["label"]) for r in newest])
    assert_bins_match(recent["bins"], expected_bins(calibrator.predict(scores), labels))


def test_active_version_without_newer_feedback_has_empty_recent_part(client: TestClient) -> None:
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(300)})
    assert train(client)["status"] == "deployed"
    recent = client.get("/v1/models/default/1/reliability").json()["recent"]
    assert recent["n"] == 0 and recent["bins"] == [] and recent["ece"] is None
    svg = client.get("/v1/models/default/1/reliability", params={"format": "svg"})
    assert svg.status_code == 200
    assert "recent-points" not in svg.text


def svg_ids(text: str) -> set[str]:
    root = ET.fromstring(text)
    return {element.get("id") for element in root.iter() if element.get("id")}


def test_svg_diagram_has_diagonal_curves_error_bars_and_histogram(seeded: TestClient) -> None:
    response = seeded.get("/v1/models/default/1/reliability", params={"format": "svg"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    ids = svg_ids(response.text)
    assert "diagonal" in ids
    for series in ("candidate", "production", "recent"):
        assert f"{series}-points" in ids
        assert f"{series}-errorbars" in ids
        assert {f"{series}-count-{b}" for b in range(10)} <= ids

    rejected = seeded.get("/v1/models/default/2/reliability", params={"format": "svg"})
    rejected_ids = svg_ids(rejected.text)
    assert {"diagonal", "candidate-points", "production-points"} <= rejected_ids
    assert "recent-points" not in rejected_ids


def test_svg_points_are_the_served_bins_unconnected(seeded: TestClient) -> None:
    body = seeded.get("/v1/models/default/1/reliability").json()
    svg = seeded.get("/v1/models/default/1/reliability", params={"format": "svg"}).text
    group = next(e for e in ET.fromstring(svg).iter() if e.get("id") == "candidate-points")
    # Markers only: no line joins the bins (the fitted map and its band are the curve).
    assert not [e for e in group if e.tag.endswith("}path")]
    markers = [e for e in group.iter() if e.tag.endswith("}use")]
    pixels = np.array([[float(m.get("x")), float(m.get("y"))] for m in markers])
    filled = [b for b in body["validation"]["candidate"] if b["count"]]
    assert pixels.shape[0] == len(filled)
    # Data to pixels is affine per axis: the markers are the served points exactly when
    # a straight line maps one onto the other.
    for values, coordinate in (
        ([b["mean_confidence"] for b in filled], pixels[:, 0]),
        ([b["observed_rate"] for b in filled], pixels[:, 1]),
    ):
        slope, intercept = np.polyfit(values, coordinate, 1)
        assert np.max(np.abs(slope * np.array(values) + intercept - coordinate)) < 0.01


def test_band_is_the_artifacts_band_around_the_fitted_map(seeded: TestClient) -> None:
    body = seeded.get("/v1/models/default/1/reliability").json()
    artifact = seeded.get("/v1/models/active/artifact").json()
    assert artifact["version"] == 1 and artifact["band"]["level"] == 0.9
    calibrator = load_calibrator(artifact)
    band = body["band"]
    score = np.asarray(band["score"])
    assert band["level"] == 0.9 and score[0] == 0.0 and score[-1] == 1.0
    low, high = calibrator.predict_interval(score, level=0.9)
    assert band["low"] == low.tolist() and band["high"] == high.tolist()
    assert band["fitted"] == calibrator.predict(score).tolist()
    assert np.all(np.asarray(band["low"]) <= np.asarray(band["fitted"]))
    assert np.all(np.asarray(band["fitted"]) <= np.asarray(band["high"]))
    svg = seeded.get("/v1/models/default/1/reliability", params={"format": "svg"}).text
    assert {"band", "band-fitted"} <= svg_ids(svg)


def test_png_diagram(seeded: TestClient) -> None:
    response = seeded.get("/v1/models/default/1/reliability", params={"format": "png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size == (640, 600)


def test_unknown_version_and_bad_format(seeded: TestClient) -> None:
    for fmt in ("json", "svg", "png"):
        missing = seeded.get("/v1/models/default/9/reliability", params={"format": fmt})
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert "version 9" in missing.json()["detail"]
    assert seeded.get("/v1/models/nowhere/1/reliability").status_code == 404
    bad = seeded.get("/v1/models/default/1/reliability", params={"format": "gif"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "format"]
    assert seeded.get("/v1/models/default/0/reliability").status_code == 422


def test_openapi_declares_the_answers(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operation = paths["/v1/models/{segment}/{version}/reliability"]["get"]
    assert {"200", "401", "403", "404", "422", "503"} <= set(operation["responses"])
    content = operation["responses"]["200"]["content"]
    assert {"application/json", "image/svg+xml", "image/png"} <= set(content)
    # Every model-version path names an example version: the fuzzer (tests/test_openapi_fuzz.py)
    # reaches stored versions, and their pictures, through these examples.
    for path, operations in paths.items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in ("segment", "version"):
                    assert parameter["schema"].get("examples") or parameter.get("examples"), path


@pytest.mark.slow  # many pictures in many threads
def test_pictures_drawn_in_parallel_threads_equal_one_drawn_alone(seeded: TestClient) -> None:
    data = ReliabilityRead.model_validate(seeded.get("/v1/models/default/1/reliability").json())
    alone = charts.render(charts.reliability_figure(data), "png")
    with ThreadPoolExecutor(max_workers=8) as pool:
        drawn = list(
            pool.map(lambda _: charts.render(charts.reliability_figure(data), "png"), range(16))
        )
    assert all(picture == alone for picture in drawn)
    served = seeded.get("/v1/models/default/1/reliability", params={"format": "png"}).content
    assert served == alone


def test_bins_observed_at_exactly_zero_and_one_are_drawn(client: TestClient) -> None:
    """Perfectly separable labels: bins at rate 0 and 1 whose Wilson bounds round past the rate.

    Wilson's bound computed in floating point lands a hair inside [0, 1] for some counts (rate 1
    with 10 records, rate 0 with 3), which once made the picture endpoints answer 500.
    """
    rng = np.random.default_rng(5)
    scores = rng.uniform(0.0, 1.0, 400)
    items = [{"score": float(s), "label": bool(s >= 0.5)} for s in scores]
    assert client.post("/v1/feedback/batch", json={"items": items}).status_code == 201
    run = train(client, force=True)
    version = run["model_version"]
    activated = client.post(f"/v1/models/default/{version}/activate", json={})
    assert activated.status_code == 200, activated.text
    # Recent feedback after the training data: 10 right findings near 1, 3 wrong ones near 0.
    recent = [{"score": 0.995, "label": True}] * 10 + [{"score": 0.005, "label": False}] * 3
    assert client.post("/v1/feedback/batch", json={"items": recent}).status_code == 201

    data = client.get(f"/v1/models/default/{version}/reliability").json()
    bins = data["recent"]["bins"]
    assert (bins[9]["count"], bins[9]["observed_rate"]) == (10, 1.0)
    assert (bins[0]["count"], bins[0]["observed_rate"]) == (3, 0.0)
    assert bins[9]["ci_high"] == 1.0 and bins[0]["ci_low"] == 0.0
    every = [*data["recent"]["bins"], *data["validation"]["candidate"]]
    every += data["validation"]["production"]
    for row in every:
        if row["count"]:
            assert row["ci_low"] <= row["observed_rate"] <= row["ci_high"]
    for fmt, media in (("svg", "image/svg+xml"), ("png", "image/png")):
        picture = client.get(f"/v1/models/default/{version}/reliability", params={"format": fmt})
        assert picture.status_code == 200, picture.text
        assert picture.headers["content-type"].startswith(media)


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_stored_bins_with_bounds_a_hair_past_the_rate_are_drawn(fmt: str) -> None:
    # Versions trained before the bounds were clamped keep such numbers in their stored run.
    below_one = 1.0 - 2.0**-52
    rows = [
        {"bin": 0, "lower": 0.0, "upper": 0.1, "count": 3, "mean_confidence": 0.05,
         "observed_rate": 0.0, "ci_low": 1e-17, "ci_high": 0.56},
        {"bin": 9, "lower": 0.9, "upper": 1.0, "count": 10, "mean_confidence": 0.95,
         "observed_rate": 1.0, "ci_low": 0.72, "ci_high": below_one},
    ]  # fmt: skip
    data = ReliabilityRead.model_validate(
        {
            "segment": "default",
            "version": 1,
            "status": "active",
            "method": "isotonic",
            "validation": {
                "training_run_id": 1,
                "n_validation": 13,
                "method": "isotonic",
                "production_method": None,
                "candidate": rows,
                "production": rows,
            },
            "recent": None,
        }
    )
    picture = charts.render(charts.reliability_figure(data), fmt)
    assert picture.startswith(b"\x89PNG" if fmt == "png" else b"<?xml")
