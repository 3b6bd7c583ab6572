"""Segments over HTTP: the pooled calibrator, small segments that borrow from it, the fallback."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import train
from scipy.special import expit
from sklearn.metrics import brier_score_loss, log_loss

from app.calibration import load_calibrator

POOLED = "_pooled"


def segment_feedback(
    n: int, *, segment: str, shift: float, slope: float = 0.5, seed: int = 0
) -> list[dict]:
    """An analyzer over-confident by ``slope`` on the log-odds, off by ``shift`` in this segment."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.02, 0.98, n)
    truth = expit(slope * np.log(scores / (1.0 - scores)) + shift)
    labels = rng.uniform(size=n) < truth
    return [
        {"score": float(s), "label": bool(y), "segment": segment}
        for s, y in zip(scores, labels, strict=True)
    ]


def post(client: TestClient, items: list[dict]) -> None:
    response = client.post("/v1/feedback/batch", json={"items": items})
    assert response.status_code == 201, response.text


def seed_segments(client: TestClient, seed: int = 0) -> None:
    """Three sizeable segments whose maps differ by a clear intercept shift."""
    for i, (name, shift) in enumerate((("alpha", 0.0), ("beta", 1.2), ("gamma", -1.2))):
        post(client, segment_feedback(400, segment=name, shift=shift, seed=seed * 10 + i))


def artifact(client: TestClient, segment: str):
    return client.get("/v1/models/active/artifact", params={"segment": segment})


def test_pooled_is_a_reserved_name_for_feedback(client: TestClient) -> None:
    one = client.post("/v1/feedback", json={"score": 0.5, "label": True, "segment": POOLED})
    assert one.status_code == 422
    assert one.json()["detail"][0]["loc"][-1] == "segment"
    batch = client.post(
        "/v1/feedback/batch",
        json={
            "items": [
                {"score": 0.5, "label": True},
                {"score": 0.4, "label": False, "segment": POOLED},
            ]
        },
    )
    assert batch.status_code == 422
    assert "segment" in batch.json()["detail"][0]["loc"]
    assert client.get("/v1/feedback/stats").json()["total"] == 0


def test_pooled_trains_on_all_feedback_and_records_how_segments_differ(
    client: TestClient,
) -> None:
    seed_segments(client)
    run = train(client, segment=POOLED)
    assert run["status"] == "deployed", run["reason"]
    results = run["evaluation_results"]
    assert results["n_train"] + results["n_validation"] == 1200
    model = client.get(f"/v1/models/{POOLED}/{run['model_version']}").json()
    spread = model["metrics"]["segment_spread"]
    assert spread["n_segments"] == 3
    # The three segments differ by an intercept shift of 1.2 on the log-odds.
    assert 0.4 < spread["tau_intercept"] < 3.0


def test_a_twenty_label_segment_gets_a_cross_validated_gated_calibrator(
    client: TestClient,
) -> None:
    seed_segments(client)
    # 16 of 20 findings right whatever the score: far from what the other segments share.
    tiny = [
        {"score": float(s), "label": i % 5 != 0, "segment": "tiny"}
        for i, s in enumerate(np.linspace(0.05, 0.95, 20))
    ]
    post(client, tiny)
    before = train(client, segment="tiny")
    assert before["status"] == "skipped"
    assert "at least 50" in before["reason"]

    assert train(client, segment=POOLED)["status"] == "deployed"
    pooled_art = artifact(client, POOLED).json()
    run = train(client, segment="tiny", force=True)
    assert run["status"] in ("deployed", "rejected"), run["reason"]
    results = run["evaluation_results"]
    assert results["gate"] == "cross_validation"
    assert results["production_segment"] == POOLED
    assert results["n_train"] == 20

    # Production is the pooled calibrator, scored on all 20 labels: recompute independently.
    items = client.get("/v1/feedback", params={"segment": "tiny", "limit": 100}).json()["items"]
    scores = np.array([item["score"] for item in items])
    labels = np.array([item["label"] for item in items], dtype=float)
    pooled_probs = load_calibrator(pooled_art).predict(scores)
    assert results["production"]["log_loss"] == pytest.approx(log_loss(labels, pooled_probs))
    assert results["production"]["brier"] == pytest.approx(brier_score_loss(labels, pooled_probs))
    # The written rule: deploy only if out-of-fold log loss is lower, Brier not higher, and the
    # out-of-fold outcomes do not contradict the fold candidates' bands (a fit under a pooled
    # prior carries its posterior band, so the check is made).
    cand, prod = results["candidate"], results["production"]
    band_check = results["band_check"]
    assert band_check["checked"] is True and band_check["level"] == 0.9
    rule = (
        cand["log_loss"] < prod["log_loss"]
        and cand["brier"] <= prod["brier"]
        and band_check["consistent"]
    )
    assert results["deployed"] is rule
    assert results["prior"]["source"] == "pooled" and results["prior"]["segment"] == POOLED
    # 80% right at every score: the segment's own evidence beats the pooled map.
    assert run["status"] == "deployed"

    own = artifact(client, "tiny")
    assert own.headers["X-Calibrator-Segment"] == "tiny"
    assert own.json()["segment"] == "tiny"
    # Its 90% band, from the correction's posterior and the pooled band, holds its map and is
    # wider than the pooled band: 20 labels say less than 1,200.
    band, pooled_band = own.json()["band"], pooled_art["band"]
    assert band["level"] == 0.9
    own_cal = load_calibrator(own.json())
    x = np.asarray(band["x"])
    assert np.all(np.asarray(band["low"]) <= own_cal.predict(x) + 1e-12)
    assert np.all(own_cal.predict(x) <= np.asarray(band["high"]) + 1e-12)
    width = np.mean(np.subtract(band["high"], band["low"]))
    assert width > np.mean(np.subtract(pooled_band["high"], pooled_band["low"]))
    stats = client.get("/v1/feedback/stats").json()["by_segment"]["tiny"]
    assert stats["served_by"] == "tiny"
    assert 0.0 < stats["pooling_weight"] < 1.0
    distance = np.abs(load_calibrator(own.json()).predict(scores) - pooled_probs).mean()
    assert stats["distance_from_pooled"] == pytest.approx(distance)


def test_segments_below_the_segment_minimum_are_skipped(client: TestClient) -> None:
    seed_segments(client)
    post(client, segment_feedback(9, segment="nine", shift=0.0, seed=5))
    assert train(client, segment=POOLED)["status"] == "deployed"
    run = train(client, segment="nine", force=True)
    assert run["status"] == "skipped"
    assert "at least 10" in run["reason"]


def test_unseen_segments_are_served_the_pooled_calibrator_and_follow_its_rollback(
    client: TestClient,
) -> None:
    assert artifact(client, "unseen").status_code == 404
    assert (
        client.post("/v1/calibrate", json={"scores": [0.3], "segment": "unseen"}).status_code == 404
    )

    seed_segments(client)
    first = train(client, segment=POOLED)
    assert first["status"] == "deployed"
    served = artifact(client, "unseen")
    assert served.status_code == 200
    assert served.headers["X-Calibrator-Segment"] == POOLED
    assert served.json()["segment"] == POOLED and served.json()["version"] == 1
    assert served.headers["ETag"] == artifact(client, POOLED).headers["ETag"]
    etag = served.headers["ETag"]
    assert artifact_with_etag(client, "unseen", etag).status_code == 304

    scores = [0.01, 0.3, 0.5, 0.8, 0.99]
    calibrated = client.post("/v1/calibrate", json={"scores": scores, "segment": "unseen"})
    assert calibrated.status_code == 200
    assert calibrated.headers["X-Calibrator-Segment"] == POOLED
    body = calibrated.json()
    assert body["calibrator_segment"] == POOLED and body["segment"] == "unseen"
    v1 = load_calibrator(served.json())
    assert body["calibrated"] == pytest.approx(v1.predict(np.array(scores)).tolist(), abs=1e-12)

    # A second pooled version, on more data of a different kind, then a rollback to the first.
    post(client, segment_feedback(800, segment="delta", shift=2.5, slope=1.5, seed=7))
    second = train(client, segment=POOLED, force=True)
    assert second["model_version"] == 2
    activate = client.post(f"/v1/models/{POOLED}/2/activate")
    assert activate.status_code == 200
    now = artifact(client, "unseen")
    assert now.json()["version"] == 2 and now.headers["ETag"] != etag
    assert client.post(f"/v1/models/{POOLED}/1/activate").status_code == 200
    back = artifact(client, "unseen")
    assert back.json()["version"] == 1 and back.headers["ETag"] == etag
    again = client.post("/v1/calibrate", json={"scores": scores, "segment": "unseen"}).json()
    assert again["model_version"] == 1
    assert again["calibrated"] == pytest.approx(body["calibrated"], abs=1e-12)
    history = client.get("/v1/models/history", params={"segment": POOLED}).json()["items"]
    assert history[0]["event"] == "rolled_back" and history[0]["version"] == 1


def artifact_with_etag(client: TestClient, segment: str, etag: str):
    return client.get(
        "/v1/models/active/artifact", params={"segment": segment}, headers={"If-None-Match": etag}
    )


def test_health_does_not_alert_on_small_segments_served_by_pooling(client: TestClient) -> None:
    seed_segments(client)
    post(client, segment_feedback(5, segment="few", shift=0.0, seed=3))
    alerts = client.get("/health").json()["alerts"]
    assert any(a["code"] == "insufficient_data" and a["segment"] == "few" for a in alerts)

    assert train(client, segment=POOLED)["status"] == "deployed"
    report = client.get("/health").json()
    assert not any(a.get("segment") == "few" for a in report["alerts"])
    few = report["checks"]["data_availability"]["segments"]["few"]
    assert few["served_by"] == POOLED and few["stored"] == 5
    stats = client.get("/v1/feedback/stats").json()["by_segment"]["few"]
    assert stats["served_by"] == POOLED
    assert stats["pooling_weight"] is None
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert "pooling weight" in page.text and POOLED in page.text


def test_a_single_segment_served_by_pooling_looks_the_same_on_every_endpoint(
    client: TestClient,
) -> None:
    """One segment ("default"): its own candidate equals the pooled map and is not deployed,
    so ``_pooled`` serves it; metadata, artifact and calibrate all say so."""
    post(client, segment_feedback(300, segment="default", shift=0.0, seed=11))
    assert client.get("/v1/models/active").status_code == 404
    assert train(client, segment=POOLED)["status"] == "deployed"
    run = train(client, segment="default", force=True)
    assert run["status"] == "rejected", run["reason"]

    meta = client.get("/v1/models/active", params={"segment": "default"})
    assert meta.status_code == 200
    assert meta.headers["X-Calibrator-Segment"] == POOLED
    assert meta.json()["segment"] == POOLED and meta.json()["version"] == 1
    art = artifact(client, "default")
    assert art.headers["X-Calibrator-Segment"] == POOLED
    assert meta.json()["artifact_sha256"] == art.headers["ETag"].strip('"')
    calibrated = client.post("/v1/calibrate", json={"scores": [0.2, 0.9], "segment": "default"})
    assert calibrated.headers["X-Calibrator-Segment"] == POOLED
    assert calibrated.json()["model_version"] == meta.json()["version"]
    # Its own model, once one is active, answers everywhere instead.
    own = client.post("/v1/models/default/1/activate")
    assert own.status_code == 200
    meta = client.get("/v1/models/active", params={"segment": "default"})
    assert meta.headers["X-Calibrator-Segment"] == "default"
    assert meta.json()["segment"] == "default"
    assert artifact(client, "default").headers["X-Calibrator-Segment"] == "default"


def test_health_checks_drift_of_the_pooled_model_on_all_segments(client: TestClient) -> None:
    seed_segments(client)
    post(client, segment_feedback(5, segment="few", shift=0.0, seed=3))
    assert train(client, segment=POOLED)["status"] == "deployed"
    calm = client.get("/health").json()["checks"]["calibration_drift"]["segments"][POOLED]
    assert calm["n_recent"] == 0 and calm["recent_ece"] is None

    # The analyzer changed everywhere: its labels flipped, in the big segments and in "few".
    flipped = []
    for i, name in enumerate(("alpha", "beta", "gamma", "few")):
        items = segment_feedback(40 if name != "few" else 8, segment=name, shift=0.0, seed=20 + i)
        flipped += [{**item, "label": not item["label"]} for item in items]
    post(client, flipped)
    report = client.get("/health").json()
    drift = report["checks"]["calibration_drift"]["segments"][POOLED]
    assert drift["n_recent"] == 128
    # Independently: the pooled artifact on the 128 records after its training data.
    pooled = load_calibrator(artifact(client, POOLED).json())
    scores = np.array([item["score"] for item in flipped])
    labels = np.array([item["label"] for item in flipped], dtype=float)
    probs = pooled.predict(scores)
    edges = np.linspace(0.0, 1.0, 11)
    bins = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, 9)
    ece = sum(
        abs(probs[bins == b].mean() - labels[bins == b].mean()) * (bins == b).sum()
        for b in range(10)
        if (bins == b).any()
    ) / len(probs)
    assert drift["recent_ece"] == pytest.approx(ece)
    alerts = [a for a in report["alerts"] if a["code"] == "calibration_drift"]
    assert [a["segment"] for a in alerts] == [POOLED]
    # "few" is served by the pooled model: its records count there, it raises nothing itself.
    assert not any(a.get("segment") == "few" for a in report["alerts"])
