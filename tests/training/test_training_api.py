"""Training runs over HTTP on a real database: the rules, the gate, and what gets recorded."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from helpers import overconfident_feedback, train
from sklearn.model_selection import train_test_split
from sqlalchemy import create_engine, insert

from app.calibration import load_calibrator
from app.config import Settings
from app.db import utcnow
from app.main import create_app
from app.training.models import TrainingRun


def post_items(client: TestClient, items: list[dict]) -> None:
    response = client.post("/v1/feedback/batch", json={"items": items})
    assert response.status_code == 201, response.text


def all_feedback(client: TestClient, segment: str = "default") -> tuple[np.ndarray, np.ndarray]:
    scores, labels, cursor = [], [], None
    while True:
        params: dict[str, object] = {"segment": segment, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/feedback", params=params).json()
        scores += [item["score"] for item in page["items"]]
        labels += [float(item["label"]) for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return np.array(scores), np.array(labels)


def hand_ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    total = 0.0
    for b in range(bins):
        members = [i for i, p in enumerate(probs) if min(int(np.floor(p * bins)), bins - 1) == b]
        if members:
            gap = abs(labels[members].mean() - probs[members].mean())
            total += len(members) / len(probs) * gap
    return total


def test_overconfident_analyzer_gets_a_deployed_calibrator(client: TestClient) -> None:
    post_items(client, overconfident_feedback(600))
    run = train(client)
    assert run["status"] == "deployed", run["reason"]
    assert run["trigger"] == "api" and run["model_version"] == 1
    assert run["started_at"] and run["finished_at"] and "ECE improved" in run["reason"]

    results = run["evaluation_results"]
    for key in ("method", "n_train", "n_validation", "threshold", "deployed", "reason"):
        assert key in results
    assert (results["n_train"], results["n_validation"]) == (480, 120)
    assert results["deployed"] is True and results["threshold"] == 0.05
    for side in ("candidate", "production"):
        assert {"ece", "brier", "log_loss"} <= set(results[side])
    assert {"low", "high", "estimate"} <= set(results["bootstrap"]["ece_diff"])

    # Recompute both sides independently: the same split, the downloaded artifact, our own ECE.
    scores, labels = all_feedback(client)
    _, val = train_test_split(
        np.arange(len(scores)), test_size=0.2, stratify=labels, random_state=0
    )
    artifact = client.get("/v1/models/active/artifact").json()
    candidate = load_calibrator(artifact).predict(scores[val])
    assert abs(hand_ece(candidate, labels[val]) - results["candidate"]["ece"]) < 1e-9
    assert abs(hand_ece(scores[val], labels[val]) - results["production"]["ece"]) < 1e-9
    brier = float(np.mean((candidate - labels[val]) ** 2))
    assert abs(brier - results["candidate"]["brier"]) < 1e-12
    production_ece, candidate_ece = results["production"]["ece"], results["candidate"]["ece"]
    expected = (production_ece - candidate_ece) / production_ece
    assert abs(results["ece_improvement"] - expected) < 1e-12

    active = client.get("/v1/models/active").json()
    assert active["version"] == 1 and active["status"] == "active"
    assert active["method"] == results["method"] == artifact["method"]
    assert (active["n_train"], active["n_validation"]) == (480, 120)
    assert active["last_feedback_id"] == run["last_feedback_id"]
    assert active["training_run_id"] == run["id"]

    stats = client.get("/v1/feedback/stats").json()
    assert stats["new_since_last_training"] == 0


def test_too_few_samples_or_one_label_is_skipped(client: TestClient) -> None:
    post_items(client, overconfident_feedback(30))
    run = train(client)
    assert run["status"] == "skipped"
    assert "30 feedback samples" in run["reason"] and "50" in run["reason"]
    assert run["model_version"] is None

    post_items(client, [{"score": 0.9, "label": True, "segment": "ones"}] * 80)
    run = train(client, segment="ones")
    assert run["status"] == "skipped"
    assert "labelled true" in run["reason"]
    assert client.get("/v1/models", params={"segment": "ones"}).json()["items"] == []


def test_interval_and_new_samples_rules_and_force(clean_database: str) -> None:
    settings = Settings(database_url=clean_database, training_interval_days=7)
    with TestClient(create_app(settings)) as client:
        post_items(client, overconfident_feedback(400))
        assert train(client)["status"] == "deployed"
        post_items(client, overconfident_feedback(100, seed=1))
        skipped = train(client)
        assert skipped["status"] == "skipped"
        assert "interval is 7 days" in skipped["reason"]

        forced = train(client, force=True)
        assert forced["status"] in ("deployed", "rejected")
        assert forced["model_version"] == 2

    settings = Settings(database_url=clean_database, training_interval_days=0)
    with TestClient(create_app(settings)) as client:
        post_items(client, overconfident_feedback(20, seed=2))
        run = train(client)
        assert run["status"] == "skipped"
        assert "only 20 new samples" in run["reason"]


def test_rejected_candidate_leaves_the_active_model_untouched(client: TestClient) -> None:
    post_items(client, overconfident_feedback(500))
    deployed = train(client)
    assert deployed["status"] == "deployed"
    artifact_before = client.get("/v1/models/active/artifact")

    rejected = train(client, force=True)
    assert rejected["status"] == "rejected"
    assert "below the 5.0% threshold" in rejected["reason"]
    assert rejected["evaluation_results"]["deployed"] is False
    assert rejected["model_version"] == 2

    active = client.get("/v1/models/active").json()
    assert active["version"] == 1
    assert client.get("/v1/models/default/2").json()["status"] == "rejected"
    artifact_after = client.get("/v1/models/active/artifact")
    assert artifact_after.headers["ETag"] == artifact_before.headers["ETag"]
    history = client.get("/v1/models/history", params={"segment": "default"}).json()["items"]
    assert [period["version"] for period in history] == [1]


def test_second_trigger_while_a_run_is_open_is_409_naming_it(
    client: TestClient, clean_database: str
) -> None:
    engine = create_engine(clean_database)
    with engine.begin() as connection:
        run_id = connection.execute(
            insert(TrainingRun).returning(TrainingRun.id),
            {
                "segment": "default",
                "trigger": "schedule",
                "status": "running",
                "force": False,
                "created_at": utcnow(),
                "started_at": utcnow(),
                "heartbeat_at": utcnow(),
            },
        ).scalar_one()
    engine.dispose()
    response = client.post("/v1/training-runs", json={"segment": "default"})
    assert response.status_code == 409
    assert f"training run {run_id} is already running" in response.json()["detail"]
    other = client.post("/v1/training-runs", json={"segment": "other"})
    assert other.status_code == 202


def test_runs_are_listed_newest_first_and_unknown_run_is_404(client: TestClient) -> None:
    post_items(client, overconfident_feedback(10))
    first = train(client)
    second = train(client, segment="elsewhere")
    page = client.get("/v1/training-runs").json()
    assert [run["id"] for run in page["items"]] == [second["id"], first["id"]]
    assert (
        client.get("/v1/training-runs", params={"segment": "elsewhere"}).json()["items"][0]["id"]
        == second["id"]
    )
    missing = client.get("/v1/training-runs/999999")
    assert missing.status_code == 404
    assert "999999" in missing.json()["detail"]
    assert client.post("/v1/training-runs", json={"segment": "active"}).status_code == 422
    assert client.post("/v1/training-runs", json={"force": "yes"}).status_code == 422


def test_runs_left_open_by_a_dead_process_are_failed_at_startup(clean_database: str) -> None:
    engine = create_engine(clean_database)
    long_ago = utcnow().replace(year=2020)
    with engine.begin() as connection:
        connection.execute(
            insert(TrainingRun),
            [
                {
                    "segment": "default",
                    "trigger": "api",
                    "status": "running",
                    "force": False,
                    "created_at": long_ago,
                    "started_at": long_ago,
                    "heartbeat_at": long_ago,
                },
                {
                    "segment": "other",
                    "trigger": "api",
                    "status": "queued",
                    "force": False,
                    "created_at": long_ago,
                    "started_at": None,
                    "heartbeat_at": None,
                },
            ],
        )
    engine.dispose()
    with TestClient(create_app(Settings(database_url=clean_database))) as client:
        runs = client.get("/v1/training-runs").json()["items"]
        assert {run["status"] for run in runs} == {"failed"}
        assert all("abandoned" in run["reason"] for run in runs)
        post_items(client, overconfident_feedback(200))
        assert train(client)["status"] == "deployed"


def _version_calibrator(client: TestClient, version: int):
    from app.calibration import ARTIFACT_FORMAT

    model = client.get(f"/v1/models/default/{version}").json()
    return model, load_calibrator(
        {"format": ARTIFACT_FORMAT, "method": model["method"], "params": model["params"]}
    )


def test_training_on_new_feedback_shrinks_toward_the_active_model(clean_database: str) -> None:
    from app.calibration import fit_calibrator

    settings = Settings(database_url=clean_database, training_data="new")
    with TestClient(create_app(settings)) as client:
        post_items(client, overconfident_feedback(600, seed=0))
        first = train(client, force=True)
        assert first["status"] == "deployed", first["reason"]
        assert first["evaluation_results"]["prior"]["source"] == "none"
        model1, previous = _version_calibrator(client, 1)
        assert model1["metrics"]["prior"] == {"source": "none", "segment": None, "version": None}

        # Fewer new labels than the minimum: skipped even when forced, and the reason says so.
        post_items(client, overconfident_feedback(20, seed=1))
        skipped = train(client, force=True)
        assert skipped["status"] == "skipped"
        assert "20 feedback samples since version 1's training data" in skipped["reason"]

        post_items(client, overconfident_feedback(280, seed=2))
        second = train(client, force=True)
        assert second["status"] in ("deployed", "rejected"), second["reason"]
        results = second["evaluation_results"]
        # Only the 300 labels version 1 never saw, shrunk toward version 1.
        assert (results["n_train"], results["n_validation"]) == (240, 60)
        expected_prior = {
            "source": "previous_model",
            "segment": "default",
            "version": 1,
            "after_feedback_id": 600,
        }
        assert results["prior"] == expected_prior
        assert results["selection"]["prior"] == previous.method
        model2, candidate = _version_calibrator(client, second["model_version"])
        assert model2["metrics"]["prior"] == expected_prior

        # The same fit by hand: the new feedback, the gate's split, version 1 as the prior.
        scores, labels = all_feedback(client)
        new_scores, new_labels = scores[600:], labels[600:]
        train_rows, _ = train_test_split(
            np.arange(300), test_size=0.2, stratify=new_labels, random_state=0
        )
        by_hand = fit_calibrator(
            new_scores[train_rows], new_labels[train_rows], random_state=0, prior=previous
        )
        grid = np.linspace(0.0, 1.0, 501)
        assert np.allclose(candidate.predict(grid), by_hand.predict(grid), atol=1e-12)


def test_training_on_all_feedback_uses_no_prior(client: TestClient) -> None:
    post_items(client, overconfident_feedback(600, seed=0))
    assert train(client, force=True)["status"] == "deployed"
    post_items(client, overconfident_feedback(300, seed=2))
    second = train(client, force=True)
    results = second["evaluation_results"]
    assert results["n_train"] + results["n_validation"] == 900
    assert results["prior"] == {"source": "none", "segment": None, "version": None}
    assert results["selection"]["prior"] is None
    model = client.get(f"/v1/models/default/{second['model_version']}").json()
    assert model["metrics"]["prior"]["source"] == "none"
