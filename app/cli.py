"""The ``calibration-service`` command: run the service, and operate a running one."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from app.config import Settings, settings_problems
from app.logging import configure_logging

logger = logging.getLogger("app.cli")

MAX_LISTED_REJECTS = 20


# A status check against a down server gives up after these retries (well under 3 s of
# backoff); the other commands keep the client's default, as a bulk import should.
STATUS_RETRIES = 2


class CommandError(Exception):
    """A failure worth a line on stderr (one per problem) and a non-zero exit."""

    def __init__(self, *lines: str, exit_code: int = 1) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines
        self.exit_code = exit_code


# --------------------------------------------------------------------------- server side


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = _settings()
    configure_logging(json_lines=settings.log_json)
    if args.migrate:
        _upgrade(settings, "head")
        # A log line, not a print: with CALIB_LOG_JSON every line the server writes is JSON.
        logger.info("database at revision head")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        logger.warning(
            "serving on %s without API keys: anyone who can reach it can write", args.host
        )
    app = create_app(settings)
    # What is loaded by now (the web stack, numpy, scipy, scikit-learn, matplotlib: about 240k
    # objects) lives as long as the process. Frozen, a full collection no longer walks it: one
    # took 115 ms here, pausing every request in flight, a few times per 10 s of single posts.
    gc.freeze()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=True,
        # None: uvicorn's loggers keep no handlers of their own and reach the one handler
        # configure_logging installed (JSON lines when asked), each line printed once.
        log_config=None,
    )
    return 0


def _upgrade(settings: Settings, revision: str) -> None:
    from app import migrations

    settings.ensure_sqlite_directory()
    migrations.upgrade(settings.database_url, revision)


def _migrate(args: argparse.Namespace) -> int:
    revision = args.revision or "head"
    _upgrade(_settings(), revision)
    print(f"database at revision {revision}")
    return 0


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise CommandError(*settings_problems(exc), exit_code=2) from exc
    problems = _schedule_problems(settings)
    if problems:
        raise CommandError(*problems, exit_code=2)
    return settings


def _schedule_problems(settings: Settings) -> list[str]:
    """The schedule settings the scheduler would refuse at startup, one line each."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from app.scheduling.scheduler import cron_trigger

    problems = []
    try:
        zone = ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"CALIB_TIMEZONE: unknown time zone {settings.timezone!r}")
        zone = ZoneInfo("UTC")
    try:
        cron_trigger(settings.training_cron, zone)
    except ValueError as exc:
        problems.append(f"CALIB_TRAINING_CRON: {exc}")
    return problems


def _demo(args: argparse.Namespace) -> int:
    from app.demo import main as demo

    return demo(args.url, args.api_key)


# --------------------------------------------------------------------------- client side


def _client(args: argparse.Namespace, **options: Any) -> Any:
    from app.client import CalibrationClient

    return CalibrationClient(
        args.url,
        api_key=args.api_key,
        segment=getattr(args, "segment", None) or "default",
        **options,
    )


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    """A table on stdout: fitted to a terminal, whole and unpadded lines into a pipe."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in header:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(table)
        return
    # Scripts read these lines: never wrapped or truncated to a width.
    console = Console(highlight=False, width=10_000)
    with console.capture() as captured:
        console.print(table)
    # rich pads every cell to its column's width; a pipe gets the lines without that padding.
    print("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _train(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.train(force=args.force, wait=args.wait, segment=args.segment)
    print(f"training run {run.id} ({run.segment}): {run.status}")
    if not args.wait and not run.finished:
        print(
            f"follow it: GET {args.url.rstrip('/')}/v1/training-runs/{run.id}"
            " (or run this command with --wait)"
        )
    if run.reason:
        print(f"reason: {run.reason}")
    results = run.evaluation_results or {}
    if results:
        from app.demo import describe_fit

        before, after = results["production"], results["candidate"]
        print(describe_fit(results))
        print(
            f"ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
            f"Brier {before['brier']:.4f} -> {after['brier']:.4f}"
        )
    return 1 if run.status == "failed" else 0


def _status(args: argparse.Namespace) -> int:
    with _client(args, max_retries=STATUS_RETRIES) as client:
        report = client.health()
    print(f"status: {report.status}")
    rows = [[name, check.get("status", "-")] for name, check in report.checks.items()]
    _print_table(rows, ["check", "status"])
    freshness = report.checks.get("model_freshness", {}).get("segments", {})
    if freshness:
        print()
        rows = [
            [seg, f"v{m['version']}", m["method"], _fmt(m["age_days"], 2)]
            for seg, m in freshness.items()
        ]
        _print_table(rows, ["segment", "active", "method", "age (days)"])
    if report.alerts:
        print()
        rows = [[a.severity, a.code, a.message] for a in report.alerts]
        _print_table(rows, ["severity", "alert", "message"])
    return 1 if report.status == "unhealthy" else 0


def _models_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        models = client.list_models(args.segment)
    rows = [
        [
            m.segment,
            str(m.version),
            m.status,
            m.method,
            _fmt(m.metrics.get("ece")),
            _fmt(m.metrics.get("brier")),
            str(m.n_train),
            f"{m.created_at:%Y-%m-%dT%H:%M:%S}" if m.created_at else "-",
        ]
        for m in models
    ]
    _print_table(
        rows, ["segment", "version", "status", "method", "ECE", "Brier", "n_train", "created"]
    )
    return 0


def _models_activate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        model = client.activate_model(
            args.model_segment,
            args.version,
            expected_active_version=args.expected,
            reason=args.reason,
        )
    print(f"segment '{model['segment']}': version {model['version']} is active ({model['method']})")
    return 0


def _progress(total_bytes: int) -> Progress:
    """A progress bar on stderr, by bytes of the file read (when a person is watching)."""
    console = Console(stderr=True, force_terminal=os.environ.get("CALIB_PROGRESS") == "1" or None)
    return Progress(
        BarColumn(bar_width=30),
        TextColumn("{task.percentage:>3.0f}% {task.fields[rows]:,} rows"),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )


def _feedback_import(args: argparse.Namespace) -> int:
    from calibration_client.files import file_format

    path = Path(args.file)
    if not path.exists():
        raise CommandError(f"{path}: no such file")
    fmt, note = file_format(path, args.format)
    if note:
        print(note, file=sys.stderr)
    size = path.stat().st_size
    with _client(args) as client, _progress(size) as progress:
        task = progress.add_task("import", total=max(size, 1), rows=0)
        summary = client.import_file(
            path,
            fmt=fmt,
            segment=args.segment,
            batch_size=args.batch_size,
            on_progress=lambda done, _size, rows: progress.update(
                task, completed=max(done, 1), rows=rows
            ),
        )
    rejected = summary.rejected
    print(
        f"inserted {summary.inserted}, duplicates {summary.duplicates}, "
        f"conflicts {summary.conflicts}, rejected {len(rejected)} of {summary.rows} rows"
    )
    for line_no, reason in rejected[:MAX_LISTED_REJECTS]:
        print(f"  line {line_no}: {reason}")
    if len(rejected) > MAX_LISTED_REJECTS:
        print(f"  ... and {len(rejected) - MAX_LISTED_REJECTS} more")
    return 1 if rejected else 0


def _feedback_export(args: argparse.Namespace) -> int:
    with _client(args) as client:
        chunks = client.export_feedback(fmt=args.format, segment=args.segment, since=args.since)
        if args.output:
            with open(args.output, "wb") as output:
                for chunk in chunks:
                    output.write(chunk)
        else:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    return 0


# --------------------------------------------------------------------------- parser


def _timestamp_argument(text: str) -> str:
    """An ISO 8601 date or date-time, passed on in the form the service documents."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 date (2026-11-29) nor a date-time "
            "(2026-11-29T10:00:00Z)"
        ) from None
    return parsed.isoformat()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calibration-service",
        description="Calibrate an AI analyzer's confidence scores from human feedback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--url",
        default=os.environ.get("CALIB_URL", "http://127.0.0.1:8000"),
        help="the service (env CALIB_URL)",
    )
    remote.add_argument(
        "--api-key", default=os.environ.get("CALIB_API_KEY"), help="an API key (env CALIB_API_KEY)"
    )

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--migrate", action="store_true", help="migrate the database first")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema to a revision")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(handler=_migrate)

    train = commands.add_parser("train", parents=[remote], help="start a training run")
    train.add_argument("--segment", default="default")
    train.add_argument(
        "--force", action="store_true", help="ignore the interval and new-data rules"
    )
    train.add_argument("--wait", action="store_true", help="wait for the run to finish")
    train.set_defaults(handler=_train)

    status = commands.add_parser("status", parents=[remote], help="health summary")
    status.set_defaults(handler=_status)

    models = commands.add_parser("models", help="the model registry")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", parents=[remote], help="stored versions")
    listing.add_argument("--segment")
    listing.set_defaults(handler=_models_list)
    activate = model_commands.add_parser("activate", parents=[remote], help="promote or roll back")
    activate.add_argument("model_segment", metavar="SEGMENT")
    activate.add_argument("version", type=int)
    activate.add_argument("--expected", type=int, help="refuse unless this version is active")
    activate.add_argument("--reason")
    activate.set_defaults(handler=_models_activate)

    feedback = commands.add_parser("feedback", help="bulk feedback")
    feedback_commands = feedback.add_subparsers(dest="feedback_command", required=True)
    importing = feedback_commands.add_parser(
        "import", parents=[remote], help="import a CSV or NDJSON file"
    )
    importing.add_argument("file")
    importing.add_argument("--format", choices=("csv", "ndjson"))
    importing.add_argument("--segment", default="default", help="for rows without one")
    importing.add_argument("--batch-size", type=int, default=5000)
    importing.set_defaults(handler=_feedback_import)
    exporting = feedback_commands.add_parser(
        "export", parents=[remote], help="stream every record as CSV or NDJSON"
    )
    exporting.add_argument("--format", choices=("csv", "ndjson"), default="ndjson")
    exporting.add_argument("--segment")
    exporting.add_argument(
        "--since",
        type=_timestamp_argument,
        help="records received at or after: an ISO 8601 date (2026-11-29, midnight UTC) or "
        "date-time (2026-11-29T10:00:00Z; without an offset: UTC)",
    )
    exporting.add_argument("--output", "-o", help="a file (default: stdout)")
    exporting.set_defaults(handler=_feedback_export)

    demo = commands.add_parser(
        "demo",
        help="play an overconfident analyzer and train (in-process on a throwaway database)",
    )
    # No CALIB_URL default here: without --url the demo never touches a real service.
    demo.add_argument("--url", help="play against this running service instead")
    demo.add_argument(
        "--api-key", default=os.environ.get("CALIB_API_KEY"), help="an API key (env CALIB_API_KEY)"
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; exits non-zero with one line on failure."""
    import httpx

    from app.client import CalibrationServiceError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    configure_logging(json_lines=False)
    try:
        return args.handler(args)
    except CommandError as exc:
        for line in exc.lines:
            print(f"calibration-service: {line}", file=sys.stderr)
        return exc.exit_code
    except CalibrationServiceError as exc:
        print(
            f"calibration-service: the service refused: HTTP {exc.status_code}: {exc.detail}",
            file=sys.stderr,
        )
    except httpx.TransportError as exc:
        print(
            f"calibration-service: cannot reach {getattr(args, 'url', '?')}: {exc}", file=sys.stderr
        )
    except TimeoutError as exc:
        print(f"calibration-service: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
