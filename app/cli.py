"""The ``calibration-service`` command: run the service and manage its database."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from app.config import Settings

logger = logging.getLogger("app.cli")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.main import create_app

    if args.migrate:
        _migrate(args, settings)
    host = args.host
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        logger.warning("serving on %s without API keys: anyone who can reach it can write", host)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=True,
    )
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app import migrations

    settings.ensure_sqlite_directory()
    revision = getattr(args, "revision", "head") or "head"
    migrations.upgrade(settings.database_url, revision)
    print(f"database at revision {revision}")
    return 0


def _demo(args: argparse.Namespace, _settings: Settings) -> int:
    from app.demo import main as demo

    return demo(args.url, args.api_key)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calibration-service",
        description="Calibrate an AI analyzer's confidence scores from human feedback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--migrate", action="store_true", help="migrate the database first")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema to a revision")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(handler=_migrate)

    demo = commands.add_parser("demo", help="play an overconfident analyzer and train")
    demo.add_argument("--url", help="a running service; default: start one in-process")
    demo.add_argument("--api-key")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"calibration-service: invalid settings: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    return args.handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
