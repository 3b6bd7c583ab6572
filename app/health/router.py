"""Liveness and readiness probes (open, no key needed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import DatabaseDep
from app.health import service

router = APIRouter(tags=["health"])


@router.get("/health/live")
def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "alive"}


@router.get(
    "/health/ready",
    responses={503: {"description": "Database unreachable or schema not at head"}},
)
def ready(database: DatabaseDep) -> JSONResponse:
    """Ready when the database answers and its schema is at the migrations' head."""
    report = service.readiness(database)
    return JSONResponse(status_code=200 if report["ready"] else 503, content=report)
