"""Liveness, readiness, and 503 with Retry-After while the database is unreachable."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["schema_revision"] == ready.json()["head_revision"]


def test_not_ready_when_schema_is_not_migrated(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    with TestClient(create_app(settings)) as client:
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["schema_revision"] is None
        assert client.get("/health/live").status_code == 200


def test_unreachable_database_is_503_with_retry_after() -> None:
    with TestClient(create_app(Settings(database_url=UNREACHABLE_PG))) as client:
        posted = client.post("/v1/feedback", json={"score": 0.5, "label": True})
        assert posted.status_code == 503
        assert int(posted.headers["Retry-After"]) > 0
        assert "database unavailable" in posted.json()["detail"]
        assert client.get("/v1/feedback/stats").status_code == 503
        batch = client.post("/v1/feedback/batch", json={"items": [{"score": 0.1, "label": True}]})
        assert batch.status_code == 503
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["database"] == "unreachable"
        assert client.get("/health/live").status_code == 200


NEEDS_DATABASE = [
    ("GET", "/v1/feedback", None),
    ("GET", "/v1/feedback/export", None),
    ("POST", "/v1/training-runs", {}),
    ("GET", "/v1/training-runs", None),
    ("GET", "/v1/training-runs/1", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/active", None),
    ("GET", "/v1/models/active/artifact", None),
    ("GET", "/v1/models/history", None),
    ("GET", "/v1/models/default/1", None),
    ("GET", "/v1/models/default/1/reliability", None),
    ("POST", "/v1/models/default/1/activate", None),
    ("POST", "/v1/calibrate", {"scores": [0.5]}),
    ("GET", "/health/history", None),
    ("GET", "/dashboard", None),
]


def test_every_endpoint_that_needs_the_database_says_503_with_retry_after() -> None:
    with TestClient(create_app(Settings(database_url=UNREACHABLE_PG))) as client:
        for method, path, body in NEEDS_DATABASE:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["Retry-After"].isdigit(), path
        # Operations endpoints keep answering without it.
        assert client.get("/v1/scheduler").status_code == 200
        assert client.get("/metrics").status_code == 200
