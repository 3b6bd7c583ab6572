"""The operator's page as a user reads it: segments, versions, runs, alerts and its pictures."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from seeding import seed_service

from app.config import Settings
from app.main import create_app


class Page(HTMLParser):
    """Tables (rows of cell texts, keyed by the id of their section or class) and images."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.text: list[str] = []
        self._section = ""
        self._table_class = ""
        self._rows: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._span = 1
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "section":
            self._section = attributes.get("id", "")
        elif tag == "table":
            self._table_class = attributes.get("class", "")
            self._rows = []
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
            self._span = int(attributes.get("colspan", "1"))
        elif tag == "img":
            self.images.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._rows:
            self._rows[-1] += [" ".join("".join(self._cell).split())] * self._span
            self._cell = None
        elif tag == "table" and self._rows is not None:
            self.tables.append((self._table_class or self._section, self._rows))
            self._rows = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, name: str) -> list[dict[str, str]]:
        """The first table named ``name`` as dicts keyed by its lower-cased header cells."""
        rows = next(rows for key, rows in self.tables if key == name)
        header, *body = rows
        return [dict(zip([h.lower() for h in header], row, strict=True)) for row in body]


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    seed_service(client)
    return client


def test_page_lists_segments_versions_runs_and_alerts(seeded: TestClient) -> None:
    response = seeded.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = Page(response.text)
    v1 = seeded.get("/v1/models/default/1").json()
    health = seeded.get("/health").json()

    segments = {row["segment"]: row for row in page.table("segments")}
    assert set(segments) == {"default", "sparse"}
    default = segments["default"]
    assert default["active version"] == "v1"
    # v1 is an auto fit: an average of maps stored as one table. The column names what the
    # training run averaged, by weight, as its selection record says.
    run = seeded.get(f"/v1/training-runs/{v1['training_run_id']}").json()
    weights = run["evaluation_results"]["selection"]["weights"]
    used = sorted(((w, name) for name, w in weights.items() if w > 0), reverse=True)
    assert len(used) >= 2 and v1["method"] == "isotonic"
    expected_fit = "average: " + ", ".join(f"{name} {w:.2f}" for w, name in used)
    assert default["method"] == expected_fit
    assert default["ece"] == f"{v1['metrics']['ece']:.4f}"
    assert default["brier"] == f"{v1['metrics']['brier']:.4f}"
    assert default["samples"] == "520"
    assert default["new"] == "120"
    recent_ece = health["checks"]["calibration_drift"]["segments"]["default"]["recent_ece"]
    assert default["recent ece"] == f"{recent_ece:.4f} (n=120)"
    assert default["age"].endswith(("min", "h"))
    assert segments["sparse"]["active version"] == "no active model"

    versions = page.table("versions")
    assert [(v["version"], v["status"]) for v in versions] == [
        ("v2", "rejected"),
        ("v1", "active"),
    ]
    assert versions[1]["ece"] == f"{v1['metrics']['ece']:.4f}"
    assert versions[1]["method"] == expected_fit

    runs = page.table("runs")
    stored_runs = seeded.get("/v1/training-runs").json()["items"]
    assert [(r["run"], r["status"], r["reason"]) for r in runs] == [
        (str(r["id"]), r["status"], r["reason"]) for r in stored_runs
    ]
    assert [r["version"] for r in runs] == ["v2", "v1"]

    text = " ".join(" ".join(page.text).split())
    assert health["status"] == "degraded"
    assert "degraded" in text
    for alert in health["alerts"]:
        assert alert["message"] in text
    assert "insufficient_data" in text and "segment 'sparse' has 10 samples" in text


def test_page_escapes_what_it_shows(seeded: TestClient) -> None:
    html = seeded.get("/dashboard").text
    # The deploy reason reads "0.18 -> 0.07"; the raw '>' never reaches the markup.
    reason = seeded.get("/v1/training-runs").json()["items"][-1]["reason"]
    assert "->" in reason
    assert reason.replace(">", "&gt;") in html
    assert reason not in html
    assert "segment &#39;sparse&#39; has 10 samples" in html


def test_every_picture_on_the_page_is_served_as_svg(seeded: TestClient) -> None:
    page = Page(seeded.get("/dashboard").text)
    sources = [image["src"] for image in page.images]
    assert sources == [
        "/v1/models/default/1/reliability?format=svg",
        "/dashboard/segments/default/metrics.svg",
    ]
    for image in page.images:
        assert image["alt"]
        picture = seeded.get(image["src"])
        assert picture.status_code == 200
        assert picture.headers["content-type"] == "image/svg+xml"
        ET.fromstring(picture.text)


def test_metrics_chart_draws_each_version_and_marks_the_active_one(seeded: TestClient) -> None:
    response = seeded.get("/dashboard/segments/default/metrics.svg")
    root = ET.fromstring(response.text)
    ids = {e.get("id") for e in root.iter() if e.get("id")}
    assert {"ece-line", "brier-line", "active-version"} <= ids
    line = next(e for e in root.iter() if e.get("id") == "ece-line")
    path = line.find("{http://www.w3.org/2000/svg}path").get("d")
    assert path.count("L") == 1  # two versions: one segment between their points
    missing = seeded.get("/dashboard/segments/sparse/metrics.svg")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "segment 'sparse' has no model versions"}


def test_empty_service_shows_an_empty_page(client: TestClient) -> None:
    response = client.get("/dashboard")
    assert response.status_code == 200
    page = Page(response.text)
    text = " ".join(page.text)
    assert "No feedback and no models yet." in text
    assert "No training runs yet." in text
    assert "no_data" in text
    assert page.images == []


def test_page_and_pictures_need_the_read_scope(clean_database: str) -> None:
    settings = Settings(
        database_url=clean_database,
        env="test",
        scheduler_enabled=False,
        api_keys={"reader-key-0123456789": ["read"], "writer-key-0123456789": ["feedback:write"]},
    )
    with TestClient(create_app(settings)) as client:
        for path in (
            "/dashboard",
            "/dashboard/segments/default/metrics.svg",
            "/v1/models/default/1/reliability?format=svg",
        ):
            anonymous = client.get(path)
            assert anonymous.status_code == 401
            assert anonymous.json() == {"detail": "missing or invalid API key"}
            writer = client.get(path, headers={"X-API-Key": "writer-key-0123456789"})
            assert writer.status_code == 403
        reader = client.get("/dashboard", headers={"Authorization": "Bearer reader-key-0123456789"})
        assert reader.status_code == 200 and "text/html" in reader.headers["content-type"]
