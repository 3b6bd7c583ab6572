"""Helpers shared by tests: feedback that needs calibrating, and training as a user drives it."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
from fastapi.testclient import TestClient


def overconfident_feedback(n: int, *, seed: int = 0, segment: str = "default") -> list[dict]:
    """Feedback from an analyzer whose scores are more extreme than its real accuracy."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 1.0, n)
    truth = 0.5 + (scores - 0.5) * 0.4
    labels = rng.uniform(0.0, 1.0, n) < truth
    return [
        {"score": float(s), "label": bool(y), "segment": segment}
        for s, y in zip(scores, labels, strict=True)
    ]


def wait_for_run(client: httpx.Client, run_id: int, timeout: float = 60.0) -> dict:
    """Poll a training run, as a user would, until it leaves queued/running."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/v1/training-runs/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")
        time.sleep(0.05)


def train(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/training-runs", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return wait_for_run(client, response.json()["id"])


class DroppingListener:
    """A loopback port that accepts and at once closes every connection, counting them."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._drop, daemon=True).start()

    def _drop(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._socket.close()
