"""Health rules: readiness, and the report that tells an operator what needs attention."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app import migrations
from app.calibration.segments import POOLED_SEGMENT
from app.config import Settings
from app.db import Database, utcnow
from app.health import repository
from app.health.drift import recent_calibration
from app.health.schemas import (
    Alert,
    CalibrationDriftCheck,
    DataAvailabilityCheck,
    DatabaseCheck,
    HealthChecks,
    HealthReport,
    HealthSnapshot,
    HealthSnapshotPage,
    LastTrainingCheck,
    ModelFreshnessCheck,
    Readiness,
    SchedulerCheck,
    SegmentData,
    SegmentDrift,
    SegmentModel,
    SegmentTraining,
)
from app.params import cursor_id, page_of
from app.registry import service as registry
from app.registry.models import ModelVersion
from app.scheduling.schemas import SchedulerStatus
from app.training import pooling as training_pooling
from app.training import repository as training
from app.training import service as training_service

logger = logging.getLogger(__name__)


def readiness(database: Database) -> Readiness:
    """Is the database reachable, and is its schema at the head revision?"""
    head = migrations.head_revision()
    try:
        current = migrations.current_revision(database.engine)
    except SQLAlchemyError as exc:
        return Readiness(
            ready=False,
            database="unreachable",
            detail=type(exc).__name__,
            schema_revision=None,
            head_revision=head,
        )
    return Readiness(
        ready=current == head, database="ok", schema_revision=current, head_revision=head
    )


def _status(alerts: list[Alert]) -> Literal["ok", "warning"]:
    return "warning" if alerts else "ok"


def _data_availability(
    session: Session, settings: Settings, alerts: list[Alert]
) -> DataAvailabilityCheck:
    stats = training_service.feedback_stats(session)
    pooled = registry.find_active(session, segment=POOLED_SEGMENT) is not None
    # With a pooled model, segments train (borrowing from it) on a few samples of their own.
    minimum = settings.min_segment_samples if pooled else settings.min_samples_for_training
    found: list[Alert] = []
    if stats.total == 0:
        found.append(Alert(severity="warning", code="no_data", message="no feedback stored yet"))
    segments = {}
    for segment, seg in stats.by_segment.items():
        segments[segment] = SegmentData(
            stored=seg.total,
            new_since_last_training=seg.new_since_last_training,
            enough_for_training=seg.total >= minimum,
            served_by=seg.served_by,
            pooling_weight=seg.pooling_weight,
            distance_from_pooled=seg.distance_from_pooled,
        )
        # A small segment served by the pooled calibrator is working as intended.
        if seg.total < minimum and seg.served_by is None:
            found.append(
                Alert(
                    severity="warning",
                    code="insufficient_data",
                    message=f"segment '{segment}' has {seg.total} samples; "
                    f"training needs {minimum}",
                    segment=segment,
                )
            )
    if pooled:
        # Listed once it exists: a service that never trains "_pooled" has nothing to report.
        segments[POOLED_SEGMENT] = SegmentData(
            stored=stats.total,
            new_since_last_training=training_pooling.pooled_new_samples(session),
            enough_for_training=stats.total >= settings.min_samples_for_training,
            served_by=POOLED_SEGMENT,
        )
    alerts += found
    return DataAvailabilityCheck(
        status=_status(found),
        min_samples=minimum,
        min_samples_pooled=settings.min_samples_for_training,
        segments=segments,
    )


def _model_freshness(
    actives: list[ModelVersion],
    segments: dict[str, SegmentData],
    settings: Settings,
    now: datetime,
    alerts: list[Alert],
) -> ModelFreshnessCheck:
    found: list[Alert] = []
    by_segment = {model.segment: model for model in actives}
    if not actives:
        found.append(
            Alert(severity="warning", code="no_model", message="no calibrator is active yet")
        )
    report = {}
    for model in actives:
        age_days = (now - (model.activated_at or model.created_at)).total_seconds() / 86400
        stale = age_days > settings.max_model_age_days
        report[model.segment] = SegmentModel(
            version=model.version, method=model.method, age_days=round(age_days, 4), stale=stale
        )
        if stale:
            found.append(
                Alert(
                    severity="warning",
                    code="model_stale",
                    message=f"segment '{model.segment}' model v{model.version} is "
                    f"{age_days:.1f} days old (max {settings.max_model_age_days:g})",
                    segment=model.segment,
                )
            )
    for segment, data in segments.items():
        served = data.served_by is not None
        if actives and not served and segment not in by_segment and data.enough_for_training:
            found.append(
                Alert(
                    severity="warning",
                    code="no_model",
                    message=f"segment '{segment}' has enough data but no active calibrator",
                    segment=segment,
                )
            )
    alerts += found
    return ModelFreshnessCheck(
        status=_status(found), max_age_days=settings.max_model_age_days, segments=report
    )


def _last_training(session: Session, alerts: list[Alert]) -> LastTrainingCheck:
    found: list[Alert] = []
    report = {}
    for segment, run in sorted(training.latest_finished_runs(session).items()):
        report[segment] = SegmentTraining(
            run_id=run.id,
            status=run.status,
            trigger=run.trigger,
            finished_at=run.finished_at,
            reason=run.reason,
        )
        if run.status == "failed":
            found.append(
                Alert(
                    severity="warning",
                    code="training_failed",
                    message=f"last training of '{segment}' (run {run.id}) failed: {run.reason}",
                    segment=segment,
                )
            )
    alerts += found
    return LastTrainingCheck(status=_status(found), segments=report)


def _calibration_drift(
    session: Session, actives: list[ModelVersion], settings: Settings, alerts: list[Alert]
) -> CalibrationDriftCheck:
    """The active calibrator's ECE on feedback newer than its training data, vs validation."""
    found: list[Alert] = []
    report = {}
    for model in actives:
        recent = recent_calibration(session, model, window=settings.drift_window)
        validation_ece = model.metrics.get("ece")
        entry = SegmentDrift(
            version=model.version,
            validation_ece=validation_ece,
            n_recent=recent.n,
            recent_ece=None,
            increase=None,
        )
        if (
            recent.n >= settings.min_samples_for_training
            and validation_ece is not None
            and recent.ece is not None
        ):
            entry.recent_ece = recent.ece
            entry.increase = recent.ece - validation_ece
            if entry.increase > settings.drift_threshold:
                found.append(
                    Alert(
                        severity="warning",
                        code="calibration_drift",
                        message=f"segment '{model.segment}': ECE on {recent.n} recent "
                        f"samples is {recent.ece:.4f}, validation ECE was {validation_ece:.4f}",
                        segment=model.segment,
                    )
                )
        report[model.segment] = entry
    alerts += found
    return CalibrationDriftCheck(
        status=_status(found), threshold=settings.drift_threshold, segments=report
    )


def _scheduler(scheduler_status: SchedulerStatus | None, alerts: list[Alert]) -> SchedulerCheck:
    if scheduler_status is None or not scheduler_status.enabled:
        return SchedulerCheck(status="disabled", enabled=False, is_running=False)
    training_job = next((job for job in scheduler_status.jobs if job.id == "training"), None)
    report = SchedulerCheck(
        status="ok",
        enabled=True,
        is_running=scheduler_status.is_running,
        next_training_run=training_job.next_run_time if training_job else None,
    )
    if not scheduler_status.is_running:
        report.status = "warning"
        alerts.append(
            Alert(
                severity="warning",
                code="scheduler_stopped",
                message="the scheduler is enabled but not running: no nightly training",
            )
        )
    return report


def build_report(
    database: Database, settings: Settings, scheduler_status: SchedulerStatus | None
) -> HealthReport:
    """Every check, with alerts; ``unhealthy`` only when the database is unreachable."""
    now = utcnow()
    alerts: list[Alert] = []
    try:
        with database.session_scope(write=False) as session:
            started = time.perf_counter()
            repository.ping(session)
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            data = _data_availability(session, settings, alerts)
            actives = registry.list_active(session)
            checks = HealthChecks(
                database=DatabaseCheck(status="ok", latency_ms=latency_ms),
                data_availability=data,
                model_freshness=_model_freshness(actives, data.segments, settings, now, alerts),
                last_training=_last_training(session, alerts),
                calibration_drift=_calibration_drift(session, actives, settings, alerts),
            )
    except SQLAlchemyError as exc:
        checks = HealthChecks(database=DatabaseCheck(status="error", detail=type(exc).__name__))
        alerts = [
            Alert(
                severity="critical",
                code="database_unreachable",
                message=f"the database cannot be reached ({type(exc).__name__})",
            )
        ]
    checks.scheduler = _scheduler(scheduler_status, alerts)
    if any(alert.severity == "critical" for alert in alerts):
        status = "unhealthy"
    elif alerts:
        status = "degraded"
    else:
        status = "healthy"
    return HealthReport(status=status, checked_at=now, checks=checks, alerts=alerts)


def record_snapshot(database: Database, report: HealthReport) -> int:
    """Store a report in the history and log each alert once, as one structured line."""
    for alert in report.alerts:
        logger.warning(
            "health alert %s: %s",
            alert.code,
            alert.message,
            extra={
                "event": "health_alert",
                "severity": alert.severity,
                "code": alert.code,
                "segment": alert.segment,
            },
        )
    with database.session_scope() as session:
        return repository.add_snapshot(
            session,
            status=report.status,
            report=report.model_dump(mode="json"),
            now=report.checked_at,
        )


def history(session: Session, *, limit: int, cursor: str | None) -> HealthSnapshotPage:
    rows = repository.snapshots(session, before_id=cursor_id(cursor), limit=limit + 1)
    rows, next_cursor = page_of(rows, limit)
    return HealthSnapshotPage(
        items=[HealthSnapshot.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=next_cursor,
    )


def snapshot_job(
    database: Database,
    settings: Settings,
    scheduler_status: SchedulerStatus,
    *,
    on_status: Callable[[str], None] | None = None,
) -> str:
    """The scheduler's health job: build, store and log a report; its outcome as text."""
    report = build_report(database, settings, scheduler_status)
    if on_status is not None:
        on_status(report.status)
    snapshot_id = record_snapshot(database, report)
    return f"{report.status} ({len(report.alerts)} alerts), snapshot {snapshot_id}"
