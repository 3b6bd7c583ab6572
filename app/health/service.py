"""Health rules: readiness now; the full report arrives with monitoring."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app import migrations
from app.db import Database


def readiness(database: Database) -> dict[str, Any]:
    """Is the database reachable, and is its schema at the head revision?"""
    head = migrations.head_revision()
    try:
        current = migrations.current_revision(database.engine)
    except SQLAlchemyError as exc:
        return {
            "ready": False,
            "database": "unreachable",
            "detail": type(exc).__name__,
            "schema_revision": None,
            "head_revision": head,
        }
    return {
        "ready": current == head,
        "database": "ok",
        "schema_revision": current,
        "head_revision": head,
    }
