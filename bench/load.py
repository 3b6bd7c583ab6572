"""Load: concurrent feedback posts while a training run happens; checks stored == acknowledged.

For each backend (a temporary SQLite file; a throw-away PostgreSQL database on 127.0.0.1) the
real service runs under uvicorn in a subprocess (one worker) on a freshly migrated database.
It is preloaded through ``POST /v1/feedback/batch`` so that a training run takes a few
seconds. Then ``--clients`` threads, each with its own httpx client, post feedback (a mix of
single ``POST /v1/feedback`` and small ``POST /v1/feedback/batch``) with unique external ids:

1. a short baseline window without training;
2. the measured window of ``--seconds``; at a third of it ``POST /v1/training-runs``
   (force=true) is sent and polled until the run finishes.

Then every stored record is read back through ``GET /v1/feedback/export?format=ndjson`` and
the stored external ids are compared with the acknowledged ones (201/200). The script prints
one table row per backend and exits 1 when a check fails or the service answered any 5xx.
It stops by itself: the window is capped at 120 s and every wait has a deadline.

    .venv/bin/python bench/load.py                               # both backends, 8 clients, 20 s
    .venv/bin/python bench/load.py --backend sqlite --clients 4 --seconds 10 --mix 0.8:50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from support import DEFAULT_ADMIN_DSN, postgres_database, running_service, sqlite_database

MAX_SECONDS = 120
MAX_CLIENTS = 64
MAX_PRELOAD = 1_000_000
REQUEST_TIMEOUT = 30.0
FINAL_RUN_STATUSES = frozenset({"deployed", "rejected", "skipped", "failed"})
API_KEY = f"bench-{uuid.uuid4().hex}"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
SCOPES = ("feedback:write", "read", "train")


# --- the service with its stderr -------------------------------------------------------------


@dataclass
class Service:
    base_url: str
    stderr_path: Path

    def stderr_problems(self, limit: int = 60) -> list[str]:
        """Lines of the server's stderr from tracebacks, errors and warnings (at most ``limit``)."""
        text = self.stderr_path.read_text(errors="replace")
        keep: list[str] = []
        in_traceback = False
        for line in text.splitlines():
            if line.startswith("Traceback"):
                in_traceback = True
            if in_traceback or any(word in line for word in ("ERROR", "CRITICAL", "Exception")):
                keep.append(line)
            if in_traceback and line and not line.startswith((" ", "Traceback")):
                in_traceback = False
        return keep[:limit]


@contextlib.contextmanager
def service_with_stderr(database_url: str) -> Iterator[Service]:
    """The service (see ``support.running_service``) with its stderr kept in a temporary file."""
    with tempfile.NamedTemporaryFile(prefix="calib_load_stderr_", suffix=".log") as stderr:
        path = Path(stderr.name)
        with running_service(database_url, API_KEY, SCOPES, stderr_path=path) as base_url:
            yield Service(base_url, path)


# --- records ---------------------------------------------------------------------------------


def overconfident(rng: np.random.Generator, n: int) -> list[tuple[float, bool]]:
    """Scores more extreme than the real accuracy (as tests/conftest.py's fixture)."""
    scores = rng.uniform(0.0, 1.0, n)
    labels = rng.uniform(0.0, 1.0, n) < 0.5 + (scores - 0.5) * 0.4
    return [(round(float(s), 6), bool(y)) for s, y in zip(scores, labels, strict=True)]


def preload(base_url: str, n: int, seed: int, deadline: float) -> float:
    """Post ``n`` records without external ids in batches of 10,000 (two at a time)."""
    rng = np.random.default_rng(seed + 1_000_003)
    bodies = []
    pairs = overconfident(rng, n)
    for start in range(0, n, 10_000):
        items = [{"score": s, "label": y} for s, y in pairs[start : start + 10_000]]
        bodies.append(json.dumps({"items": items}).encode())

    def send(client: httpx.Client, body: bytes) -> int:
        if time.monotonic() > deadline:
            raise TimeoutError("preload deadline reached")
        response = client.post(
            f"{base_url}/v1/feedback/batch",
            content=body,
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"preload batch answered {response.status_code}: {response.text}")
        return response.json()["inserted"]

    started = time.perf_counter()
    clients = [httpx.Client(timeout=120) for _ in range(2)]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            inserted = sum(pool.map(lambda p: send(clients[p[0] % 2], p[1]), enumerate(bodies)))
    finally:
        for client in clients:
            client.close()
    if inserted != n:
        raise RuntimeError(f"preload inserted {inserted} records, expected {n}")
    return time.perf_counter() - started


# --- the load --------------------------------------------------------------------------------


@dataclass
class Sample:
    phase: str  # "baseline" or "window"
    started: float  # time.monotonic()
    seconds: float
    kind: str  # "single" or "batch"
    outcome: str  # "201", "200", "500", "ReadTimeout", ...


@dataclass
class Tally:
    samples: list[Sample] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    attempted: set[str] = field(default_factory=set)  # sent, not acknowledged
    error_bodies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Loader:
    """``clients`` threads posting until ``stop`` is set; ``phase`` tags what they record."""

    def __init__(
        self, base_url: str, clients: int, single_fraction: float, batch_size: int, seed: int
    ) -> None:
        self.base_url = base_url
        self.clients = clients
        self.single_fraction = single_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.tag = uuid.uuid4().hex[:8]
        self.prefix = f"load-{self.tag}-"
        self.tally = Tally()
        self.stop = threading.Event()
        self.phase = "baseline"
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.stop.clear()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(self.clients)
        ]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT + 10)
        if any(thread.is_alive() for thread in self.threads):
            raise RuntimeError("a client thread did not stop")

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + index + (0 if self.phase == "baseline" else 7))
        nrng = np.random.default_rng(rng.randrange(2**32))
        counter = 0
        url_single = f"{self.base_url}/v1/feedback"
        url_batch = f"{self.base_url}/v1/feedback/batch"
        with httpx.Client(timeout=REQUEST_TIMEOUT, headers=HEADERS) as client:
            while not self.stop.is_set():
                single = rng.random() < self.single_fraction
                n = 1 if single else self.batch_size
                items = []
                for score, label in overconfident(nrng, n):
                    items.append(
                        {
                            "score": score,
                            "label": label,
                            "external_id": f"{self.prefix}{self.phase[0]}{index}-{counter}",
                            "source": "bench-load",
                        }
                    )
                    counter += 1
                ids = [item["external_id"] for item in items]
                phase = self.phase
                started = time.monotonic()
                body = None
                try:
                    if single:
                        response = client.post(url_single, json=items[0])
                    else:
                        response = client.post(url_batch, json={"items": items})
                    outcome = str(response.status_code)
                    if response.status_code in (200, 201):
                        body = response.json()
                    else:
                        text = response.text[:500]
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                    text = repr(exc)[:500]
                elapsed = time.monotonic() - started
                ok = body is not None and (
                    single or (body["inserted"] == n and not body["conflicts"])
                )
                if body is not None and not ok:
                    outcome = "batch-not-inserted"
                    text = json.dumps(body)[:500]
                with self.tally.lock:
                    self.tally.samples.append(
                        Sample(phase, started, elapsed, "single" if single else "batch", outcome)
                    )
                    if ok:
                        self.tally.acknowledged.update(ids)
                    else:
                        self.tally.attempted.update(ids)
                        if len(self.tally.error_bodies) < 20:
                            stamp = f"t={started:.3f} {'single' if single else 'batch'}"
                            self.tally.error_bodies.append(f"{stamp} {outcome}: {text}")


@dataclass
class Stats:
    requests: int
    rate: float
    p50: float
    p99: float
    maximum: float
    errors: Counter


def summarise(samples: list[Sample], seconds: float) -> Stats:
    if not samples:
        return Stats(0, 0.0, float("nan"), float("nan"), float("nan"), Counter())
    latencies = np.array([s.seconds for s in samples]) * 1000
    errors = Counter(s.outcome for s in samples if s.outcome not in ("200", "201"))
    return Stats(
        requests=len(samples),
        rate=len(samples) / seconds,
        p50=float(np.percentile(latencies, 50)),
        p99=float(np.percentile(latencies, 99)),
        maximum=float(latencies.max()),
        errors=errors,
    )


# --- one backend -----------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    preload: int
    preload_seconds: float
    window: Stats
    during: Stats
    during_seconds: float
    baseline: Stats
    acknowledged: int
    stored: int
    stats_total: int
    lost: list[str]
    unexpected: list[str]
    in_doubt: int
    run_status: str
    run_seconds: float | None
    run_reason: str | None
    run_note: str
    server_problems: list[str]
    error_bodies: list[str]
    five_xx: int
    slowest: list[str]

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.unexpected
            and self.stats_total == self.preload + (self.stored)
        )


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def stored_external_ids(base_url: str, prefix: str) -> tuple[set[str], int]:
    """External ids with ``prefix`` in the export, and how many lines the export had."""
    found: set[str] = set()
    lines = 0
    with (
        httpx.Client(timeout=120, headers=HEADERS) as client,
        client.stream("GET", f"{base_url}/v1/feedback/export", params={"format": "ndjson"}) as r,
    ):
        if r.status_code != 200:
            raise RuntimeError(f"export answered {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line:
                continue
            lines += 1
            external_id = json.loads(line).get("external_id")
            if external_id and external_id.startswith(prefix):
                found.add(external_id)
    return found, lines


def run_backend(backend: str, url: str, args: argparse.Namespace) -> Result:
    deadline = time.monotonic() + args.seconds + 600
    with service_with_stderr(url) as service:
        base = service.base_url
        print(f"[{backend}] service on {base}; preloading {args.preload:,} records", flush=True)
        preload_seconds = preload(base, args.preload, args.seed, deadline)
        print(f"[{backend}] preloaded in {preload_seconds:.1f} s", flush=True)

        loader = Loader(base, args.clients, args.single_fraction, args.batch_size, args.seed)
        baseline_seconds = min(10.0, max(3.0, args.seconds / 4))
        print(f"[{backend}] baseline window {baseline_seconds:.0f} s, no training", flush=True)
        loader.phase = "baseline"
        loader.start()
        time.sleep(baseline_seconds)
        loader.join()

        print(f"[{backend}] window {args.seconds:.0f} s, training at 1/3", flush=True)
        control = httpx.Client(timeout=REQUEST_TIMEOUT, headers=HEADERS)
        loader.phase = "window"
        window_start = time.monotonic()
        loader.start()
        time.sleep(args.seconds / 3)
        trigger = time.monotonic()
        response = control.post(f"{base}/v1/training-runs", json={"force": True})
        if response.status_code != 202:
            raise RuntimeError(f"training run answered {response.status_code}: {response.text}")
        run = response.json()
        run_id = run["id"]
        run_note = f"202 after {1000 * (time.monotonic() - trigger):.0f} ms"
        window_end = window_start + args.seconds
        finished_at: float | None = None
        poll_errors: Counter = Counter()
        while True:
            now = time.monotonic()
            if now >= window_end and not loader.stop.is_set():
                loader.join()
            if now > deadline:
                run_note += "; gave up polling"
                break
            try:
                polled = control.get(f"{base}/v1/training-runs/{run_id}")
                if polled.status_code == 200:
                    run = polled.json()
                else:
                    poll_errors[str(polled.status_code)] += 1
            except httpx.TransportError as exc:
                poll_errors[type(exc).__name__] += 1
            if run["status"] in FINAL_RUN_STATUSES:
                finished_at = time.monotonic()
                break
            time.sleep(0.2)
        if finished_at is not None:
            run_note += f"; seen final {finished_at - trigger:.1f} s after trigger"
            if finished_at > window_end:
                run_note += " (after the window)"
        if poll_errors:
            run_note += f"; poll errors {dict(poll_errors)}"
        remaining = window_end - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        loader.join()
        control.close()

        samples = loader.tally.samples
        window_samples = [s for s in samples if s.phase == "window"]
        window_stop = max((s.started + s.seconds for s in window_samples), default=window_end)
        window = summarise(window_samples, max(window_stop, window_end) - window_start)
        baseline = summarise([s for s in samples if s.phase == "baseline"], baseline_seconds)
        train_end = min(finished_at or window_end, window_end)
        during_samples = [s for s in window_samples if trigger <= s.started + s.seconds < train_end]
        during_seconds = max(train_end - trigger, 1e-9)
        during = summarise(during_samples, during_seconds)

        print(f"[{backend}] reading the export back", flush=True)
        stats = httpx.get(f"{base}/v1/feedback/stats", headers=HEADERS, timeout=60).json()
        stored, lines = stored_external_ids(base, loader.prefix)
        acknowledged = loader.tally.acknowledged
        in_doubt = loader.tally.attempted
        five_xx = sum(1 for s in samples if s.outcome.startswith("5"))
        slowest = [
            f"{s.phase} {s.kind} {1000 * s.seconds:.0f} ms, sent {s.started - trigger:+.2f} s "
            f"from the trigger -> {s.outcome}"
            for s in sorted(samples, key=lambda s: s.seconds, reverse=True)[:5]
        ]
        return Result(
            backend=backend,
            preload=args.preload,
            preload_seconds=preload_seconds,
            window=window,
            during=during,
            during_seconds=during_seconds,
            baseline=baseline,
            acknowledged=len(acknowledged),
            stored=len(stored),
            stats_total=stats["total"],
            lost=sorted(acknowledged - stored),
            unexpected=sorted(stored - acknowledged - in_doubt),
            in_doubt=len(stored & in_doubt),
            run_status=run["status"],
            run_seconds=_seconds_between(run.get("started_at"), run.get("finished_at")),
            run_reason=run.get("reason") or run.get("error"),
            run_note=run_note + f"; export lines {lines:,}",
            server_problems=service.stderr_problems(),
            error_bodies=loader.tally.error_bodies,
            five_xx=five_xx,
            slowest=slowest,
        )


# --- the report ------------------------------------------------------------------------------


def _errors(counter: Counter) -> str:
    return ", ".join(f"{kind}:{n}" for kind, n in sorted(counter.items())) or "0"


def report(results: list[Result]) -> None:
    print()
    header = (
        f"{'backend':10s} {'phase':9s} {'requests':>8s} {'req/s':>8s} {'p50 ms':>8s} "
        f"{'p99 ms':>8s} {'max ms':>8s}  errors"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for phase, stats in (
            ("baseline", r.baseline),
            ("window", r.window),
            ("training", r.during),
        ):
            print(
                f"{r.backend:10s} {phase:9s} {stats.requests:8d} {stats.rate:8.1f} "
                f"{stats.p50:8.1f} {stats.p99:8.1f} {stats.maximum:8.1f}  {_errors(stats.errors)}"
            )
    print()
    header = (
        f"{'backend':10s} {'acked':>8s} {'stored':>8s} {'lost':>5s} {'extra':>5s} "
        f"{'stats-preload':>13s} {'run':>9s} {'run s':>6s} {'train/base':>10s}  check"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r.during.rate / r.baseline.rate if r.baseline.rate else float("nan")
        run_seconds = f"{r.run_seconds:6.1f}" if r.run_seconds is not None else f"{'-':>6s}"
        print(
            f"{r.backend:10s} {r.acknowledged:8d} {r.stored:8d} {len(r.lost):5d} "
            f"{len(r.unexpected):5d} {r.stats_total - r.preload:13d} {r.run_status:>9s} "
            f"{run_seconds} {ratio:10.2f}  {'OK' if r.ok else 'FAIL'}"
        )
    print()
    for r in results:
        print(
            f"{r.backend}: preload {r.preload:,} in {r.preload_seconds:.1f} s; training run "
            f"{r.run_status} ({r.run_reason}); {r.run_note}; 'training' row = requests finished "
            f"between the trigger and the run's end ({r.during_seconds:.1f} s)"
        )
        print(f"  slowest: {'; '.join(r.slowest)}")
        if r.in_doubt:
            print(f"  {r.in_doubt} stored records were sent but not acknowledged (in doubt)")
        if r.lost:
            print(f"  LOST (acknowledged, not stored): {r.lost[:10]}")
        if r.unexpected:
            print(f"  UNEXPECTED (stored, never sent): {r.unexpected[:10]}")
        for line in r.error_bodies:
            print(f"  error: {line}")
        if r.server_problems:
            print("  server stderr:")
            for line in r.server_problems:
                print(f"    {line}")


def parse_mix(text: str) -> tuple[float, int]:
    try:
        fraction, size = text.split(":")
        single_fraction, batch_size = float(fraction), int(size)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected SINGLE_FRACTION:BATCH_SIZE, e.g. 0.9:100"
        ) from None
    if not 0.0 <= single_fraction <= 1.0 or not 1 <= batch_size <= 10_000:
        raise argparse.ArgumentTypeError("fraction in [0, 1], batch size in [1, 10000]")
    return single_fraction, batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), help="default: both")
    parser.add_argument("--clients", type=int, default=8, help=f"1..{MAX_CLIENTS}")
    parser.add_argument(
        "--seconds", type=float, default=20, help=f"the measured window, capped at {MAX_SECONDS}"
    )
    parser.add_argument(
        "--mix",
        type=parse_mix,
        default="0.9:100",
        help="SINGLE_FRACTION:BATCH_SIZE: the share of single posts, the size of the others",
    )
    parser.add_argument("--preload", type=int, default=200_000, help="records before the load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("CALIB_TEST_PG_DSN", DEFAULT_ADMIN_DSN),
        help="an admin connection on the loopback server, to create and drop the bench database",
    )
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    if args.seconds < 3:
        parser.error("--seconds must be at least 3")
    args.seconds = min(args.seconds, MAX_SECONDS)
    if not 0 <= args.preload <= MAX_PRELOAD:
        parser.error(f"--preload must be between 0 and {MAX_PRELOAD:,}")
    args.single_fraction, args.batch_size = args.mix
    backends = [args.backend] if args.backend else ["sqlite", "postgresql"]
    host = httpx.URL(args.pg_dsn.replace("postgresql://", "http://", 1)).host
    if "postgresql" in backends and host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--pg-dsn must point at the loopback interface")

    results = []
    for backend in backends:
        database = (
            sqlite_database("calib_load_", "load.db")
            if backend == "sqlite"
            else postgres_database(args.pg_dsn, "calib_load_")
        )
        with database as db:
            results.append(run_backend(backend, db.url, args))
    report(results)
    failed = [r.backend for r in results if not r.ok]
    five_xx = sum(r.five_xx for r in results)
    if failed or five_xx:
        print(f"FAIL: checks failed on {failed or 'none'}; {five_xx} answers were 5xx")
        sys.exit(1)
    print("OK: every acknowledged record is stored, nothing else, no 5xx")


if __name__ == "__main__":
    main()
