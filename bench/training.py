"""End-to-end training speed and memory beside reading the rows into numpy + one isotonic fit.

For each backend (a temporary SQLite file; a throw-away PostgreSQL database on 127.0.0.1) and
each size, a freshly migrated database is bulk-loaded with N synthetic feedback rows through
the raw driver (not timed). Then, each in its own subprocess so peak memory is clean:

- baseline: the same rows read into numpy with the driver (sqlite3 ``np.fromiter(cursor)``;
  psycopg binary ``COPY TO``) and one ``IsotonicRegression(out_of_bounds="clip").fit``;
- end-to-end: ``service.start_run`` committed, then ``service.execute_run`` (the code path of
  the API's worker thread) until the run is deployed or rejected, with the time split into
  checks (counts), read, split, fit, score, bootstrap, reliability and write.

Targets (issue 4): 1M end-to-end at most 5x the baseline; 10M within 2 GiB peak RSS.
The script stops by itself: sizes are capped, every subprocess has a deadline, and the
temporary database is removed whatever happens.

    .venv/bin/python bench/training.py                                  # 1M and 10M, both
    .venv/bin/python bench/training.py --sizes 1000000 --backends sqlite
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from support import DEFAULT_ADMIN_DSN, PROJECT_ROOT, postgres_database, sqlite_database

MAX_SIZE = 20_000_000
LOAD_CHUNK = 1_000_000
PHASE_TIMEOUT_S = 1800
SEGMENT = "default"
TIMESTAMP = "2026-11-20 12:00:00"
ROW_DTYPE = np.dtype([("score", np.float64), ("label", np.bool_)])
TARGET_RATIO = 5.0
TARGET_PEAK_MIB = 2048.0
MIB = 2**20


# ----------------------------------------------------------------------------- helpers


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident scores: the true rate moves 0.4 as fast as the score does."""
    scores = rng.random(n)
    labels = rng.random(n) < 0.5 + (scores - 0.5) * 0.4
    return scores, labels


def sqlalchemy_url(backend: str, location: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{location}"
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{location}"


# ----------------------------------------------------------------------------- loading


def load_sqlite(path: str, n: int) -> None:
    rng = np.random.default_rng(0)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        with connection:
            for start in range(0, n, LOAD_CHUNK):
                scores, labels = synthetic(min(LOAD_CHUNK, n - start), rng)
                connection.executemany(
                    "INSERT INTO feedback (segment, score, label, occurred_at, received_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        (SEGMENT, s, b, TIMESTAMP, TIMESTAMP)
                        for s, b in zip(scores.tolist(), labels.tolist(), strict=True)
                    ),
                )
        connection.execute("ANALYZE")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def load_postgresql(dbname: str, n: int) -> None:
    rng = np.random.default_rng(0)
    ts = f"{TIMESTAMP}+00"
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{dbname}") as connection:
        with connection.cursor() as cursor:
            copy_sql = "COPY feedback (segment, score, label, occurred_at, received_at) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for start in range(0, n, LOAD_CHUNK):
                    scores, labels = synthetic(min(LOAD_CHUNK, n - start), rng)
                    # Text COPY built in bulk: repr() of a float round-trips exactly.
                    lines = [
                        f"{SEGMENT}\t{s!r}\t{'t' if b else 'f'}\t{ts}\t{ts}\n"
                        for s, b in zip(scores.tolist(), labels.tolist(), strict=True)
                    ]
                    copy.write("".join(lines))
        connection.commit()
        connection.autocommit = True
        # The steady state autovacuum would reach after a bulk insert (visibility map, stats).
        connection.execute("VACUUM ANALYZE feedback")


# ----------------------------------------------------------------------------- phases


def phase_baseline(backend: str, url: str) -> dict[str, Any]:
    from sklearn.isotonic import IsotonicRegression

    rss_before = rss_mib()
    start = time.perf_counter()
    if backend == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            cursor = connection.execute(
                "SELECT score, label FROM feedback WHERE segment = ? ORDER BY id", (SEGMENT,)
            )
            rows = np.fromiter(cursor, dtype=ROW_DTYPE)
        finally:
            connection.close()
    else:
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
            query = sql.SQL(
                "COPY (SELECT score, label FROM feedback WHERE segment = {} ORDER BY id)"
                " TO STDOUT (FORMAT BINARY)"
            ).format(sql.Literal(SEGMENT))
            with cursor.copy(query) as copy:
                copy.set_types(["float8", "bool"])
                rows = np.fromiter(copy.rows(), dtype=ROW_DTYPE)
    scores = np.ascontiguousarray(rows["score"])
    labels = rows["label"].astype(np.float64)
    del rows
    read_s = time.perf_counter() - start
    fit_start = time.perf_counter()
    IsotonicRegression(out_of_bounds="clip").fit(scores, labels)
    fit_s = time.perf_counter() - fit_start
    return {
        "seconds": read_s + fit_s,
        "read_s": read_s,
        "fit_s": fit_s,
        "n": int(scores.shape[0]),
        "rss_before_mib": rss_before,
        "peak_mib": peak_rss_mib(),
    }


class StageTimer:
    """Wall time per stage, by wrapping the module attributes the training path calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, module: Any, name: str, stage: str) -> None:
        original = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, original))

    @contextlib.contextmanager
    def installed(self) -> Iterator[StageTimer]:
        from app.feedback import repository
        from app.registry import service as registry
        from app.training import evaluation

        self.wrap(repository, "max_id", "checks")
        self.wrap(repository, "count_between", "checks")
        self.wrap(repository, "score_label_arrays", "read")
        self.wrap(evaluation, "train_test_split", "split")
        self.wrap(evaluation, "fit_calibrator", "fit")
        self.wrap(evaluation, "_scored", "score")
        self.wrap(evaluation, "paired_bootstrap", "bootstrap")
        self.wrap(evaluation, "reliability_bins", "reliability")
        self.wrap(registry, "register_version", "write")
        try:
            yield self
        finally:
            for undo in reversed(self._undo):
                undo()


def phase_e2e(url: str, profile: str | None) -> dict[str, Any]:
    from app.config import Settings
    from app.db import Database
    from app.training import service
    from app.training.evaluation import TrainingPolicy
    from app.training.models import TrainingRun

    settings = Settings(database_url=url, env="test", scheduler_enabled=False)
    database = Database(settings)
    policy = TrainingPolicy.from_settings(settings)
    try:
        # Warm the pool and the ORM mappers outside the timed part.
        with database.session_scope(write=False) as session:
            session.get(TrainingRun, 0)
        rss_before = rss_mib()
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
        with StageTimer().installed() as stages:
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            with database.session_scope() as session:
                run = service.start_run(
                    session, segment=SEGMENT, force=True, trigger="cli", requested_by="bench"
                )
                session.flush()
                run_id = run.id
            status = service.execute_run(database, policy, run_id)
            if profiler:
                profiler.disable()
            seconds = time.perf_counter() - start
        peak = peak_rss_mib()
        if profiler and profile:
            profiler.dump_stats(profile)
        with database.session_scope(write=False) as session:
            run = session.get(TrainingRun, run_id)
            assert run is not None
            results = run.evaluation_results or {}
            final = {
                "status": run.status,
                "reason": run.reason,
                "n_samples": run.n_samples,
                "method": results.get("method"),
                "selection": (results.get("selection") or {}).get("chosen"),
            }
    finally:
        database.dispose()
    if status not in ("deployed", "rejected") or final["status"] != status:
        raise RuntimeError(f"training run {run_id} ended {status!r}: {final}")
    return {
        "seconds": seconds,
        "stages": stages.seconds,
        "rss_before_mib": rss_before,
        "peak_mib": peak,
        **final,
    }


def run_case(args: argparse.Namespace) -> None:
    backend, size = args.case[0], int(args.case[1])
    if args.phase == "load":
        start = time.perf_counter()
        if backend == "sqlite":
            load_sqlite(args.location, size)
        else:
            load_postgresql(args.location, size)
        result: dict[str, Any] = {"seconds": time.perf_counter() - start}
    elif args.phase == "baseline":
        result = phase_baseline(backend, sqlalchemy_url(backend, args.location))
    else:
        result = phase_e2e(sqlalchemy_url(backend, args.location), args.profile)
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- parent


def subprocess_phase(
    backend: str, size: int, location: str, phase: str, profile: str | None
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--case",
        backend,
        str(size),
        "--phase",
        phase,
        "--location",
        location,
    ]
    if profile:
        command += ["--profile", profile]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=PHASE_TIMEOUT_S,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{backend} {size:,} {phase} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    return json.loads(lines[-1].removeprefix("RESULT "))


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """A migrated, empty database; yields the file path (SQLite) or database name."""
    if backend == "sqlite":
        with sqlite_database() as db:
            yield str(db.path)
    else:
        with postgres_database(DEFAULT_ADMIN_DSN) as db:
            yield db.name


def measure(backend: str, size: int, profile_dir: str | None) -> dict[str, Any]:
    with fresh_database(backend) as location:
        load = subprocess_phase(backend, size, location, "load", None)
        print(f"  loaded {size:,} rows into {backend} in {load['seconds']:.1f} s", flush=True)
        baseline = subprocess_phase(backend, size, location, "baseline", None)
        print(
            f"  baseline {baseline['seconds']:.2f} s (read {baseline['read_s']:.2f} s, "
            f"isotonic fit {baseline['fit_s']:.2f} s), peak {baseline['peak_mib']:.0f} MiB",
            flush=True,
        )
        if baseline["n"] != size:
            raise RuntimeError(f"read {baseline['n']:,} rows, loaded {size:,}")
        profile = None
        if profile_dir:
            profile = str(Path(profile_dir) / f"training_{backend}_{size}.prof")
        e2e = subprocess_phase(backend, size, location, "e2e", profile)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in e2e["stages"].items())
        other = e2e["seconds"] - sum(e2e["stages"].values())
        print(
            f"  end-to-end {e2e['seconds']:.2f} s -> {e2e['status']} ({e2e['method']}); "
            f"{stages}, other {other:.2f} s; peak {e2e['peak_mib']:.0f} MiB "
            f"(+{e2e['peak_mib'] - e2e['rss_before_mib']:.0f} over {e2e['rss_before_mib']:.0f})",
            flush=True,
        )
    return {"backend": backend, "n": size, "load": load, "baseline": baseline, "e2e": e2e}


def report(results: list[dict[str, Any]]) -> None:
    print()
    header = (
        f"{'backend':10s} {'N':>11s} {'baseline s':>10s} {'e2e s':>8s} {'ratio':>6s} "
        f"{'base peak':>9s} {'e2e peak':>8s} {'e2e +RSS':>8s}  status / method"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        b, e = r["baseline"], r["e2e"]
        ratio = e["seconds"] / b["seconds"]
        print(
            f"{r['backend']:10s} {r['n']:>11,} {b['seconds']:>10.2f} {e['seconds']:>8.2f} "
            f"{ratio:>6.2f} {b['peak_mib']:>9.0f} {e['peak_mib']:>8.0f} "
            f"{e['peak_mib'] - e['rss_before_mib']:>8.0f}  {e['status']} / {e['method']}"
        )
    print("(seconds wall time; peak = ru_maxrss MiB of the phase's own process;")
    print(" +RSS = e2e peak minus RSS just before the run started)")
    print()
    print("where the end-to-end time goes (s):")
    stages = ("checks", "read", "split", "fit", "score", "bootstrap", "reliability", "write")
    print(f"{'backend':10s} {'N':>11s} " + " ".join(f"{s:>11s}" for s in (*stages, "other")))
    for r in results:
        e = r["e2e"]
        values = [e["stages"].get(s, 0.0) for s in stages]
        values.append(e["seconds"] - sum(e["stages"].values()))
        print(f"{r['backend']:10s} {r['n']:>11,} " + " ".join(f"{v:>11.2f}" for v in values))
    print()
    print(f"targets: 1M e2e <= {TARGET_RATIO:g}x baseline; 10M peak <= {TARGET_PEAK_MIB:.0f} MiB")
    for r in results:
        ratio = r["e2e"]["seconds"] / r["baseline"]["seconds"]
        peak = r["e2e"]["peak_mib"]
        checks = []
        if r["n"] <= 1_000_000:
            checks.append(f"ratio {ratio:.2f} {'ok' if ratio <= TARGET_RATIO else 'MISSED'}")
        if r["n"] >= 10_000_000:
            ok = peak <= TARGET_PEAK_MIB
            checks.append(f"peak {peak:.0f} MiB {'ok' if ok else 'MISSED'}")
        if checks:
            print(f"  {r['backend']:10s} {r['n']:>11,}: " + "; ".join(checks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--profile-dir",
        help="write a cProfile of each end-to-end run into this folder (inflates its timings)",
    )
    parser.add_argument("--case", nargs=2, metavar=("BACKEND", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("load", "baseline", "e2e"), help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args)
        return
    for size in args.sizes:
        if not 100 <= size <= MAX_SIZE:
            parser.error(f"sizes must lie in [100, {MAX_SIZE:,}]")
    if args.profile_dir:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        for backend in args.backends:
            print(f"{backend}, {size:,} rows", flush=True)
            results.append(measure(backend, size, args.profile_dir))
    report(results)


if __name__ == "__main__":
    main()
