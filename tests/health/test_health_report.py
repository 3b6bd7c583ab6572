"""GET /health in each state an operator meets, with the alerts that explain it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from helpers import overconfident_feedback, train
from sqlalchemy import create_engine, update

from app.config import Settings
from app.db import utcnow
from app.logging import configure_logging
from app.main import create_app
from app.registry.models import ModelVersion
from app.training.models import TrainingRun

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def codes(report: dict) -> set[str]:
    return {alert["code"] for alert in report["alerts"]}


def test_empty_service_is_degraded_with_no_data_and_no_model(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "degraded"
    assert codes(report) == {"no_data", "no_model"}
    assert set(report["checks"]) == {
        "database",
        "data_availability",
        "model_freshness",
        "last_training",
        "calibration_drift",
        "scheduler",
    }
    assert all({"severity", "code", "message"} <= set(a) for a in report["alerts"])


def test_fresh_model_on_enough_data_is_healthy(client: TestClient) -> None:
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(300)})
    assert train(client)["status"] == "deployed"
    report = client.get("/health").json()
    assert report["status"] == "healthy", report["alerts"]
    assert report["alerts"] == []
    data = report["checks"]["data_availability"]["segments"]["default"]
    assert data == {
        "stored": 300,
        "new_since_last_training": 0,
        "enough_for_training": True,
        "served_by": "default",
        "pooling_weight": None,
        "distance_from_pooled": None,
    }
    assert report["checks"]["model_freshness"]["segments"]["default"]["version"] == 1
    assert report["checks"]["last_training"]["segments"]["default"]["status"] == "deployed"

    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(10, seed=4)})
    report = client.get("/health").json()
    assert report["status"] == "healthy"
    assert (
        report["checks"]["data_availability"]["segments"]["default"]["new_since_last_training"]
        == 10
    )


def test_small_segment_stale_model_and_failed_training_raise_alerts(
    clean_database: str,
) -> None:
    settings = Settings(database_url=clean_database, max_model_age_days=1)
    with TestClient(create_app(settings)) as client:
        items = overconfident_feedback(300) + overconfident_feedback(12, segment="tiny")
        client.post("/v1/feedback/batch", json={"items": items})
        run = train(client)
        engine = create_engine(clean_database)
        with engine.begin() as connection:
            three_days_ago = utcnow() - timedelta(days=3)
            connection.execute(update(ModelVersion).values(activated_at=three_days_ago))
            connection.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run["id"])
                .values(status="failed", reason="boom")
            )
        engine.dispose()
        report = client.get("/health").json()
    assert report["status"] == "degraded"
    assert {"insufficient_data", "model_stale", "training_failed"} <= codes(report)
    tiny = next(a for a in report["alerts"] if a["code"] == "insufficient_data")
    assert tiny["segment"] == "tiny" and "12 samples" in tiny["message"]
    stale = next(a for a in report["alerts"] if a["code"] == "model_stale")
    assert "3.0 days old" in stale["message"]


def test_drift_on_recent_feedback_is_alerted(client: TestClient) -> None:
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400)})
    assert train(client)["status"] == "deployed"
    # The analyzer changed: now high scores are mostly wrong.
    flipped = [{**item, "label": not item["label"]} for item in overconfident_feedback(200, seed=9)]
    client.post("/v1/feedback/batch", json={"items": flipped})
    report = client.get("/health").json()
    assert "calibration_drift" in codes(report)
    drift = report["checks"]["calibration_drift"]["segments"]["default"]
    assert drift["n_recent"] == 200
    assert drift["recent_ece"] - drift["validation_ece"] > 0.05


def test_unreachable_database_is_unhealthy_503() -> None:
    with TestClient(create_app(Settings(database_url=UNREACHABLE_PG))) as client:
        response = client.get("/health")
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "unhealthy"
    assert codes(report) == {"database_unreachable"}
    assert report["alerts"][0]["severity"] == "critical"


def test_scheduler_that_is_enabled_but_stopped_is_alerted(clean_database: str) -> None:
    settings = Settings(database_url=clean_database, scheduler_enabled=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["checks"]["scheduler"]["is_running"] is True
        client.app.state.scheduler.shutdown()
        report = client.get("/health").json()
    assert "scheduler_stopped" in codes(report)


def test_training_outcomes_and_alerts_are_json_log_lines(
    clean_database: str, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=clean_database, log_json=True)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/feedback/batch", json={"items": overconfident_feedback(100)})
        train(client)
        client.app.state.scheduler.run_health_job()
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    outcome = next(line for line in lines if line.get("event") == "training_outcome")
    assert outcome["status"] == "deployed" and outcome["segment"] == "default"
    assert outcome["level"] == "INFO" and "time" in outcome
    configure_logging(json_lines=False)
