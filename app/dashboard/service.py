"""What the operator's page shows: segments, their versions, training runs and the health report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.errors import NotFoundError
from app.health import service as health
from app.health.schemas import HealthReport
from app.registry import service as registry
from app.registry.schemas import ModelVersionRead
from app.training import service as training
from app.training.schemas import TrainingRunRead

RUN_LIMIT = 25
VERSION_LIMIT = 20


@dataclass(frozen=True)
class SegmentView:
    name: str
    stored: int | None
    new_since_last_training: int | None
    active: ModelVersionRead | None
    age_days: float | None
    stale: bool
    recent_ece: float | None
    n_recent: int | None
    served_by: str | None
    pooling_weight: float | None
    distance_from_pooled: float | None
    versions: list[ModelVersionRead]  # newest first


@dataclass(frozen=True)
class DashboardView:
    health: HealthReport
    segments: list[SegmentView]
    runs: list[TrainingRunRead]


def segment_versions(
    session: Session, *, segment: str, limit: int = VERSION_LIMIT
) -> list[ModelVersionRead]:
    """A segment's newest versions; 404 when it has none."""
    page = registry.list_versions(session, segment=segment, status=None, limit=limit, cursor=None)
    if not page.items:
        raise NotFoundError(f"segment '{segment}' has no model versions")
    return page.items


def _segment(session: Session, name: str, checks: dict[str, dict[str, Any]]) -> SegmentView:
    data = checks.get("data_availability", {}).get("segments", {}).get(name, {})
    freshness = checks.get("model_freshness", {}).get("segments", {}).get(name, {})
    drift = checks.get("calibration_drift", {}).get("segments", {}).get(name, {})
    versions = registry.list_versions(
        session, segment=name, status=None, limit=VERSION_LIMIT, cursor=None
    ).items
    active = next((v for v in versions if v.status == "active"), None)
    if active is None:
        # A rollback can leave the active version older than the newest VERSION_LIMIT ones.
        model = registry.find_active(session, segment=name)
        active = registry.to_read(model) if model is not None else None
    return SegmentView(
        name=name,
        stored=data.get("stored"),
        new_since_last_training=data.get("new_since_last_training"),
        active=active,
        age_days=freshness.get("age_days"),
        stale=bool(freshness.get("stale")),
        recent_ece=drift.get("recent_ece"),
        n_recent=drift.get("n_recent"),
        served_by=data.get("served_by"),
        pooling_weight=data.get("pooling_weight"),
        distance_from_pooled=data.get("distance_from_pooled"),
        versions=versions,
    )


def build_dashboard(
    session: Session,
    *,
    database: Database,
    settings: Settings,
    scheduler_status: dict[str, Any] | None,
    run_limit: int = RUN_LIMIT,
) -> DashboardView:
    """The health report, every segment with feedback or a model, and the newest runs."""
    report = health.build_report(database, settings, scheduler_status)
    checks = report.checks
    names = set(checks.get("data_availability", {}).get("segments", {}))
    names |= set(checks.get("model_freshness", {}).get("segments", {}))
    runs = training.list_runs(session, segment=None, status=None, limit=run_limit, cursor=None)
    names |= {run.segment for run in runs.items}
    return DashboardView(
        health=report,
        segments=[_segment(session, name, checks) for name in sorted(names)],
        runs=runs.items,
    )
