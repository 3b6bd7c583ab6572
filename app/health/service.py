"""Health rules: readiness, and the report that tells an operator what needs attention."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app import migrations
from app.calibration import evaluate
from app.calibration.segments import POOLED_SEGMENT
from app.config import Settings
from app.db import Database, utcnow
from app.feedback import service as feedback
from app.health import repository
from app.health.schemas import Alert, HealthReport, HealthSnapshot, HealthSnapshotPage
from app.params import cursor_id, page_of
from app.registry import repository as registry
from app.registry import service as registry_service
from app.training import pooling as training_pooling
from app.training import repository as training

logger = logging.getLogger(__name__)


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


def _status(alerts: list[Alert]) -> str:
    return "warning" if alerts else "ok"


def _data_availability(session: Session, settings: Settings, alerts: list[Alert]) -> dict:
    serving = registry_service.segment_serving(session)
    stats = feedback.feedback_stats(session, serving=serving)
    pooled = POOLED_SEGMENT in serving
    # With a pooled model, segments train (borrowing from it) on a few samples of their own.
    minimum = settings.min_segment_samples if pooled else settings.min_samples_for_training
    found: list[Alert] = []
    if stats.total == 0:
        found.append(Alert(severity="warning", code="no_data", message="no feedback stored yet"))
    segments = {}
    for segment, seg in stats.by_segment.items():
        segments[segment] = {
            "stored": seg.total,
            "new_since_last_training": seg.new_since_last_training,
            "enough_for_training": seg.total >= minimum,
            "served_by": seg.served_by,
            "pooling_weight": seg.pooling_weight,
            "distance_from_pooled": seg.distance_from_pooled,
        }
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
        segments[POOLED_SEGMENT] = {
            "stored": stats.total,
            "new_since_last_training": training_pooling.pooled_new_samples(session),
            "enough_for_training": stats.total >= settings.min_samples_for_training,
            "served_by": POOLED_SEGMENT,
            "pooling_weight": None,
            "distance_from_pooled": None,
        }
    alerts += found
    return {
        "status": _status(found),
        "min_samples": minimum,
        "min_samples_pooled": settings.min_samples_for_training,
        "segments": segments,
    }


def _model_freshness(
    actives: list, segments: dict, settings: Settings, now: datetime, alerts: list[Alert]
) -> dict:
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
        report[model.segment] = {
            "version": model.version,
            "method": model.method,
            "age_days": round(age_days, 4),
            "stale": stale,
        }
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
        served = data["served_by"] is not None
        if actives and not served and segment not in by_segment and data["enough_for_training"]:
            found.append(
                Alert(
                    severity="warning",
                    code="no_model",
                    message=f"segment '{segment}' has enough data but no active calibrator",
                    segment=segment,
                )
            )
    alerts += found
    return {
        "status": _status(found),
        "max_age_days": settings.max_model_age_days,
        "segments": report,
    }


def _last_training(session: Session, alerts: list[Alert]) -> dict:
    found: list[Alert] = []
    report = {}
    for segment, run in sorted(training.latest_finished_runs(session).items()):
        report[segment] = {
            "run_id": run.id,
            "status": run.status,
            "trigger": run.trigger,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "reason": run.reason,
        }
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
    return {"status": _status(found), "segments": report}


def _calibration_drift(
    session: Session, actives: list, settings: Settings, alerts: list[Alert]
) -> dict:
    """The active calibrator's ECE on feedback newer than its training data, vs validation."""
    found: list[Alert] = []
    report = {}
    for model in actives:
        scores, labels = repository.recent_feedback(
            session,
            segment=model.segment,
            after_id=model.last_feedback_id or 0,
            limit=settings.drift_window,
        )
        validation_ece = model.metrics.get("ece")
        entry: dict[str, Any] = {
            "version": model.version,
            "validation_ece": validation_ece,
            "n_recent": int(scores.shape[0]),
            "recent_ece": None,
            "increase": None,
        }
        if scores.shape[0] >= settings.min_samples_for_training and validation_ece is not None:
            probs = registry_service.calibrator_for(model).predict(scores)
            recent_ece = evaluate(probs, labels)["ece"]
            entry.update(recent_ece=recent_ece, increase=recent_ece - validation_ece)
            if recent_ece - validation_ece > settings.drift_threshold:
                found.append(
                    Alert(
                        severity="warning",
                        code="calibration_drift",
                        message=f"segment '{model.segment}': ECE on {scores.shape[0]} recent "
                        f"samples is {recent_ece:.4f}, validation ECE was {validation_ece:.4f}",
                        segment=model.segment,
                    )
                )
        report[model.segment] = entry
    alerts += found
    return {"status": _status(found), "threshold": settings.drift_threshold, "segments": report}


def _scheduler(scheduler_status: dict[str, Any] | None, alerts: list[Alert]) -> dict:
    if scheduler_status is None or not scheduler_status.get("enabled"):
        return {"status": "disabled", "enabled": False, "is_running": False}
    jobs = {job["id"]: job for job in scheduler_status.get("jobs", [])}
    training_job = jobs.get("training", {})
    report = {
        "status": "ok",
        "enabled": True,
        "is_running": scheduler_status["is_running"],
        "next_training_run": training_job.get("next_run_time"),
    }
    if not scheduler_status["is_running"]:
        report["status"] = "warning"
        alerts.append(
            Alert(
                severity="warning",
                code="scheduler_stopped",
                message="the scheduler is enabled but not running: no nightly training",
            )
        )
    return report


def build_report(
    database: Database, settings: Settings, scheduler_status: dict[str, Any] | None
) -> HealthReport:
    """Every check, with alerts; ``unhealthy`` only when the database is unreachable."""
    now = utcnow()
    alerts: list[Alert] = []
    checks: dict[str, dict[str, Any]] = {}
    try:
        with database.session_scope(write=False) as session:
            started = time.perf_counter()
            repository.ping(session)
            checks["database"] = {
                "status": "ok",
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            data = _data_availability(session, settings, alerts)
            actives = registry.list_active(session)
            checks["data_availability"] = data
            checks["model_freshness"] = _model_freshness(
                actives, data["segments"], settings, now, alerts
            )
            checks["last_training"] = _last_training(session, alerts)
            checks["calibration_drift"] = _calibration_drift(session, actives, settings, alerts)
    except SQLAlchemyError as exc:
        checks = {"database": {"status": "error", "detail": type(exc).__name__}}
        alerts = [
            Alert(
                severity="critical",
                code="database_unreachable",
                message=f"the database cannot be reached ({type(exc).__name__})",
            )
        ]
    checks["scheduler"] = _scheduler(scheduler_status, alerts)
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
