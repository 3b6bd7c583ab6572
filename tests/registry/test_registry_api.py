"""The registry over HTTP: versions, promotion, rollback, history, artifact caching, calibrate."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import overconfident_feedback, train

from app.calibration import load_calibrator


@pytest.fixture
def two_versions(client: TestClient) -> TestClient:
    """Version 1 active (deployed), version 2 rejected (same data, forced)."""
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400)})
    assert train(client)["status"] == "deployed"
    assert train(client, force=True)["status"] == "rejected"
    return client


def test_versions_are_listed_and_fetched(two_versions: TestClient) -> None:
    client = two_versions
    page = client.get("/v1/models", params={"segment": "default"}).json()
    assert [(m["version"], m["status"]) for m in page["items"]] == [(2, "rejected"), (1, "active")]
    one = client.get("/v1/models/default/1").json()
    for key in (
        "segment",
        "version",
        "method",
        "status",
        "metrics",
        "n_train",
        "n_validation",
        "created_at",
        "activated_at",
    ):
        assert key in one
    assert {"ece", "brier", "log_loss"} <= set(one["metrics"])
    missing = client.get("/v1/models/default/9")
    assert missing.status_code == 404 and "version 9" in missing.json()["detail"]
    assert (
        client.get("/v1/models", params={"status": "rejected"}).json()["items"][0]["version"] == 2
    )


def test_rollback_and_promotion_are_logged_as_history(two_versions: TestClient) -> None:
    client = two_versions
    promoted = client.post("/v1/models/default/2/activate", json={"reason": "try it"})
    assert promoted.status_code == 200
    assert promoted.json()["status"] == "active" and promoted.json()["version"] == 2
    assert client.get("/v1/models/default/1").json()["status"] == "archived"

    rolled_back = client.post("/v1/models/default/1/activate", json={"expected_active_version": 2})
    assert rolled_back.status_code == 200
    again = client.post("/v1/models/default/1/activate")
    assert again.status_code == 200 and again.json()["version"] == 1

    history = client.get("/v1/models/history", params={"segment": "default"}).json()["items"]
    assert [(p["version"], p["event"]) for p in history] == [
        (1, "rolled_back"),
        (2, "activated"),
        (1, "activated"),
    ]
    assert history[0]["live_until"] is None
    assert history[1]["live_until"] == history[0]["live_from"]
    assert history[1]["actor"] == "api:anonymous" and history[1]["reason"] == "try it"
    assert history[2]["actor"].startswith("training-run:")

    during_v2 = datetime.fromisoformat(history[1]["live_from"]) + timedelta(microseconds=1)
    live = client.get(
        "/v1/models/history", params={"segment": "default", "at": during_v2.isoformat()}
    ).json()["items"]
    assert [p["version"] for p in live] == [2]
    before_any = client.get(
        "/v1/models/history", params={"segment": "default", "at": "2001-01-01T00:00:00Z"}
    ).json()["items"]
    assert before_any == []


def test_activation_with_stale_expectation_is_409(two_versions: TestClient) -> None:
    client = two_versions
    conflict = client.post("/v1/models/default/2/activate", json={"expected_active_version": 2})
    assert conflict.status_code == 409
    assert "active version 1" in conflict.json()["detail"]
    assert client.get("/v1/models/active").json()["version"] == 1
    assert client.post("/v1/models/default/7/activate").status_code == 404
    bad = client.post("/v1/models/default/2/activate", json={"expected_active_version": "1"})
    assert bad.status_code == 422


def test_artifact_has_a_strong_etag_and_revalidates(two_versions: TestClient) -> None:
    client = two_versions
    response = client.get("/v1/models/active/artifact")
    assert response.status_code == 200
    etag = response.headers["ETag"]
    assert etag == f'"{hashlib.sha256(response.content).hexdigest()}"'
    assert response.headers["Cache-Control"] == "no-cache"
    artifact = response.json()
    assert artifact["format"] == "calibrator/v1"
    assert (artifact["segment"], artifact["version"]) == ("default", 1)
    assert {"method", "params", "input_clip", "trained_at", "metrics"} <= set(artifact)

    cached = client.get("/v1/models/active/artifact", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["ETag"] == etag

    client.post("/v1/models/default/2/activate")
    changed = client.get("/v1/models/active/artifact", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json()["version"] == 2


def test_no_active_model_is_404(client: TestClient) -> None:
    for path in ("/v1/models/active", "/v1/models/active/artifact"):
        response = client.get(path, params={"segment": "nothing"})
        assert response.status_code == 404
        assert "no active model" in response.json()["detail"]
    response = client.post("/v1/calibrate", json={"scores": [0.5], "segment": "nothing"})
    assert response.status_code == 404


def test_server_calibration_equals_local_apply_of_the_artifact(two_versions: TestClient) -> None:
    client = two_versions
    scores = [0.0, 1e-15, 0.05, 0.1, 0.3333, 0.5, 0.77, 0.9, 0.999999, 1.0]
    served = client.post("/v1/calibrate", json={"scores": scores}).json()
    assert served["model_version"] == 1
    artifact = json.loads(client.get("/v1/models/active/artifact").content)
    local = load_calibrator(artifact).predict(np.array(scores))
    assert np.max(np.abs(np.array(served["calibrated"]) - local)) <= 1e-12
    assert served["calibrated"] == sorted(served["calibrated"])


@pytest.mark.parametrize(
    "body",
    [
        '{"scores": [0.5, NaN]}',
        '{"scores": [0.5, 1.5]}',
        '{"scores": ["0.5"]}',
        '{"scores": []}',
        '{"scores": [0.5], "segment": "no spaces allowed"}',
    ],
)
def test_calibrate_rejects_bad_scores(client: TestClient, body: str) -> None:
    response = client.post(
        "/v1/calibrate", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][1] in ("scores", "segment")


def test_cached_calibrators_and_bytes_answer_as_the_first_request_and_follow_activation(
    two_versions: TestClient,
) -> None:
    # The first request loads the calibrator and makes the bytes; the next are answered from
    # the caches keyed by artifact hash, and must not outlive an activation.
    client = two_versions
    scores = [0.02, 0.4, 0.6, 0.98]
    first, again = (client.post("/v1/calibrate", json={"scores": scores}) for _ in range(2))
    assert first.json() == again.json() and again.json()["model_version"] == 1
    assert again.headers["X-Calibrator-Segment"] == "default"
    body, body_again = (client.get("/v1/models/active/artifact") for _ in range(2))
    assert body.content == body_again.content
    assert body.headers["ETag"] == body_again.headers["ETag"]
    assert body_again.headers["X-Calibrator-Segment"] == "default"

    client.post("/v1/models/default/2/activate")
    switched = client.post("/v1/calibrate", json={"scores": scores}).json()
    artifact = client.get("/v1/models/active/artifact")
    assert (switched["model_version"], artifact.json()["version"]) == (2, 2)
    local = load_calibrator(artifact.json()).predict(np.array(scores))
    assert np.max(np.abs(np.array(switched["calibrated"]) - local)) <= 1e-12

    client.post("/v1/models/default/1/activate")
    back = client.post("/v1/calibrate", json={"scores": scores})
    assert back.json() == first.json()
    restored = client.get(
        "/v1/models/active/artifact", headers={"If-None-Match": body.headers["ETag"]}
    )
    assert restored.status_code == 304
