"""The operator's page, rendered on the server (no JavaScript), and the pictures it shows:
the metrics chart and the reliability diagrams (data as JSON, or SVG and PNG)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.auth import require_scope
from app.dashboard import reliability, service
from app.dashboard.schemas import ReliabilityRead
from app.deps import DatabaseDep, ReadSession, SettingsDep
from app.errors import responses
from app.params import SegmentPath, VersionPath

router = APIRouter(tags=["dashboard"])

_read = [Depends(require_scope("read"))]


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _age(days: float | None) -> str:
    if days is None:
        return "—"
    if days >= 1:
        return f"{days:.1f} d"
    if days * 24 >= 1:
        return f"{days * 24:.1f} h"
    return f"{max(days * 1440, 0):.0f} min"


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _fit(version: Any) -> str:
    """A version's method, or for an averaged fit (stored as a table) the maps it averaged."""
    averaged = version.metrics.get("averaged")
    if not averaged or len(averaged) < 2:
        return version.method
    parts = sorted(averaged.items(), key=lambda item: -item[1])
    return "average: " + ", ".join(f"{name} {weight:.2f}" for name, weight in parts)


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_environment.filters.update(number=_number, age=_age, when=_when, fit=_fit)
templates = Jinja2Templates(env=_environment)


@router.get(
    "/dashboard",
    dependencies=_read,
    response_class=HTMLResponse,
    responses=responses(401, 403, 503),
)
def dashboard(
    request: Request, session: ReadSession, database: DatabaseDep, settings: SettingsDep
) -> HTMLResponse:
    """Segments and their active calibrators, reliability diagrams, training runs, health."""
    view = service.build_dashboard(
        session,
        database=database,
        settings=settings,
        scheduler_status=request.app.state.scheduler.get_scheduler_status(),
    )
    return templates.TemplateResponse(request, "dashboard.html", {"view": view})


@router.get(
    "/dashboard/segments/{segment}/metrics.svg",
    dependencies=_read,
    response_class=Response,
    responses={
        200: {
            "description": "Validation ECE and Brier score per version (SVG)",
            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
        },
        **responses(401, 403, 404, 422, 503),
    },
)
def metrics_chart(session: ReadSession, segment: SegmentPath) -> Response:
    """A line chart of each version's validation metrics, the active version marked."""
    versions = service.segment_versions(session, segment=segment)
    # matplotlib loads on the first picture, not at startup.
    from app.dashboard import charts

    picture = charts.render(charts.metrics_figure(segment, versions), "svg")
    return Response(
        content=picture, media_type=charts.MEDIA_TYPES["svg"], headers={"Cache-Control": "no-cache"}
    )


@router.get(
    "/v1/models/{segment}/{version}/reliability",
    tags=["models"],
    dependencies=_read,
    response_model=ReliabilityRead,
    responses={
        200: {
            "description": "Reliability-diagram data (JSON) or the diagram (SVG, PNG)",
            "content": {
                "image/svg+xml": {"schema": {"type": "string"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **responses(401, 403, 404, 422, 503),
    },
)
def model_reliability(
    session: ReadSession,
    settings: SettingsDep,
    segment: SegmentPath,
    version: VersionPath,
    format: Literal["json", "svg", "png"] = "json",
) -> ReliabilityRead | Response:
    """Per-bin count, mean confidence, observed rate and its 95% interval: candidate and
    production on the validation split, and (active version) the calibrator on recent feedback."""
    data = reliability.reliability(
        session, segment=segment, version=version, drift_window=settings.drift_window
    )
    if format == "json":
        return data
    # matplotlib loads on the first picture, not at startup.
    from app.dashboard import charts

    picture = charts.render(charts.reliability_figure(data), format)
    return Response(
        content=picture,
        media_type=charts.MEDIA_TYPES[format],
        headers={"Cache-Control": "no-cache"},
    )


@router.get(
    "/dashboard/segments/{segment}/shadow.svg",
    dependencies=_read,
    response_class=Response,
    responses={
        200: {
            "description": "The champion/challenger interval over n (SVG)",
            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
        },
        **responses(401, 403, 404, 422, 503),
    },
)
def shadow_chart(session: ReadSession, segment: SegmentPath) -> Response:
    """The latest comparison's interval for the Brier difference as records arrived."""
    comparison = service.segment_shadow(session, segment=segment)
    # matplotlib loads on the first picture, not at startup.
    from app.dashboard import charts
    from app.dashboard.shadow_chart import shadow_figure

    picture = charts.render(shadow_figure(comparison), "svg")
    return Response(
        content=picture, media_type=charts.MEDIA_TYPES["svg"], headers={"Cache-Control": "no-cache"}
    )
