"""The seed's interface, MLTrainingPipeline, trains with the same rules as the API."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient
from helpers import overconfident_feedback

from app.config import Settings
from app.training import MLTrainingPipeline


def test_fine_tune_returns_the_run_as_the_api_shows_it(
    client: TestClient, settings: Settings
) -> None:
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(300)})
    pipeline = MLTrainingPipeline(settings=settings)
    try:
        result = asyncio.run(pipeline.fine_tune_model_with_feedback(force_retrain=True))
    finally:
        pipeline.close()
    assert result["status"] == "deployed"
    assert result["trigger"] == "cli" and result["segment"] == "default"
    assert result["evaluation_results"]["ece_improvement"] >= 0.05
    assert result == client.get(f"/v1/training-runs/{result['id']}").json()
    assert client.get("/v1/models/active").json()["version"] == result["model_version"]


def test_constructor_arguments_override_the_settings(
    client: TestClient, settings: Settings
) -> None:
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(300)})
    strict = MLTrainingPipeline(
        min_samples_for_training=1000, performance_threshold=0.5, settings=settings
    )
    assert (strict.policy.min_samples, strict.policy.threshold) == (1000, 0.5)
    assert strict.policy.interval_days == settings.training_interval_days
    try:
        skipped = asyncio.run(strict.fine_tune_model_with_feedback())
    finally:
        strict.close()
    assert skipped["status"] == "skipped"
    assert "at least 1000 are needed" in skipped["reason"]
