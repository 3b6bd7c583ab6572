"""API keys and scopes: 401 without a valid key, 403 without the scope, probes always open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

WRITER = "writer-key-0123456789"
READER = "reader-key-0123456789"
ADMIN = "admin-key-01234567890"
RECORD = {"score": 0.5, "label": True}


@pytest.fixture
def secured(clean_database: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=clean_database,
        api_keys={WRITER: ["feedback:write"], READER: ["read"], ADMIN: ["admin"]},
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_missing_or_wrong_key_is_401(secured: TestClient) -> None:
    assert secured.post("/v1/feedback", json=RECORD).status_code == 401
    wrong = secured.post("/v1/feedback", json=RECORD, headers={"X-API-Key": "nope-nope-nope-nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "missing or invalid API key"}
    # RFC 9110: a 401 names the authentication scheme to use.
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert secured.get("/v1/feedback/stats").status_code == 401


def test_scope_is_checked(secured: TestClient) -> None:
    as_reader = {"Authorization": f"Bearer {READER}"}
    denied = secured.post("/v1/feedback", json=RECORD, headers=as_reader)
    assert denied.status_code == 403
    assert "feedback:write" in denied.json()["detail"]
    assert secured.get("/v1/feedback/stats", headers=as_reader).status_code == 200

    as_writer = {"X-API-Key": WRITER}
    assert secured.post("/v1/feedback", json=RECORD, headers=as_writer).status_code == 201
    assert secured.get("/v1/feedback", headers=as_writer).status_code == 403


def test_admin_may_do_everything(secured: TestClient) -> None:
    as_admin = {"Authorization": f"Bearer {ADMIN}"}
    assert secured.post("/v1/feedback", json=RECORD, headers=as_admin).status_code == 201
    assert secured.get("/v1/feedback/stats", headers=as_admin).json()["total"] == 1


def test_probes_are_open(secured: TestClient) -> None:
    assert secured.get("/health/live").status_code == 200
    assert secured.get("/health/ready").status_code == 200


def test_open_service_warns_at_startup(
    clean_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(Settings(database_url=clean_database))) as client:
        assert client.post("/v1/feedback", json=RECORD).status_code == 201
    assert any("no API keys configured" in r.getMessage() for r in caplog.records)


def test_keys_never_reach_the_logs(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    secured.post("/v1/feedback", json=RECORD, headers={"X-API-Key": WRITER})
    secured.post("/v1/feedback", json=RECORD, headers={"X-API-Key": "wrong-wrong-wrong-wrong"})
    assert all(WRITER not in r.getMessage() for r in caplog.records)
