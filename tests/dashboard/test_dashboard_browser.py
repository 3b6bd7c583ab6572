"""The dashboard in a real browser: headless Chromium against a running service with data."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image
from seeding import seed_service

from app import migrations
from app.config import Settings
from app.main import create_app

# Slow: a headless browser.
pytestmark = pytest.mark.slow

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1280, 2000)
# Colours of the candidate (blue) and production (orange) curves in the diagrams.
CANDIDATE_RGB = (31, 119, 180)
PRODUCTION_RGB = (255, 127, 14)


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; in CI its absence is a failure, elsewhere a skip."""
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = "no headless browser: install Debian's 'chromium' package"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class RequestLog:
    """An ASGI wrapper that remembers every answer: who asked, for what, and what came back."""

    app: Any
    answers: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def recording_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message["headers"])
                request_headers = dict(scope["headers"])
                query = scope["query_string"].decode()
                self.answers.append(
                    {
                        "target": scope["path"] + (f"?{query}" if query else ""),
                        "status": message["status"],
                        "content_type": headers.get(b"content-type", b"").decode(),
                        "user_agent": request_headers.get(b"user-agent", b"").decode(),
                    }
                )
            await send(message)

        await self.app(scope, receive, recording_send)


@dataclass
class LiveService:
    url: str
    log: RequestLog


@pytest.fixture
def live_service(tmp_path: Path) -> Iterator[LiveService]:
    """uvicorn on a free port of 127.0.0.1, on a migrated SQLite file, seeded with data."""
    database_url = f"sqlite:///{tmp_path / 'calibration.db'}"
    migrations.upgrade(database_url)
    settings = Settings(database_url=database_url, env="test", scheduler_enabled=False)
    log = RequestLog(create_app(settings))
    server = uvicorn.Server(uvicorn.Config(log, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            seed_service(client)
        yield LiveService(url=url, log=log)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run_browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


class RenderedDom(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        elif tag == "table":
            self.tables.append(attributes.get("class") or "")


def console_problems(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line or "Uncaught" in line or "ERR_" in line
    ]


def pixels_near(image: Image.Image, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    return sum(
        count
        for count, colour in image.getcolors(maxcolors=WINDOW[0] * WINDOW[1])
        if all(abs(a - b) <= tolerance for a, b in zip(colour[:3], rgb, strict=True))
    )


def test_dashboard_renders_with_its_diagrams_in_chromium(
    chromium: str, live_service: LiveService, tmp_path: Path
) -> None:
    binary = chromium
    page = f"{live_service.url}/dashboard"

    dom_run = run_browser(binary, tmp_path / "profile-dom", "--dump-dom", page)
    dom = RenderedDom(dom_run.stdout)
    assert dom.tables == ["", "versions", ""]  # segments, the versions of 'default', runs
    assert "Segment default" in dom_run.stdout and "Segment sparse" in dom_run.stdout
    expected_images = [
        "/v1/models/default/1/reliability?format=svg",
        "/dashboard/segments/default/metrics.svg",
    ]
    assert dom.images == expected_images
    assert console_problems(dom_run.stderr) == []

    screenshot = tmp_path / "dashboard.png"
    shot_run = run_browser(binary, tmp_path / "profile-shot", f"--screenshot={screenshot}", page)
    assert console_problems(shot_run.stderr) == []

    # The browser itself fetched every picture, and each came back as an SVG.
    browser_answers = [
        answer for answer in live_service.log.answers if "HeadlessChrome" in answer["user_agent"]
    ]
    for source in ["/dashboard", *expected_images]:
        answers = [a for a in browser_answers if a["target"] == source]
        assert answers, f"the browser never requested {source}"
        assert all(a["status"] == 200 for a in answers), answers
    for source in expected_images:
        assert {a["content_type"] for a in browser_answers if a["target"] == source} == {
            "image/svg+xml"
        }
    failed = [a for a in browser_answers if a["status"] >= 400 and a["target"] != "/favicon.ico"]
    assert failed == []

    # The diagrams are painted: the curves' colours cover part of the screenshot.
    image = Image.open(screenshot).convert("RGB")
    assert image.size == WINDOW
    assert pixels_near(image, CANDIDATE_RGB) > 500
    assert pixels_near(image, PRODUCTION_RGB) > 500
