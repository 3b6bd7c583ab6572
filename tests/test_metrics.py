"""/metrics moves when feedback arrives and runs finish; routes are labelled by template."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from helpers import overconfident_feedback, train


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def test_metrics_follow_feedback_training_and_requests(client: TestClient) -> None:
    before = client.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    assert sample(before.text, "calib_feedback_total", segment="default", label="true") is None

    items = overconfident_feedback(200)
    client.post("/v1/feedback/batch", json={"items": items})
    trues = sum(1 for item in items if item["label"])
    text = client.get("/metrics").text
    assert sample(text, "calib_feedback_total", segment="default", label="true") == trues
    assert sample(text, "calib_feedback_total", segment="default", label="false") == 200 - trues
    assert sample(text, "calib_database_up") == 1.0

    client.post("/v1/feedback", json={"score": 0.5, "label": True})
    text = client.get("/metrics").text
    assert sample(text, "calib_feedback_total", segment="default", label="true") == trues + 1

    run = train(client)
    client.get("/health")
    text = client.get("/metrics").text
    assert sample(text, "calib_training_runs", status="deployed") == 1
    assert sample(text, "calib_active_model_version", segment="default") == 1
    ece = run["evaluation_results"]["candidate"]["ece"]
    assert abs(sample(text, "calib_active_model_ece", segment="default") - ece) < 1e-12
    assert sample(text, "calib_active_model_age_seconds", segment="default") >= 0
    assert sample(text, "calib_training_duration_seconds_count", status="deployed") == 1
    assert sample(text, "calib_health_status", status="healthy") == 1.0
    assert (
        sample(
            text,
            "calib_http_requests_total",
            method="GET",
            route="/v1/training-runs/{run_id}",
            status="200",
        )
        >= 1
    )
    assert sample(text, "calib_http_requests_total", route="/v1/feedback/batch", status="201") == 1
    assert "/v1/training-runs/1" not in text


def test_refused_bodies_are_counted_under_their_route(clean_database: str) -> None:
    """413 for a declared oversize (refused before routing) and for a chunked one."""
    from app.config import Settings
    from app.main import create_app

    settings = Settings(database_url=clean_database, max_body_bytes=2048)
    with TestClient(create_app(settings)) as client:
        declared = client.post("/v1/feedback/batch", content=b"x" * 4096)
        chunked = client.post("/v1/feedback", content=(b"x" * 1000 for _ in range(5)))
        assert (declared.status_code, chunked.status_code) == (413, 413)
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        text = client.get("/metrics").text
    assert sample(text, "calib_http_requests_total", route="/v1/feedback/batch", status="413") == 1
    assert sample(text, "calib_http_requests_total", route="/v1/feedback", status="413") == 1
    assert sample(text, "calib_http_requests_total", route="unmatched", status="413") is None
