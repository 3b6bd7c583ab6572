"""Who may do what: every documented route against no key, a wrong key and each scope;
and the promises that no code path unpickles, formats SQL, leaks keys or runs unprotected."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

KEYS = {
    "writer-key-00000000": ["feedback:write"],
    "reader-key-00000000": ["read"],
    "trainer-key-0000000": ["train"],
    "admin-key-000000000": ["admin"],
}
KEY_OF_SCOPE = {scopes[0]: key for key, scopes in KEYS.items()}
OPEN = None
# Every documented operation and the scope it needs; a new route must be added here.
REQUIRED_SCOPE = {
    ("post", "/v1/feedback"): "feedback:write",
    ("post", "/v1/feedback/batch"): "feedback:write",
    ("get", "/v1/feedback"): "read",
    ("get", "/v1/feedback/export"): "read",
    ("get", "/v1/feedback/stats"): "read",
    ("post", "/v1/training-runs"): "train",
    ("get", "/v1/training-runs"): "read",
    ("get", "/v1/training-runs/{run_id}"): "read",
    ("get", "/v1/models"): "read",
    ("get", "/v1/models/active"): "read",
    ("get", "/v1/models/active/artifact"): "read",
    ("get", "/v1/models/history"): "read",
    ("get", "/v1/models/{segment}/{version}"): "read",
    ("get", "/v1/models/{segment}/{version}/reliability"): "read",
    ("post", "/v1/models/{segment}/{version}/activate"): "admin",
    ("post", "/v1/models/{segment}/{version}/shadow"): "admin",
    ("get", "/v1/models/{segment}/shadow"): "read",
    ("delete", "/v1/models/{segment}/shadow"): "admin",
    ("post", "/v1/calibrate"): "read",
    ("get", "/v1/scheduler"): "read",
    ("get", "/dashboard"): "read",
    ("get", "/dashboard/segments/{segment}/metrics.svg"): "read",
    ("get", "/dashboard/segments/{segment}/shadow.svg"): "read",
    ("get", "/health"): OPEN,
    ("get", "/health/live"): OPEN,
    ("get", "/health/ready"): OPEN,
    ("get", "/health/history"): OPEN,
    ("get", "/metrics"): OPEN,
}
BODIES = {
    "/v1/feedback": {"score": 0.5, "label": True},
    "/v1/feedback/batch": {"items": [{"score": 0.5, "label": True}]},
    "/v1/training-runs": {"segment": "default"},
    "/v1/calibrate": {"scores": [0.5]},
}
PACKAGE = Path(__file__).resolve().parent.parent / "app"


@pytest.fixture
def secured(clean_database: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=clean_database, api_keys=KEYS))) as client:
        yield client


def call(client: TestClient, method: str, path: str, headers: dict[str, str]):
    url = path.replace("{segment}", "default").replace("{version}", "1").replace("{run_id}", "1")
    body = BODIES.get(path) if method == "post" else None
    return client.request(method.upper(), url, json=body, headers=headers)


def test_every_documented_route_is_classified(secured: TestClient) -> None:
    documented = {
        (method, path)
        for path, operations in secured.app.openapi()["paths"].items()
        for method in operations
    }
    assert documented == set(REQUIRED_SCOPE)


def test_the_document_declares_both_ways_of_sending_a_key_where_one_is_needed(
    secured: TestClient,
) -> None:
    document = secured.app.openapi()
    assert document["components"]["securitySchemes"] == {
        "HTTPBearer": {"type": "http", "scheme": "bearer"},
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for (method, path), needed in REQUIRED_SCOPE.items():
        declared = document["paths"][path][method].get("security")
        expected = None if needed is OPEN else [{"HTTPBearer": []}, {"APIKeyHeader": []}]
        assert declared == expected, (method, path)


@pytest.mark.parametrize(("method", "path"), sorted(REQUIRED_SCOPE))
def test_route_answers_by_key_and_scope(secured: TestClient, method: str, path: str) -> None:
    needed = REQUIRED_SCOPE[(method, path)]
    anonymous = call(secured, method, path, {})
    wrong = call(secured, method, path, {"Authorization": "Bearer not-a-real-key-123"})
    if needed is OPEN:
        assert anonymous.status_code not in (401, 403)
        assert wrong.status_code not in (401, 403)
        return
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    for scope, key in KEY_OF_SCOPE.items():
        response = call(secured, method, path, {"X-API-Key": key})
        if scope in (needed, "admin"):
            assert response.status_code not in (401, 403), (scope, response.text)
            assert response.status_code < 500
        else:
            assert response.status_code == 403, (scope, response.text)
            assert needed in response.json()["detail"]


def test_declared_oversize_is_refused_before_the_body_is_read(live_server: str) -> None:
    url = urlparse(live_server)
    with socket.create_connection((url.hostname, url.port), timeout=5) as connection:
        connection.sendall(
            b"POST /v1/feedback/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500000000\r\n\r\n{"
        )
        chunks = []
        while chunk := connection.recv(4096):  # the server closes after answering
            chunks.append(chunk)
        answer = b"".join(chunks).decode()
    assert answer.startswith("HTTP/1.1 413")
    assert '"detail"' in answer


def test_docs_can_be_turned_off(clean_database: str) -> None:
    settings = Settings(database_url=clean_database, docs_enabled=False)
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404
        assert client.get("/health/live").status_code == 200


@pytest.mark.slow  # a subprocess
def test_production_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CALIB_ENV": "production",
        "CALIB_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
    }
    env.pop("CALIB_API_KEYS", None)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CALIB_API_KEYS" in result.stderr


def _sources() -> list[tuple[Path, str]]:
    return [(path, path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def test_nothing_unpickles() -> None:
    forbidden = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|shelve)\b|allow_pickle\s*=\s*True"
        r"|torch\.load|yaml\.load\(|marshal\.loads",
        re.MULTILINE,
    )
    offenders = [str(path) for path, text in _sources() if forbidden.search(text)]
    assert offenders == []


def test_sql_is_never_built_from_strings() -> None:
    # Statements are Core expressions or constant strings with bound parameters.
    formatted = re.compile(
        r"(text|exec_driver_sql|execute|SQL|copy)\(\s*(f\"|f'|\"[^\"]*\"\s*%|\"[^\"]*\"\.format)"
    )
    literal = re.compile(r"sql\.Literal|sql\.Identifier\(.*input", re.IGNORECASE)
    offenders = [
        f"{path}:{text[: m.start()].count(chr(10)) + 1}"
        for path, text in _sources()
        for m in list(formatted.finditer(text)) + list(literal.finditer(text))
    ]
    assert offenders == []
