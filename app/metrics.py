"""Prometheus metrics: process-local instruments, plus database-derived ones read at scrape."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import Database, utcnow
from app.feedback import repository as feedback_repository
from app.registry import service as registry
from app.shadow import service as shadow
from app.shadow.schemas import ShadowComparisonRead
from app.training import repository as training
from app.training.models import RunStatus

logger = logging.getLogger(__name__)

HEALTH_STATES = ("healthy", "degraded", "unhealthy")


class DatabaseCollector(Collector):
    """Metrics whose truth is in the database, so every replica reports the same numbers.

    Feedback totals are counted incrementally (only ids above the last one seen), so a scrape
    stays an index range scan however large the table grows.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._last_id = 0
        self._feedback: dict[tuple[str, bool], int] = {}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("calib_database_up", "1 when the database answered the scrape")
        try:
            with self.database.session_scope(write=False) as session, self._lock:
                for segment, label, count, top in feedback_repository.counts_after(
                    session, self._last_id
                ):
                    key = (segment, label)
                    self._feedback[key] = self._feedback.get(key, 0) + count
                    self._last_id = max(self._last_id, top)
                feedback = dict(self._feedback)
                runs = training.count_runs_by_status(session)
                actives = registry.list_active(session)
                comparisons = shadow.latest_per_segment(session)
        except SQLAlchemyError as exc:
            logger.debug("metrics scrape could not reach the database: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up

        stored = CounterMetricFamily(
            "calib_feedback", "Feedback records stored", labels=["segment", "label"]
        )
        for (segment, label), count in sorted(feedback.items()):
            stored.add_metric([segment, "true" if label else "false"], count)
        yield stored

        by_status = GaugeMetricFamily(
            "calib_training_runs", "Training runs stored, by status", labels=["status"]
        )
        for status in RunStatus:
            by_status.add_metric([status], runs.get(status, 0))
        yield by_status

        version = GaugeMetricFamily(
            "calib_active_model_version", "Active calibrator version", labels=["segment"]
        )
        ece = GaugeMetricFamily(
            "calib_active_model_ece", "Validation ECE of the active calibrator", labels=["segment"]
        )
        age = GaugeMetricFamily(
            "calib_active_model_age_seconds", "Age of the active calibrator", labels=["segment"]
        )
        now = utcnow()
        for model in actives:
            version.add_metric([model.segment], model.version)
            if model.metrics.get("ece") is not None:
                ece.add_metric([model.segment], model.metrics["ece"])
            activated = model.activated_at or model.created_at
            age.add_metric([model.segment], (now - activated).total_seconds())
        yield version
        yield ece
        yield age
        yield from _shadow_metrics(comparisons)


def _shadow_metrics(comparisons: list[ShadowComparisonRead]) -> Iterator[Metric]:
    """The latest champion/challenger comparison of each segment."""
    labels = ["segment", "challenger", "champion"]
    families = {
        "running": GaugeMetricFamily(
            "calib_shadow_running", "1 while the comparison is running", labels=labels
        ),
        "n": GaugeMetricFamily(
            "calib_shadow_records", "Feedback records scored by both models", labels=labels
        ),
        "low": GaugeMetricFamily(
            "calib_shadow_interval_low",
            "Lower bound of the Brier difference (challenger - champion)",
            labels=labels,
        ),
        "high": GaugeMetricFamily(
            "calib_shadow_interval_high",
            "Upper bound of the Brier difference (challenger - champion)",
            labels=labels,
        ),
    }
    for comparison in comparisons:
        key = [
            comparison.segment,
            str(comparison.challenger_version),
            str(comparison.champion_version),
        ]
        families["running"].add_metric(key, float(comparison.status == "running"))
        families["n"].add_metric(key, comparison.n)
        families["low"].add_metric(key, comparison.interval[0])
        families["high"].add_metric(key, comparison.interval[1])
    yield from families.values()


class ServiceMetrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self, database: Database) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "calib_http_requests",
            "HTTP requests by route template",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "calib_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.training_duration = Histogram(
            "calib_training_duration_seconds",
            "Wall time of training runs executed by this process",
            ["status"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.health_status = Gauge(
            "calib_health_status",
            "1 for the status of the latest health report",
            ["status"],
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(database))
        # (method, route, status) -> its two children: labels() costs more than the update.
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, route, str(status)),
                self.http_latency.labels(method, route),
            )
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def training_finished(self, status: str, seconds: float) -> None:
        self.training_duration.labels(status=status).observe(seconds)

    def health_reported(self, status: str) -> None:
        for state in HEALTH_STATES:
            self.health_status.labels(status=state).set(1.0 if state == status else 0.0)


class HTTPMetricsMiddleware:
    """Counts and times every request by its route template (never the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics: ServiceMetrics | None = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.request_done(scope["method"], route, status, time.perf_counter() - started)
