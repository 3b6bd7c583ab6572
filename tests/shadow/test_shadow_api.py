"""Champion and challenger over HTTP: shadow deployment, promotion, retirement, stop, rollback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import overconfident_feedback, train, wait_for_run
from test_metrics import sample

from app.calibration import load_calibrator, paired_confidence_sequence
from app.client import CalibrationClient, CalibrationServiceError
from app.config import Settings
from app.main import create_app

ADMIN = "admin-key-0123456789"
READER = "reader-key-0123456789"


def analyzer_feedback(n: int, *, seed: int, shift: float) -> list[dict]:
    """Overconfident scores whose accuracy is ``shift`` higher than the original analyzer's."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 1.0, n)
    truth = np.clip(0.5 + (scores - 0.5) * 0.4 + shift, 0.02, 0.98)
    labels = rng.uniform(0.0, 1.0, n) < truth
    return [{"score": float(s), "label": bool(y)} for s, y in zip(scores, labels, strict=True)]


@contextmanager
def client_for(settings: Settings, **changes: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        yield client


@pytest.fixture
def shadow_client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings, deploy_mode="shadow") as client:
        yield client


def wait_until(check, what: str, timeout: float = 60.0):
    """Poll, as a user would, until ``check()`` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout}s")
        time.sleep(0.05)


def calibrator(client: TestClient, version: int):
    model = client.get(f"/v1/models/default/{version}").json()
    return load_calibrator(
        {"format": "calibrator/v1", "method": model["method"], "params": model["params"]}
    )


def brier_differences(client: TestClient, records: list[dict], challenger: int, champion: int):
    scores = np.array([r["score"] for r in records])
    labels = np.array([r["label"] for r in records], dtype=np.float64)
    q2 = calibrator(client, challenger).predict(scores)
    q1 = calibrator(client, champion).predict(scores)
    return (q2 - labels) ** 2 - (q1 - labels) ** 2


def analyzer_changes(client: TestClient) -> dict:
    """Version 1 live on the original analyzer; the analyzer changes; a forced run trains v2.

    Returns the second run; in shadow mode its version 2 challenges version 1.
    """
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400)})
    assert train(client)["status"] == "deployed"
    # The analyzer changed: its findings are now right more often than its scores say.
    client.post("/v1/feedback/batch", json={"items": analyzer_feedback(3000, seed=1, shift=0.25)})
    second = train(client, force=True)
    assert second["model_version"] == 2
    return second


def test_shadow_mode_challenger_is_promoted_by_fresh_feedback_alone(
    shadow_client: TestClient,
) -> None:
    client = shadow_client
    # No live model yet: shadow mode activates the first candidate at once (in the helper).
    second = analyzer_changes(client)
    assert second["evaluation_results"]["deployed"] is False
    assert "now challenges active version 1" in second["reason"]
    assert client.get("/v1/models/active").json()["version"] == 1
    started = client.get("/v1/models/default/shadow").json()
    assert started["status"] == "running"
    assert (started["challenger_version"], started["champion_version"]) == (2, 1)
    assert started["n"] == 0 and started["interval"] == [-1.0, 1.0]

    fresh = analyzer_feedback(3000, seed=2, shift=0.25)
    for start in range(0, len(fresh), 250):
        client.post("/v1/feedback/batch", json={"items": fresh[start : start + 250]})
    # Only the feedback posts drive the comparison: the active model is polled, nothing else.
    wait_until(lambda: client.get("/v1/models/active").json()["version"] == 2, "the promotion")

    history = client.get("/v1/models/history", params={"segment": "default"}).json()["items"]
    assert history[0]["version"] == 2 and history[0]["reason"] == "shadow"
    assert history[0]["previous_version"] == 1
    result = client.get("/v1/models/default/shadow").json()
    assert result["status"] == "promoted" and result["decided_at"] is not None
    low, high = result["interval"]
    assert low < result["brier_difference"] < high <= 0.0
    n = result["n"]
    assert 0 < n < len(fresh)
    # The stored mean is the mean over exactly the first n fresh records, in arrival order.
    expected = brier_differences(client, fresh[:n], challenger=2, champion=1)
    assert result["brier_difference"] == pytest.approx(expected.mean(), abs=1e-12)
    assert result["log_loss_difference"] < 0


def test_equal_challenger_is_retired_at_max_records(settings: Settings) -> None:
    with client_for(settings, shadow_max_records=300) as client:
        client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400)})
        assert train(client)["status"] == "deployed"
        client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400, seed=4)})
        assert train(client, force=True)["model_version"] == 2
        # Whether the gate let version 2 go live depends on the engine's numbers; the champion
        # must be version 1 either way (already active: 200 and no new event).
        assert client.post("/v1/models/default/1/activate").status_code == 200
        before = client.get("/v1/models/history").json()["items"]

        created = client.post("/v1/models/default/2/shadow")
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "running"
        # Single posts, one record each, from the unchanged analyzer.
        for record in overconfident_feedback(320, seed=5):
            assert client.post("/v1/feedback", json=record).status_code == 201
        # The posts alone bring it to its end: /metrics reads the stored row, scores nothing.
        labels = {"segment": "default", "challenger": "2", "champion": "1"}
        wait_until(
            lambda: sample(client.get("/metrics").text, "calib_shadow_running", **labels) == 0.0,
            "the retirement",
        )
        result = client.get("/v1/models/default/shadow").json()
        assert result["status"] == "retired"
        assert result["n"] == 300 and "undecided after 300" in result["reason"]
        low, high = result["interval"]
        assert low < 0.0 < high
        assert client.get("/v1/models/active").json()["version"] == 1
        assert client.get("/v1/models/history").json()["items"] == before


def _two_versions(client: TestClient) -> None:
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400)})
    assert train(client)["status"] == "deployed"
    assert train(client, force=True)["model_version"] == 2


def test_stop_ends_the_comparison_and_a_new_one_may_start(client: TestClient) -> None:
    _two_versions(client)
    assert client.post("/v1/models/default/2/shadow").status_code == 201
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(50, seed=7)})
    stopped = client.delete("/v1/models/default/shadow")
    assert stopped.status_code == 200
    body = stopped.json()
    assert body["status"] == "stopped" and body["decided_at"] is not None
    assert body["reason"] == "by api:anonymous"
    n = client.get("/v1/models/default/shadow").json()["n"]
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(50, seed=8)})
    after = client.get("/v1/models/default/shadow").json()
    assert after["status"] == "stopped" and after["n"] == n
    again = client.delete("/v1/models/default/shadow")
    assert again.status_code == 200 and again.json()["decided_at"] == body["decided_at"]

    restarted = client.post("/v1/models/default/2/shadow")
    assert restarted.status_code == 201 and restarted.json()["n"] == 0


def test_rollback_or_manual_activation_stops_the_comparison(client: TestClient) -> None:
    _two_versions(client)
    assert client.post("/v1/models/default/2/activate").status_code == 200
    assert train(client, force=True)["model_version"] == 3
    assert client.post("/v1/models/default/3/shadow").status_code == 201
    # Roll back from version 2 to version 1 while version 3 challenges version 2.
    assert client.post("/v1/models/default/1/activate").status_code == 200
    result = client.get("/v1/models/default/shadow").json()
    assert result["status"] == "stopped"
    assert "version 1 was activated" in result["reason"]

    assert client.post("/v1/models/default/3/shadow").status_code == 201
    assert client.post("/v1/models/default/3/activate").status_code == 200
    client.post("/v1/feedback/batch", json={"items": overconfident_feedback(20, seed=9)})
    result = client.get("/v1/models/default/shadow").json()
    assert result["status"] == "stopped" and "version 3 was activated" in result["reason"]
    assert result["n"] == 0


def test_comparison_survives_a_restart(settings: Settings) -> None:
    with client_for(settings) as client:
        _two_versions(client)
        assert client.post("/v1/models/default/2/shadow").status_code == 201
        client.post("/v1/feedback/batch", json={"items": overconfident_feedback(60, seed=10)})
        before = client.get("/v1/models/default/shadow").json()
    assert before["n"] == 60
    with client_for(settings) as client:
        client.post("/v1/feedback/batch", json={"items": overconfident_feedback(40, seed=11)})
        after = client.get("/v1/models/default/shadow").json()
    assert after["status"] == "running" and after["n"] == 100
    assert after["started_at"] == before["started_at"]


def test_errors_are_4xx_naming_the_problem(client: TestClient) -> None:
    never = client.get("/v1/models/default/shadow")
    assert never.status_code == 404 and "never had a shadow comparison" in never.json()["detail"]
    assert client.delete("/v1/models/default/shadow").status_code == 404
    _two_versions(client)
    unknown = client.post("/v1/models/default/9/shadow")
    assert unknown.status_code == 404 and "version 9" in unknown.json()["detail"]
    active = client.post("/v1/models/default/1/shadow")
    assert active.status_code == 409 and "active model" in active.json()["detail"]
    assert client.post("/v1/models/default/2/shadow").status_code == 201
    twice = client.post("/v1/models/default/2/shadow")
    assert twice.status_code == 409 and "already running" in twice.json()["detail"]
    assert client.post("/v1/models/default/0/shadow").status_code == 422
    assert client.get("/v1/models/bad segment!/shadow").status_code == 422
    assert client.post("/v1/models/other/1/shadow").status_code == 404


def test_scopes(settings: Settings) -> None:
    keys = {ADMIN: ["admin"], READER: ["read"]}
    with client_for(settings, api_keys=keys) as client:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        reader = {"Authorization": f"Bearer {READER}"}
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        client.post("/v1/feedback/batch", json={"items": overconfident_feedback(400)})
        for force in (False, True):
            run = client.post("/v1/training-runs", json={"force": force}).json()
            wait_for_run(client, run["id"])
        del client.headers["Authorization"]
        assert client.post("/v1/models/default/2/shadow").status_code == 401
        assert client.post("/v1/models/default/2/shadow", headers=reader).status_code == 403
        assert client.post("/v1/models/default/2/shadow", headers=admin).status_code == 201
        assert client.get("/v1/models/default/shadow", headers=reader).status_code == 200
        assert client.delete("/v1/models/default/shadow", headers=reader).status_code == 403
        assert client.delete("/v1/models/default/shadow", headers=admin).status_code == 200


def test_two_replicas_decide_once_at_the_first_record_that_excludes_zero(
    settings: Settings,
) -> None:
    with (
        client_for(settings, deploy_mode="shadow") as first,
        client_for(settings, deploy_mode="shadow") as second,
    ):
        analyzer_changes(first)
        fresh = analyzer_feedback(1500, seed=2, shift=0.25)

        def look(client: TestClient) -> None:
            for _ in range(10):
                assert client.get("/v1/models/default/shadow").status_code == 200

        with ThreadPoolExecutor(max_workers=4) as pool:
            looks = [pool.submit(look, client) for client in (first, second, first, second)]
            for start in range(0, len(fresh), 100):
                second.post("/v1/feedback/batch", json={"items": fresh[start : start + 100]})
            for future in looks:
                future.result()
        result = second.get("/v1/models/default/shadow").json()
        history = first.get("/v1/models/history", params={"segment": "default"}).json()["items"]

    assert result["status"] == "promoted"
    assert [p["reason"] for p in history].count("shadow") == 1
    # An independent replay: the library on the fresh records, in order, decides at the same n.
    d = brier_differences(first, fresh, challenger=2, champion=1)
    low, high = paired_confidence_sequence(d, alpha=0.05)
    decided_at = int(np.argmax(high <= 0.0)) + 1
    assert result["n"] == decided_at
    assert result["interval"] == [low[decided_at - 1], high[decided_at - 1]]


def test_metrics_and_the_client_show_the_comparison(client: TestClient, live_server: str) -> None:
    _two_versions(client)
    with CalibrationClient(live_server) as sdk:
        started = sdk.start_shadow(2)
        assert started["status"] == "running" and started["challenger_version"] == 2
        sdk.send_feedback(overconfident_feedback(80, seed=12))
        seen = sdk.shadow()
        assert seen["n"] == 80
        text = client.get("/metrics").text
        labels = {"segment": "default", "challenger": "2", "champion": "1"}
        assert sample(text, "calib_shadow_records", **labels) == 80
        assert sample(text, "calib_shadow_running", **labels) == 1.0
        assert sample(text, "calib_shadow_interval_low", **labels) == seen["interval"][0]
        assert sample(text, "calib_shadow_interval_high", **labels) == seen["interval"][1]
        assert sdk.stop_shadow()["status"] == "stopped"
        with pytest.raises(CalibrationServiceError) as raised:
            sdk.start_shadow(1)
        assert raised.value.status_code == 409
    assert sample(client.get("/metrics").text, "calib_shadow_running", **labels) == 0.0


def test_dashboard_shows_the_interval_over_n(client: TestClient) -> None:
    _two_versions(client)
    assert client.post("/v1/models/default/2/shadow").status_code == 201
    for start in range(0, 300, 100):
        client.post(
            "/v1/feedback/batch",
            json={"items": overconfident_feedback(300, seed=13)[start : start + 100]},
        )
    comparison = client.get("/v1/models/default/shadow").json()
    assert [point[0] for point in comparison["trace"]][-1] == 300
    assert comparison["trace"][-1][1:] == comparison["interval"]

    page = client.get("/dashboard").text
    assert "v2 challenges v1" in page and "after 300 records" in page
    assert "/dashboard/segments/default/shadow.svg" in page
    chart = client.get("/dashboard/segments/default/shadow.svg")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/svg+xml"
    assert 'id="shadow-interval"' in chart.text and 'id="shadow-zero"' in chart.text
    assert client.get("/dashboard/segments/other/shadow.svg").status_code == 404


def test_without_auto_promotion_a_better_challenger_is_only_reported(settings: Settings) -> None:
    with client_for(
        settings, deploy_mode="shadow", shadow_auto_promote=False, shadow_max_records=2000
    ) as client:
        analyzer_changes(client)
        fresh = analyzer_feedback(2500, seed=2, shift=0.25)
        client.post("/v1/feedback/batch", json={"items": fresh[:1000]})
        reported = client.get("/v1/models/default/shadow").json()
        assert reported["status"] == "running" and reported["n"] == 1000
        assert reported["interval"][1] <= 0.0
        client.post("/v1/feedback/batch", json={"items": fresh[1000:]})
        ended = client.get("/v1/models/default/shadow").json()
        assert ended["status"] == "stopped" and ended["n"] == 2000
        assert "automatic promotion is off" in ended["reason"]
        assert client.get("/v1/models/active").json()["version"] == 1
