"""Bursts over real HTTP: one run per segment, one active model, each external id once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi.testclient import TestClient
from helpers import overconfident_feedback, wait_for_run
from sqlalchemy import create_engine, func, select

from app.feedback.models import Feedback
from app.registry.models import ModelVersion

WORKERS = 12
OPEN = ("queued", "running")


def test_parallel_training_triggers_give_one_202_and_409s(live_server: str) -> None:
    httpx.post(
        f"{live_server}/v1/feedback/batch", json={"items": overconfident_feedback(3000)}
    ).raise_for_status()

    def trigger(_: int) -> httpx.Response:
        return httpx.post(f"{live_server}/v1/training-runs", json={"force": True}, timeout=30)

    with ThreadPoolExecutor(WORKERS) as pool:
        responses = list(pool.map(trigger, range(WORKERS)))
    codes = sorted(r.status_code for r in responses)
    accepted = [r for r in responses if r.status_code == 202]
    # A fast run may finish before a late trigger arrives; that trigger then starts a new run.
    assert len(accepted) >= 1 and set(codes) <= {202, 409}
    assert codes.count(409) >= WORKERS - len(accepted)
    run_ids = {r.json()["id"] for r in accepted}
    for response in responses:
        if response.status_code == 409:
            assert "training run" in response.json()["detail"]
    with httpx.Client(base_url=live_server) as client:
        runs = client.get("/v1/training-runs").json()["items"]
        assert {run["id"] for run in runs} == run_ids
        for run_id in run_ids:
            while client.get(f"/v1/training-runs/{run_id}").json()["status"] in OPEN:
                time.sleep(0.05)


def test_parallel_activations_leave_exactly_one_active(
    live_server: str, client: TestClient, clean_database: str
) -> None:
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400)})
    for force in (False, True, True):
        response = client.post("/v1/training-runs", json={"force": force})
        wait_for_run(client, response.json()["id"])
    versions = [m["version"] for m in client.get("/v1/models").json()["items"]]
    assert sorted(versions) == [1, 2, 3]

    def activate(version: int) -> int:
        return httpx.post(
            f"{live_server}/v1/models/default/{version}/activate", timeout=30
        ).status_code

    with ThreadPoolExecutor(WORKERS) as pool:
        codes = list(pool.map(activate, [1, 2, 3] * 4))
    assert set(codes) == {200}

    def compare_and_set(version: int) -> int:
        return httpx.post(
            f"{live_server}/v1/models/default/{version}/activate",
            json={"expected_active_version": current},
            timeout=30,
        ).status_code

    current = client.get("/v1/models/active").json()["version"]
    others = [v for v in (1, 2, 3) if v != current]
    with ThreadPoolExecutor(WORKERS) as pool:
        codes = list(pool.map(compare_and_set, others * 6))
    assert codes.count(200) == 1 and codes.count(409) == len(codes) - 1

    engine = create_engine(clean_database)
    with engine.connect() as connection:
        active = connection.execute(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.status == "active")
        ).scalar_one()
    engine.dispose()
    assert active == 1
    history = client.get("/v1/models/history", params={"segment": "default"}).json()["items"]
    assert sum(1 for period in history if period["live_until"] is None) == 1


def test_overlapping_single_and_batch_ingestion_stores_each_id_once(
    live_server: str, clean_database: str
) -> None:
    ids = [f"overlap-{i}" for i in range(300)]
    record = {
        i: {"score": (n % 97) / 97, "label": n % 2 == 0, "external_id": i}
        for n, i in enumerate(ids)
    }

    http = httpx.Client(base_url=live_server, timeout=30)

    def single(external_id: str) -> int:
        return http.post("/v1/feedback", json=record[external_id]).status_code

    def batch(start: int) -> dict:
        items = [record[i] for i in ids[start : start + 100]]
        response = http.post("/v1/feedback/batch", json={"items": items})
        assert response.status_code == 201, response.text
        return response.json()

    with ThreadPoolExecutor(WORKERS) as pool:
        batch_results = [pool.submit(batch, start) for start in (0, 50, 100, 150, 200, 0, 200)]
        single_codes = list(pool.map(single, ids[::3] + ids[::5]))
        results = [future.result() for future in batch_results]
    http.close()
    assert set(single_codes) <= {200, 201}
    assert all(result["conflicts"] == [] for result in results)

    engine = create_engine(clean_database)
    with engine.connect() as connection:
        stored = connection.execute(select(Feedback.external_id)).scalars().all()
    engine.dispose()
    assert sorted(stored) == sorted(ids)
