"""The ``calibration-service`` command: run the service, and operate a running one."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from app.config import Settings

logger = logging.getLogger("app.cli")

MAX_LISTED_REJECTS = 20


class CommandError(Exception):
    """A failure worth one line on stderr and a non-zero exit."""


# --------------------------------------------------------------------------- server side


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = _settings()
    if args.migrate:
        _migrate(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        logger.warning(
            "serving on %s without API keys: anyone who can reach it can write", args.host
        )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=True,
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app import migrations

    settings = _settings()
    settings.ensure_sqlite_directory()
    revision = getattr(args, "revision", "head") or "head"
    migrations.upgrade(settings.database_url, revision)
    print(f"database at revision {revision}")
    return 0


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise CommandError(f"invalid settings: {exc.errors()[0]['msg']}") from exc


def _demo(args: argparse.Namespace) -> int:
    from app.demo import main as demo

    return demo(args.url, args.api_key)


# --------------------------------------------------------------------------- client side


def _client(args: argparse.Namespace) -> Any:
    from app.client import CalibrationClient

    return CalibrationClient(
        args.url, api_key=args.api_key, segment=getattr(args, "segment", None) or "default"
    )


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _train(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.train(force=args.force, wait=args.wait, segment=args.segment)
    print(f"training run {run['id']} ({run['segment']}): {run['status']}")
    if run.get("reason"):
        print(f"reason: {run['reason']}")
    results = run.get("evaluation_results") or {}
    if results:
        before, after = results["production"], results["candidate"]
        print(
            f"method {results['method']}: ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
            f"Brier {before['brier']:.4f} -> {after['brier']:.4f}"
        )
    return 1 if run["status"] == "failed" else 0


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.health()
    print(f"status: {report['status']}")
    rows = [[name, check.get("status", "-")] for name, check in report["checks"].items()]
    print(_table(rows, ["check", "status"]))
    freshness = report["checks"].get("model_freshness", {}).get("segments", {})
    if freshness:
        print()
        rows = [
            [seg, f"v{m['version']}", m["method"], _fmt(m["age_days"], 2)]
            for seg, m in freshness.items()
        ]
        print(_table(rows, ["segment", "active", "method", "age (days)"]))
    if report["alerts"]:
        print()
        rows = [[a["severity"], a["code"], a["message"]] for a in report["alerts"]]
        print(_table(rows, ["severity", "alert", "message"]))
    return 1 if report["status"] == "unhealthy" else 0


def _models_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        models = client.list_models(args.segment)
    rows = [
        [
            m["segment"],
            str(m["version"]),
            m["status"],
            m["method"],
            _fmt(m["metrics"].get("ece")),
            _fmt(m["metrics"].get("brier")),
            str(m["n_train"]),
            f"{m.created_at:%Y-%m-%dT%H:%M:%S}" if m.created_at else "-",
        ]
        for m in models
    ]
    print(
        _table(
            rows, ["segment", "version", "status", "method", "ECE", "Brier", "n_train", "created"]
        )
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


class _Progress:
    """A one-line progress bar on stderr, by bytes of the file read."""

    def __init__(self, total_bytes: int, stream: TextIO) -> None:
        self.total = max(total_bytes, 1)
        self.stream = stream
        self.enabled = stream.isatty() or os.environ.get("CALIB_PROGRESS") == "1"

    def show(self, done_bytes: int, rows: int) -> None:
        if not self.enabled:
            return
        fraction = min(done_bytes / self.total, 1.0)
        bar = "#" * int(fraction * 30)
        self.stream.write(f"\r[{bar:<30}] {fraction:4.0%} {rows:,} rows")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def _feedback_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise CommandError(f"{path}: no such file")
    progress = _Progress(path.stat().st_size, sys.stderr)
    with _client(args) as client:
        summary = client.import_file(
            path,
            fmt=args.format,
            segment=args.segment,
            batch_size=args.batch_size,
            on_progress=lambda done, _total, rows: progress.show(done, rows),
        )
    progress.close()
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
    exporting.add_argument("--since", help="ISO 8601: records received at or after")
    exporting.add_argument("--output", "-o", help="a file (default: stdout)")
    exporting.set_defaults(handler=_feedback_export)

    demo = commands.add_parser(
        "demo", parents=[remote], help="play an overconfident analyzer and train"
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; exits non-zero with one line on failure."""
    import httpx

    from app.client import CalibrationServiceError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"calibration-service: {exc}", file=sys.stderr)
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
