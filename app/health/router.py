"""Operations endpoints: probes, the health report and its history, metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import DatabaseDep, ReadSession, SettingsDep
from app.errors import responses
from app.health import service
from app.health.schemas import HealthReport, HealthSnapshotPage
from app.params import CursorQuery

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
    return JSONResponse(status_code=200 if report.ready else 503, content=report.model_dump())


@router.get(
    "/health",
    response_model=HealthReport,
    responses={503: {"model": HealthReport, "description": "Unhealthy: database unreachable"}},
)
def health_report(request: Request, database: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    """Checks and alerts: 200 when healthy or degraded, 503 when unhealthy."""
    report = service.build_report(
        database, settings, request.app.state.scheduler.get_scheduler_status()
    )
    request.app.state.metrics.health_reported(report.status)
    return JSONResponse(
        status_code=503 if report.status == "unhealthy" else 200,
        content=report.model_dump(mode="json"),
    )


@router.get("/health/history", responses=responses(422, 503))
def health_history(
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: CursorQuery = None,
) -> HealthSnapshotPage:
    """Stored health snapshots (one per health-check job firing), newest first."""
    return service.history(session, limit=limit, cursor=cursor)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    """Prometheus exposition."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
