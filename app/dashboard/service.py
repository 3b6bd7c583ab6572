"""What the operator's page shows: segments, their versions, training runs and the health report."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.errors import NotFoundError
from app.health import service as health
from app.health.schemas import HealthChecks, HealthReport
from app.registry import service as registry
from app.registry.schemas import ModelVersionRead
from app.scheduling.schemas import SchedulerStatus
from app.shadow import service as shadow
from app.shadow.schemas import ShadowComparisonRead
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
    shadow: ShadowComparisonRead | None = None  # the latest champion/challenger comparison


@dataclass(frozen=True)
class DashboardView:
    health: HealthReport
    checks: list[tuple[str, str]]  # (check name, its status), in the report's order
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


def _segment(session: Session, name: str, checks: HealthChecks) -> SegmentView:
    data = checks.data_availability.segments.get(name) if checks.data_availability else None
    freshness = checks.model_freshness.segments.get(name) if checks.model_freshness else None
    drift = checks.calibration_drift.segments.get(name) if checks.calibration_drift else None
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
        stored=data.stored if data else None,
        new_since_last_training=data.new_since_last_training if data else None,
        active=active,
        age_days=freshness.age_days if freshness else None,
        stale=freshness.stale if freshness else False,
        recent_ece=drift.recent_ece if drift else None,
        n_recent=drift.n_recent if drift else None,
        served_by=data.served_by if data else None,
        pooling_weight=data.pooling_weight if data else None,
        distance_from_pooled=data.distance_from_pooled if data else None,
        versions=versions,
        shadow=shadow.find_latest(session, segment=name),
    )


def segment_shadow(session: Session, *, segment: str) -> ShadowComparisonRead:
    """A segment's latest comparison; 404 when it never had one."""
    return shadow.to_read(shadow.latest(session, segment=segment))


def build_dashboard(
    session: Session,
    *,
    database: Database,
    settings: Settings,
    scheduler_status: SchedulerStatus | None,
    run_limit: int = RUN_LIMIT,
) -> DashboardView:
    """The health report, every segment with feedback or a model, and the newest runs."""
    report = health.build_report(database, settings, scheduler_status)
    checks = report.checks
    names = set(checks.data_availability.segments) if checks.data_availability else set()
    if checks.model_freshness:
        names |= set(checks.model_freshness.segments)
    runs = training.list_runs(session, segment=None, status=None, limit=run_limit, cursor=None)
    names |= {run.segment for run in runs.items}
    statuses = [(name, check["status"]) for name, check in checks.model_dump().items()]
    return DashboardView(
        health=report,
        checks=statuses,
        segments=[_segment(session, name, checks) for name in sorted(names)],
        runs=runs.items,
    )
