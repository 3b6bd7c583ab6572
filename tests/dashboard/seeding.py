"""The data every dashboard test looks at: one trained segment with fresh feedback, one sparse."""

from __future__ import annotations

import httpx
from helpers import overconfident_feedback, train

TRAINING_SAMPLES = 400
RECENT_SAMPLES = 120
SPARSE_SAMPLES = 10


def seed_service(client: httpx.Client) -> None:
    """v1 deployed and active, v2 rejected (forced on the same data), then newer feedback.

    ``default`` gets 400 records, is trained twice, and then receives 120 records more (the
    "recent" feedback of the drift check); ``sparse`` gets 10 records, too few to train.
    """
    batch = client.post(
        "/v1/feedback/batch", json={"items": overconfident_feedback(TRAINING_SAMPLES)}
    )
    assert batch.status_code == 201, batch.text
    assert train(client)["status"] == "deployed"
    assert train(client, force=True)["status"] == "rejected"
    recent = overconfident_feedback(RECENT_SAMPLES, seed=7)
    assert client.post("/v1/feedback/batch", json={"items": recent}).status_code == 201
    sparse = overconfident_feedback(SPARSE_SAMPLES, seed=3, segment="sparse")
    assert client.post("/v1/feedback/batch", json={"items": sparse}).status_code == 201


def stored_feedback(client: httpx.Client, segment: str) -> list[dict]:
    """Every stored record of a segment, read back page by page, in id order."""
    items: list[dict] = []
    cursor = None
    while True:
        params = {"segment": segment, "limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/feedback", params=params).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return sorted(items, key=lambda item: item["id"])
