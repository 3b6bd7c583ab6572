"""The analyzer's hot path: single POST /v1/feedback beside a bare FastAPI endpoint, same run.

For each backend (a temporary SQLite file; a throw-away PostgreSQL database on 127.0.0.1) the
real service runs under uvicorn in a subprocess (one worker). Beside it, started the same way,
runs a bare FastAPI app whose endpoints validate the same bodies into plain pydantic models and
store nothing. Each case is measured with wrk (``/usr/bin/wrk``; an asyncio httpx load generator
where wrk is absent) at 1 and 8 connections, the bare endpoint right before the service so both
see the same machine load; ``--repeat`` rounds give ranges:

* ``feedback``: ``POST /v1/feedback``, a unique ``external_id`` per request; afterwards the
  stored rows are counted and must equal the acknowledged (201) posts, give or take the
  requests in flight when the load generator stopped (at most one per connection);
* ``calibrate``: ``POST /v1/calibrate`` with 1,000 scores (a model is trained first);
* ``artifact``: ``GET /v1/models/active/artifact`` with a matching ``If-None-Match`` (304).

It prints req/s, p99, the ratio to the bare endpoint, and whether the targets hold (feedback
at 8 connections: >= 0.5 of the bare req/s, p99 <= 25 ms). Because other processes may load
the machine, it also prints each server's CPU time per request (from /proc), which that load
changes much less than req/s or p99. Exit status 1 when a check fails.
It stops by itself: durations are capped and every wait has a deadline.

    .venv/bin/python bench/hotpath.py                       # both backends, 10 s runs, 3 rounds
    .venv/bin/python bench/hotpath.py --backends sqlite --seconds 5 --repeat 1 --cases feedback
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import psycopg
from support import (
    DEFAULT_ADMIN_DSN,
    PROJECT_ROOT,
    cpu_seconds,
    free_port,
    postgres_database,
    running_service,
    server_pid,
    sqlite_database,
    stop_process,
)

MAX_SECONDS_PER_RUN = 60
API_KEY = f"bench-{uuid.uuid4().hex}"
SCOPES = ("feedback:write", "read", "train")
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
CALIBRATE_SCORES = 1000
TRAINING_RECORDS = 5000

# The bare app: the same bodies validated into plain pydantic models, nothing stored, run by
# uvicorn exactly as support.running_service runs the service. argv: port.
BARE_SERVER = """
import gc
import sys
from datetime import datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, Response
from pydantic import BaseModel


class Feedback(BaseModel):
    score: float
    label: bool
    segment: str = "default"
    external_id: str | None = None
    source: str | None = None
    occurred_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class Scores(BaseModel):
    scores: list[float]
    segment: str = "default"


app = FastAPI()


@app.get("/health/live")
async def live() -> dict:
    return {"status": "ok"}


@app.post("/v1/feedback", status_code=201)
async def feedback(item: Feedback) -> Feedback:
    return item


@app.post("/v1/calibrate")
async def calibrate(body: Scores) -> Scores:
    return body


@app.get("/v1/models/active/artifact")
async def artifact(if_none_match: str | None = Header(None)) -> Response:
    return Response(status_code=304, headers={"ETag": if_none_match or '"x"'})


gc.freeze()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), workers=1, log_level="warning")
"""

# Shared by both scripts: threads are registered in setup(); each counts the answers with the
# expected status (good) and the others; done() sums them and prints one RESULT line.
COMMON_LUA = """
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status == %(status)d then good = good + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local g, o = 0, 0
  for _, t in ipairs(threads) do
    g = g + t:get("good")
    o = o + t:get("other")
  end
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(99), g, o,
    summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""

# A unique external_id per request: the run's tag, the wrk thread, a counter.
FEEDBACK_LUA = """
local tag = "%(tag)s"

function init(args)
  n = 0
  good = 0
  other = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "%(auth)s"
end

function request()
  n = n + 1
  local body = string.format(
    '{"score":0.%%d,"label":%%s,"segment":"bench","external_id":"%%s-%%d-%%d"}',
    (n * 7919) %% 1000, (n %% 2 == 0) and "true" or "false", tag, id, n)
  return wrk.format(nil, "/v1/feedback", nil, body)
end
"""

# A fixed request.
FIXED_LUA = """
function init(args)
  good = 0
  other = 0
  wrk.method = "%(method)s"
  wrk.path = "%(path)s"
  wrk.body = %(body)s
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "%(auth)s"
  wrk.headers["If-None-Match"] = "%(etag)s"
end
"""


@dataclass(frozen=True)
class Request:
    """One case's request: ``body`` None for a GET; ``unique`` gives each post its own id."""

    method: str
    path: str
    status: int
    body: bytes | None = None
    etag: str = ""
    unique: bool = False


@dataclass
class Run:
    """What one load-generator run saw."""

    requests: int
    seconds: float
    p99_ms: float
    good: int  # answers with the expected status
    other: int  # any other status
    socket_errors: int
    cpu_seconds: float = 0.0  # user + system time of the server process during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request: what the load of other processes does not change much."""
        return 1000 * self.cpu_seconds / max(self.requests, 1)


# --- load generators -------------------------------------------------------------------------


def run_wrk(base_url: str, request: Request, connections: int, seconds: float) -> Run:
    auth = f"Bearer {API_KEY}"
    if request.unique:
        script = FEEDBACK_LUA % {"tag": uuid.uuid4().hex[:8], "auth": auth}
    else:
        body = "nil" if request.body is None else json.dumps(request.body.decode())
        script = FIXED_LUA % {
            "method": request.method,
            "path": request.path,
            "body": body,
            "auth": auth,
            "etag": request.etag.replace('"', '\\"'),
        }
    script = COMMON_LUA % {"status": request.status} + script
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        completed = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                handle.name,
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        )
    finally:
        os.unlink(handle.name)
    match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", completed.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")
    requests, micros, p99_us, good, other, errors = map(int, match.groups())
    return Run(requests, micros / 1e6, p99_us / 1000, good, other, errors)


def run_httpx(base_url: str, request: Request, connections: int, seconds: float) -> Run:
    """The fallback: ``connections`` asyncio tasks, each with its own keep-alive connection."""
    tag = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    counts = {"good": 0, "other": 0, "errors": 0}
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    if request.etag:
        headers["If-None-Match"] = request.etag

    async def worker(index: int, stop_at: float) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as client:
            n = 0
            while time.perf_counter() < stop_at:
                n += 1
                body = request.body
                if request.unique:
                    body = json.dumps(
                        {
                            "score": (n * 7919) % 1000 / 1000,
                            "label": n % 2 == 0,
                            "segment": "bench",
                            "external_id": f"{tag}-{index}-{n}",
                        }
                    ).encode()
                started = time.perf_counter()
                try:
                    response = await client.request(
                        request.method, request.path, content=body, headers=headers
                    )
                except httpx.TransportError:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                counts["good" if response.status_code == request.status else "other"] += 1

    async def main() -> float:
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(worker(i, stop_at) for i in range(connections)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    p99 = float(np.percentile(latencies, 99)) * 1000 if latencies else float("nan")
    return Run(len(latencies), elapsed, p99, counts["good"], counts["other"], counts["errors"])


def load(base_url: str, request: Request, connections: int, seconds: float) -> Run:
    pid = server_pid(base_url)
    before = cpu_seconds(pid)
    if shutil.which("wrk"):
        run = run_wrk(base_url, request, connections, seconds)
    else:
        run = run_httpx(base_url, request, connections, seconds)
    run.cpu_seconds = cpu_seconds(pid) - before
    return run


# --- the servers -----------------------------------------------------------------------------


@contextlib.contextmanager
def bare_service() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare service did not start")
            time.sleep(0.1)
        yield base_url
    finally:
        stop_process(process)


def train_a_model(base_url: str) -> str:
    """Load overconfident feedback, train until a model is active; returns its ETag."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, TRAINING_RECORDS)
    labels = rng.uniform(0, 1, TRAINING_RECORDS) < 0.5 + (scores - 0.5) * 0.4
    items = [{"score": float(s), "label": bool(y)} for s, y in zip(scores, labels, strict=True)]
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        client.post("/v1/feedback/batch", json={"items": items}).raise_for_status()
        run = client.post("/v1/training-runs", json={"force": True})
        run.raise_for_status()
        deadline = time.monotonic() + 120
        while (status := client.get(f"/v1/training-runs/{run.json()['id']}").json()["status"]) in (
            "queued",
            "running",
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("training did not finish within 120 s")
            time.sleep(0.1)
        if status != "deployed":
            raise RuntimeError(f"the bench's training run ended {status}, not deployed")
        return client.get("/v1/models/active/artifact").headers["ETag"]


def count_stored(database_url: str, dsn: str | None) -> int:
    query = "SELECT count(*) FROM feedback WHERE segment = 'bench'"
    if dsn is not None:
        with psycopg.connect(dsn) as connection:
            return connection.execute(query).fetchone()[0]
    path = database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(query).fetchone()[0]


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    case: str
    connections: int
    round: int
    service: Run
    bare: Run
    stored: int | None = None

    @property
    def ratio(self) -> float:
        return self.service.rate / self.bare.rate

    @property
    def cpu_ratio(self) -> float:
        """Bare CPU per request over the service's: the req/s ratio once the server's CPU,
        not the machine's other load, is the limit."""
        return self.bare.cpu_ms / self.service.cpu_ms if self.service.cpu_ms else float("nan")

    def problems(self) -> list[str]:
        found = []
        for name, run in (("service", self.service), ("bare", self.bare)):
            if run.other or run.socket_errors:
                found.append(
                    f"{name}: {run.other} unexpected statuses, {run.socket_errors} socket errors"
                )
        if self.stored is not None and not 0 <= self.stored - self.service.good <= (
            self.connections
        ):
            found.append(f"stored {self.stored} != acknowledged {self.service.good}")
        return found


def cases(etag: str | None) -> dict[str, Request]:
    scores = np.random.default_rng(1).uniform(0, 1, CALIBRATE_SCORES).round(6).tolist()
    found = {
        "feedback": Request("POST", "/v1/feedback", 201, unique=True),
        "calibrate": Request(
            "POST", "/v1/calibrate", 200, body=json.dumps({"scores": scores}).encode()
        ),
    }
    if etag is not None:
        found["artifact"] = Request("GET", "/v1/models/active/artifact", 304, etag=etag)
    return found


def run_backend(
    backend: str, url: str, dsn: str | None, bare_url: str, args: argparse.Namespace
) -> list[Row]:
    rows: list[Row] = []
    with running_service(url, API_KEY, SCOPES) as base:
        wanted = set(args.cases)
        etag = train_a_model(base) if wanted & {"calibrate", "artifact"} else None
        requests = {name: r for name, r in cases(etag).items() if name in wanted}
        # Warm both servers (imports, caches, pool connections) outside the measurements.
        for request in requests.values():
            for target in (bare_url, base):
                load(target, request, 8, 1)
        for round_ in range(1, args.repeat + 1):
            for name, request in requests.items():
                for connections in args.connections:
                    bare = load(bare_url, request, connections, args.seconds)
                    # Counted after the bare run: the posts the previous run left in flight
                    # have long been answered by now.
                    before = count_stored(url, dsn) if request.unique else None
                    service = load(base, request, connections, args.seconds)
                    stored = None
                    if before is not None:
                        stored = count_stored(url, dsn) - before
                    row = Row(backend, name, connections, round_, service, bare, stored)
                    rows.append(row)
                    print(
                        f"  {backend:10s} {name:9s} c={connections} round {round_}: service"
                        f" {service.rate:7,.0f} req/s p99 {service.p99_ms:7.1f} ms"
                        f" {service.cpu_ms:.2f} CPU ms/req | bare {bare.rate:7,.0f} req/s p99"
                        f" {bare.p99_ms:6.1f} ms {bare.cpu_ms:.2f} CPU ms/req"
                        f" | ratio {row.ratio:.2f}"
                        + (f" | stored {stored} / acknowledged {service.good}" if stored else "")
                        + "".join(f" | PROBLEM {p}" for p in row.problems()),
                        flush=True,
                    )
    return rows


def span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if len(values) == 1 else f"{low:{fmt}}-{high:{fmt}}"


def report(rows: list[Row]) -> bool:
    print()
    header = (
        f"{'backend':10s} {'case':9s} {'conn':>4s} {'service req/s':>15s} {'bare req/s':>15s}"
        f" {'ratio':>10s} {'service p99 ms':>15s} {'bare p99 ms':>12s}"
        f" {'CPU ms/req':>11s} {'bare CPU':>9s} {'CPU ratio':>10s}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    groups: dict[tuple[str, str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.backend, row.case, row.connections), []).append(row)
    verdicts = []
    for (backend, case, connections), group in groups.items():
        ratios = [r.ratio for r in group]
        p99s = [r.service.p99_ms for r in group]
        print(
            f"{backend:10s} {case:9s} {connections:4d}"
            f" {span([r.service.rate for r in group], ',.0f'):>15s}"
            f" {span([r.bare.rate for r in group], ',.0f'):>15s}"
            f" {span(ratios, '.2f'):>10s} {span(p99s, '.1f'):>15s}"
            f" {span([r.bare.p99_ms for r in group], '.1f'):>12s}"
            f" {span([r.service.cpu_ms for r in group], '.2f'):>11s}"
            f" {span([r.bare.cpu_ms for r in group], '.2f'):>9s}"
            f" {span([r.cpu_ratio for r in group], '.2f'):>10s}"
        )
        for row in group:
            if row.problems():
                ok = False
        if case == "feedback" and connections == 8:
            # The median round decides; the range is printed above.
            ratio, p99 = float(np.median(ratios)), float(np.median(p99s))
            met = ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS
            verdicts.append(
                f"{backend}: feedback at 8 connections, median ratio {ratio:.2f}"
                f" (target >= {TARGET_RATIO}), median p99 {p99:.1f} ms (target <="
                f" {TARGET_P99_MS:g}): {'MET' if met else 'NOT MET'}"
            )
    print()
    for verdict in verdicts:
        print(verdict)
    checks = [p for row in rows for p in row.problems()]
    print(
        "CPU ratio: bare CPU per request / service CPU per request (server process only; on"
        " PostgreSQL the database server's own CPU is not in it)"
    )
    print("checks: " + ("all passed" if not checks else "; ".join(checks)))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=("feedback", "calibrate", "artifact"),
        default=["feedback", "calibrate", "artifact"],
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=10, help="per load-generator run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, for ranges")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("CALIB_TEST_PG_DSN", DEFAULT_ADMIN_DSN),
        help="an admin connection on the loopback server, to create and drop the bench database",
    )
    args = parser.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS_PER_RUN:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS_PER_RUN}]")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be between 1 and 10")
    if not all(1 <= c <= 64 for c in args.connections):
        parser.error("--connections must be between 1 and 64")
    host = httpx.URL(args.pg_dsn.replace("postgresql://", "http://", 1)).host
    if "postgresql" in args.backends and host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--pg-dsn must point at the loopback interface")
    generator = "wrk" if shutil.which("wrk") else "httpx (wrk not found)"
    print(f"load generator: {generator}; {args.seconds:g} s per run, {args.repeat} rounds")

    rows: list[Row] = []
    with bare_service() as bare_url:
        if "sqlite" in args.backends:
            with sqlite_database() as db:
                rows += run_backend("sqlite", db.url, None, bare_url, args)
        if "postgresql" in args.backends:
            with postgres_database(args.pg_dsn) as db:
                rows += run_backend("postgresql", db.url, db.dsn, bare_url, args)
    sys.exit(0 if report(rows) else 1)


if __name__ == "__main__":
    main()
