"""Ingestion speed: records/s of POST /v1/feedback/batch beside the raw driver insert ceiling.

For each backend (a temporary SQLite file; a throw-away PostgreSQL database) the same rows are
inserted straight through the driver (sqlite3 ``executemany``; psycopg ``COPY`` and
``executemany``), then posted as JSON batches to the real service, run by uvicorn in a
subprocess on 127.0.0.1 (one worker). Every measurement starts from a freshly migrated, empty
database. The script stops by itself: sizes are capped and every wait has a deadline.

    .venv/bin/python bench/ingest.py                      # 200k rows, batches of 10k
    .venv/bin/python bench/ingest.py --rows 50000 --backends sqlite

Each path is measured ``--repeat`` times (3 by default), each time on a fresh database, and
reported as the median: a single timing of the raw insert (about a second) moves by 20% from
run to run on a shared machine, which is the size of the effect the ratio is meant to show.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from support import (
    DEFAULT_ADMIN_DSN,
    cpu_seconds,
    postgres_database,
    running_service,
    server_pid,
    sqlite_database,
)

MAX_ROWS = 2_000_000
SEGMENTS = ("default", "contracts", "invoices", "emails")
COLUMNS = (
    "external_id",
    "segment",
    "score",
    "label",
    "occurred_at",
    "received_at",
    "metadata",
    "body_sha256",
)
API_KEY = f"bench-{uuid.uuid4().hex}"
SCOPES = ("feedback:write",)


@dataclass(frozen=True)
class Workload:
    """The same records as JSON batch bodies (for HTTP) and as driver tuples (for raw inserts)."""

    bodies: list[bytes]
    rows: list[tuple]
    n: int


def make_workload(n: int, batch_size: int, seed: int) -> Workload:
    rng = random.Random(seed)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    received = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    items: list[dict[str, object]] = []
    rows: list[tuple] = []
    for i in range(n):
        occurred = base + timedelta(seconds=rng.randrange(2_000_000))
        item = {
            "external_id": f"bench-{tag}-{i:08d}",
            "segment": SEGMENTS[i % len(SEGMENTS)],
            "score": round(rng.random(), 6),
            "label": rng.random() < 0.4,
            "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        }
        items.append(item)
        digest = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()
        rows.append(
            (
                item["external_id"],
                item["segment"],
                item["score"],
                item["label"],
                occurred,
                received,
                None,
                digest,
            )
        )
    bodies = [
        json.dumps({"items": items[start : start + batch_size]}).encode()
        for start in range(0, n, batch_size)
    ]
    return Workload(bodies=bodies, rows=rows, n=n)


# Seconds of wall time, and of CPU time where it is measured: the process doing the inserts
# (this one for sqlite3; the service's server process over HTTP). None on PostgreSQL, whose
# server does much of the work.
Timing = tuple[float, float | None]

# --- the raw driver ceiling ------------------------------------------------------------------

_INSERT = f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


# The same columns without a key, constraint or index.
_MINIMAL = (
    "CREATE TABLE minimal (external_id TEXT, segment TEXT, score REAL, label INTEGER,"
    " occurred_at TEXT, received_at TEXT, metadata TEXT, body_sha256 TEXT)"
)


def raw_sqlite(path: Path, rows: list[tuple], *, minimal: bool = False) -> Timing:
    """sqlite3 executemany in one transaction, the service's pragmas, into the feedback table
    (or, ``minimal``, into ``_MINIMAL``); the timestamp text is formatted the way SQLAlchemy
    stores it, outside the timing."""
    prepared = [(*row[:4], _sqlite_ts(row[4]), _sqlite_ts(row[5]), row[6], row[7]) for row in rows]
    insert = f"INSERT INTO minimal VALUES ({', '.join('?' * len(COLUMNS))})" if minimal else _INSERT
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA wal_autocheckpoint=10000")
        if minimal:
            connection.execute(_MINIMAL)
        start, cpu_start = time.perf_counter(), time.process_time()
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(insert, prepared)
        connection.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        connection.close()
    return elapsed, cpu


def _sqlite_ts(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def raw_pg_copy(dsn: str, rows: list[tuple]) -> Timing:
    with psycopg.connect(dsn) as connection:
        start = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY feedback ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        connection.commit()
        return time.perf_counter() - start, None


def raw_pg_executemany(dsn: str, rows: list[tuple]) -> Timing:
    statement = _INSERT.replace("?", "%s")
    with psycopg.connect(dsn) as connection:
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.executemany(statement, rows)
        connection.commit()
        return time.perf_counter() - start, None


# --- the service over HTTP -------------------------------------------------------------------


def post_batches(base_url: str, bodies: list[bytes], clients: int, deadline: float) -> float:
    """Post every body (``clients`` at a time); returns the seconds taken."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}

    def send(client: httpx.Client, body: bytes) -> int:
        if time.monotonic() > deadline:
            raise TimeoutError("bench deadline reached")
        response = client.post(f"{base_url}/v1/feedback/batch", content=body, headers=headers)
        if response.status_code != 201:
            raise RuntimeError(f"batch answered {response.status_code}: {response.text[:300]}")
        return response.json()["inserted"]

    with httpx.Client(timeout=120) as warm:
        send(warm, b'{"items": []}')
    pool = [httpx.Client(timeout=120) for _ in range(clients)]
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as executor:
            inserted = sum(
                executor.map(lambda pair: send(pool[pair[0] % clients], pair[1]), enumerate(bodies))
            )
        elapsed = time.perf_counter() - start
    finally:
        for client in pool:
            client.close()
    expected = sum(len(json.loads(body)["items"]) for body in bodies)
    if inserted != expected:
        raise RuntimeError(f"the service inserted {inserted} records, expected {expected}")
    return elapsed


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    path: str
    seconds: float
    n: int
    cpu_seconds: float | None = None

    @property
    def cpu_us(self) -> float | None:
        """CPU time per record: what other processes' load changes much less than the rate."""
        return None if self.cpu_seconds is None else 1e6 * self.cpu_seconds / self.n

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def measure(
    label: str,
    backend: str,
    fn: Callable[[], Timing],
    n: int,
    results: list[Result],
    repeat: int,
) -> None:
    """Run ``fn`` (which sets up its own fresh database) ``repeat`` times; keep the medians."""
    timings = [fn() for _ in range(repeat)]
    walls = sorted(wall for wall, _ in timings)
    cpus = [cpu for _, cpu in timings if cpu is not None]
    result = Result(
        backend, label, statistics.median(walls), n, statistics.median(cpus) if cpus else None
    )
    results.append(result)
    spread = ", ".join(f"{n / t:,.0f}" for t in walls)
    cpu = f", {result.cpu_us:.1f} us CPU/record" if result.cpu_us is not None else ""
    print(f"  {backend:10s} {label:28s} {result.rate:12,.0f} records/s  (runs: {spread}{cpu})")


def run(args: argparse.Namespace) -> list[Result]:
    deadline = time.monotonic() + args.max_seconds
    work = make_workload(args.rows, args.batch_size, args.seed)
    print(f"{work.n:,} records, {len(work.bodies)} batches of <= {args.batch_size:,}")
    results: list[Result] = []
    http_paths = [(f"HTTP, {c} client{'s' if c > 1 else ''}", c) for c in args.clients]

    def on_sqlite(insert: Callable[[Path], Timing]) -> Callable[[], Timing]:
        def once() -> Timing:
            with sqlite_database() as db:
                return insert(db.path)

        return once

    def on_postgres(insert: Callable[[str], Timing]) -> Callable[[], Timing]:
        def once() -> Timing:
            with postgres_database(args.pg_dsn) as db:
                return insert(db.dsn)

        return once

    def over_http(fresh: Callable[[], Any], clients: int) -> Callable[[], Timing]:
        def once() -> Timing:
            with (
                fresh() as db,
                running_service(db.url, API_KEY, SCOPES, deadline=deadline) as base,
            ):
                pid = server_pid(base)
                before = cpu_seconds(pid)
                wall = post_batches(base, work.bodies, clients, deadline)
                # On PostgreSQL the database server's work is not in it: no CPU figure there.
                cpu = cpu_seconds(pid) - before if db.url.startswith("sqlite") else None
                return wall, cpu

        return once

    def measured(label: str, backend: str, fn: Callable[[], float]) -> None:
        measure(label, backend, fn, work.n, results, args.repeat)

    if "sqlite" in args.backends:
        measured("raw executemany", "sqlite", on_sqlite(lambda p: raw_sqlite(p, work.rows)))
        measured(
            "raw, minimal table",
            "sqlite",
            on_sqlite(lambda p: raw_sqlite(p, work.rows, minimal=True)),
        )
        for label, clients in http_paths:
            measured(label, "sqlite", over_http(sqlite_database, clients))

    if "postgresql" in args.backends:
        measured("raw COPY", "postgresql", on_postgres(lambda d: raw_pg_copy(d, work.rows)))
        measured(
            "raw executemany",
            "postgresql",
            on_postgres(lambda d: raw_pg_executemany(d, work.rows)),
        )
        for label, clients in http_paths:
            measured(
                label, "postgresql", over_http(lambda: postgres_database(args.pg_dsn), clients)
            )
    return results


TARGET = 0.5  # of the raw SQLite insert, issue 16


def report(results: list[Result]) -> None:
    def rate(backend: str, path: str) -> float | None:
        return next((r.rate for r in results if (r.backend, r.path) == (backend, path)), None)

    def ratio(value: float, against: float | None) -> str:
        return f"{value / against:10.2f}" if against else f"{'-':>10s}"

    ceiling = rate("sqlite", "raw executemany")
    minimal = rate("sqlite", "raw, minimal table")
    print()
    header = (
        f"{'backend':10s} {'path':28s} {'records/s':>12s} {'/ raw':>10s} {'/ minimal':>10s}"
        f" {'/ raw same':>10s}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        same = rate(result.backend, "raw COPY") or rate(result.backend, "raw executemany")
        print(
            f"{result.backend:10s} {result.path:28s} {result.rate:12,.0f}"
            f" {ratio(result.rate, ceiling)} {ratio(result.rate, minimal)}"
            f" {ratio(result.rate, same)}"
        )
    print(
        "('/ raw': against sqlite3 executemany into the feedback table, its key and index;"
        " '/ minimal': into a table of the same columns without them;"
        " '/ raw same': against COPY on PostgreSQL, executemany on SQLite)"
    )
    cpu_raw = next((r.cpu_us for r in results if r.path == "raw executemany" and r.cpu_us), None)
    for result in results:
        if result.backend == "sqlite" and "HTTP" in result.path and result.cpu_us and cpu_raw:
            print(
                f"CPU per record, {result.path}: {result.cpu_us:.1f} us against {cpu_raw:.1f} us"
                f" for the raw insert ({cpu_raw / result.cpu_us:.2f} of the raw rate at full CPU)"
            )
    best = max((r.rate for r in results if r.backend == "sqlite" and "HTTP" in r.path), default=0)
    for name, against in (("raw", ceiling), ("minimal", minimal)):
        if best and against:
            verdict = "met" if best / against >= TARGET else "NOT met"
            print(f"SQLite batch target (>= {TARGET} of {name}): {verdict} ({best / against:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help=f"at most {MAX_ROWS:,}")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument(
        "--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 2], help="concurrent HTTP clients per run"
    )
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("CALIB_TEST_PG_DSN", DEFAULT_ADMIN_DSN),
        help="an admin connection on the loopback server, to create and drop the bench database",
    )
    parser.add_argument("--max-seconds", type=float, default=600, help="give up after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the median counts")
    args = parser.parse_args()
    if not 1 <= args.rows <= MAX_ROWS:
        parser.error(f"--rows must be between 1 and {MAX_ROWS:,}")
    if not 1 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be between 1 and 10,000 (the service's limit)")
    if not 1 <= args.repeat <= 9:
        parser.error("--repeat must be between 1 and 9")
    if not all(1 <= c <= 8 for c in args.clients):
        parser.error("--clients must be between 1 and 8")
    host = httpx.URL(args.pg_dsn.replace("postgresql://", "http://", 1)).host
    if "postgresql" in args.backends and host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--pg-dsn must point at the loopback interface")
    report(run(args))


if __name__ == "__main__":
    main()
