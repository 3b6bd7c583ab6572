"""The analyzer's client against a real service over HTTP, including while it is down."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from helpers import overconfident_feedback

from app.client import CalibrationClient, CalibrationServiceError
from app.devserver import serve_in_thread

SCORES = np.array([0.0, 1e-13, 0.02, 0.2, 0.45, 0.5, 0.61, 0.8, 0.97, 1.0])


class Flaky(httpx.BaseTransport):
    """Forwards to the network, but loses some responses or answers 503 first."""

    def __init__(self, *, lose_responses: int = 0, unavailable: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose_responses = lose_responses
        self.unavailable = unavailable
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.unavailable:
            self.unavailable -= 1
            self.statuses.append(503)
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"})
        response = self.inner.handle_request(request)
        response.read()
        self.statuses.append(response.status_code)
        if self.lose_responses:
            # The server did the work; the client never hears about it.
            self.lose_responses -= 1
            raise httpx.ReadError("connection reset", request=request)
        return response


def stored_total(base_url: str) -> int:
    return httpx.get(f"{base_url}/v1/feedback/stats").json()["total"]


def test_retries_after_a_lost_response_store_each_record_once(live_server: str) -> None:
    transport = Flaky(lose_responses=1, unavailable=1)
    records = overconfident_feedback(250)
    with CalibrationClient(
        live_server, batch_size=100, backoff_base=0.01, transport=transport
    ) as client:
        summary = client.send_feedback(records)
    assert stored_total(live_server) == 250
    # The first batch was stored but its answer lost: the retry finds it already there.
    assert (summary.inserted, summary.duplicates, summary.conflicts) == (150, 100, [])
    assert len(set(summary.external_ids)) == 250
    assert transport.statuses[:3] == [503, 201, 201]


def test_bad_record_raises_with_the_service_reason(live_server: str) -> None:
    with (
        CalibrationClient(live_server) as client,
        pytest.raises(CalibrationServiceError) as error,
    ):
        client.send_feedback([{"score": 0.5, "label": "yes"}])
    assert error.value.status_code == 422
    assert stored_total(live_server) == 0


def test_refresh_revalidates_and_local_equals_server(live_server: str) -> None:
    transport = Flaky()
    with CalibrationClient(live_server, transport=transport) as client:
        assert client.refresh() is False  # no model yet: 404
        client.send_feedback(overconfident_feedback(400))
        run = client.train(force=True, wait=True)
        assert run.status == "deployed" and run.model_version == 1
        # A deployed run is fetched before train() returns: no refresh() needed.
        assert client.model_version == 1
        assert transport.statuses[-1] == 200
        assert client.refresh() is False
        assert transport.statuses[-1] == 304
        local = client.calibrate(SCORES)
        remote = client.calibrate_remote(SCORES.tolist())
        assert remote.model_version == 1
        assert np.max(np.abs(local - np.array(remote.calibrated))) <= 1e-12
        assert not np.allclose(local, SCORES)


def test_calibration_goes_on_while_the_service_is_down(
    app: FastAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "calibrator.json"
    with serve_in_thread(app) as base_url:
        client = CalibrationClient(base_url, cache_path=cache, timeout=2)
        client.send_feedback(overconfident_feedback(400))
        client.train(force=True)
        before = client.calibrate(SCORES)  # fetches the calibrator on first use
        assert client.model_version == 1
    # The service is gone now.
    caplog.set_level(logging.WARNING, logger="calibration_client.client")
    assert client.refresh() is False
    assert np.array_equal(client.calibrate(SCORES), before)
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    client.close()

    restarted = CalibrationClient(base_url, cache_path=cache, timeout=2)
    assert restarted.model_version == 1
    assert np.array_equal(restarted.calibrate(SCORES), before)
    restarted.close()

    never_fetched = CalibrationClient(base_url, timeout=2)
    assert np.array_equal(never_fetched.calibrate(SCORES), SCORES)
    assert any("identity" in r.getMessage() for r in caplog.records)
    never_fetched.close()


def test_calibrate_is_thread_safe_during_refreshes(live_server: str) -> None:
    with CalibrationClient(live_server) as client:
        client.send_feedback(overconfident_feedback(300))
        client.train(force=True)
        errors: list[BaseException] = []

        def hammer() -> None:
            try:
                for _ in range(200):
                    assert client.calibrate(SCORES).shape == SCORES.shape
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for _ in range(10):
            client.refresh()
        for thread in threads:
            thread.join()
        assert errors == []


def test_health_and_background_refresh(live_server: str) -> None:
    with CalibrationClient(live_server) as client:
        assert client.health().status == "degraded"
        client.send_feedback(overconfident_feedback(300))
        client.train(force=True)
        client.start_background_refresh(0.05)
        deadline = time.monotonic() + 10
        while client.model_version is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.model_version == 1


def test_client_imports_no_framework_or_database() -> None:
    code = (
        "import sys, app.client; "
        "bad = [m for m in ('fastapi', 'starlette', 'sqlalchemy', 'pydantic_settings') "
        "if m in sys.modules]; print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_segment_without_a_model_follows_the_pooled_calibrator(
    app: FastAPI, tmp_path: Path
) -> None:
    cache = tmp_path / "calibrator.json"
    with serve_in_thread(app) as base_url:
        with CalibrationClient(base_url) as admin:
            # Two segments that differ, so the pooled model learns that segments can differ.
            rng = np.random.default_rng(1)
            scores = rng.uniform(0.02, 0.98, 300)
            optimistic = [
                {"score": float(s), "label": bool(rng.uniform() < 0.5 + 0.4 * s), "segment": "beta"}
                for s in scores
            ]
            admin.send_feedback(overconfident_feedback(300, segment="alpha") + optimistic)
            assert admin.train(force=True, segment="_pooled")["status"] == "deployed"
        client = CalibrationClient(base_url, segment="newbie", cache_path=cache)
        assert client.refresh() is True
        assert client.calibrator_segment == "_pooled"
        remote = client.calibrate_remote(SCORES.tolist())
        assert remote["calibrator_segment"] == "_pooled"
        assert np.max(np.abs(client.calibrate(SCORES) - np.array(remote["calibrated"]))) <= 1e-12
        pooled_probs = client.calibrate(SCORES)
        client.close()
        # A restart reads the cached pooled calibrator back for its own segment.
        restarted = CalibrationClient(base_url, segment="newbie", cache_path=cache)
        assert restarted.calibrator_segment == "_pooled"
        assert np.array_equal(restarted.calibrate(SCORES), pooled_probs)

        # 16 of 20 right at every score: the segment's own calibrator deploys and replaces it.
        restarted.send_feedback(
            [
                {"score": float(s), "label": i % 5 != 0}
                for i, s in enumerate(np.linspace(0.05, 0.95, 20))
            ]
        )
        # A deployed run of the client's own segment refreshes its calibrator.
        assert restarted.train(force=True)["status"] == "deployed"
        assert restarted.calibrator_segment == "newbie"
        assert not np.allclose(restarted.calibrate(SCORES), pooled_probs)
        restarted.close()
