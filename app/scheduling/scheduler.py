"""In-process scheduling: nightly training and periodic health checks, once across replicas."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from app.calibration.segments import POOLED_SEGMENT
from app.config import Settings
from app.db import utcnow
from app.errors import ConflictError
from app.scheduling import repository
from app.scheduling.schemas import JobOutcome, SchedulerJob, SchedulerStatus
from app.training import pooling
from app.training import service as training
from app.training.heartbeat import Heartbeat
from app.training.models import RunTrigger
from app.training.pipeline import MLTrainingPipeline
from app.training.runner import TrainingRunner

logger = logging.getLogger(__name__)

TRAINING_JOB = "training"
HEALTH_JOB = "health_check"
# Interval jobs count from a fixed origin, so every replica computes the same firing times.
INTERVAL_ORIGIN = datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))
_SEARCH_LIMIT = 100_000


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _standard_days(field: str) -> list[int]:
    """Expand a standard cron day-of-week field (0 or 7 = Sunday, names allowed) to days."""
    days: set[int] = set()
    for part in field.lower().split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if spec == "*":
            low, high = 0, 6
        else:
            low_text, _, high_text = spec.partition("-")
            low = _day_number(low_text)
            high = _day_number(high_text) if high_text else (6 if step_text else low)
            if high_text and high == 0:
                high = 7
        days.update(day % 7 for day in range(low, high + 1, step))
    return sorted(days)


def _day_number(text: str) -> int:
    if text in _DAY_NAMES:
        return _DAY_NAMES.index(text)
    number = int(text)
    if not 0 <= number <= 7:
        raise ValueError(f"day of week {number} is outside 0-7")
    return number


def cron_trigger(expression: str, timezone: ZoneInfo) -> CronTrigger:
    """A trigger from a standard 5-field cron line.

    APScheduler 3 numbers weekdays from Monday = 0, standard cron from Sunday = 0: the
    day-of-week field is translated to names so "0 2 * * 1" means Monday, as in crontab.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expression!r} needs 5 fields, got {len(fields)}")
    minute, hour, day, month, day_of_week = fields
    if day_of_week != "*":
        day_of_week = ",".join(_DAY_NAMES[d] for d in _standard_days(day_of_week))
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=day_of_week,
        timezone=timezone,
    )


def latest_fire_time(trigger: BaseTrigger, now: datetime, lookback: timedelta) -> datetime | None:
    """The last time ``trigger`` fired at or before ``now`` (within ``lookback``)."""
    previous: datetime | None = None
    candidate = trigger.get_next_fire_time(None, now - lookback)
    for _ in range(_SEARCH_LIMIT):
        if candidate is None or candidate > now:
            return previous
        previous = candidate
        candidate = trigger.get_next_fire_time(previous, previous + timedelta(microseconds=1))
    return previous


@dataclass(frozen=True)
class _JobSpec:
    id: str
    name: str
    function: Callable[[], Any]
    trigger: BaseTrigger
    misfire_grace_time: int


# Builds, stores and logs a health snapshot given the scheduler's status; returns the outcome.
HealthJob = Callable[[SchedulerStatus], str]


class MLScheduler:
    """Nightly quality-gated training and health snapshots, started by the app's lifespan.

    Each firing is claimed in the database (a row keyed by job and scheduled time), so with
    several replicas or workers exactly one of them runs it. The jobs go to APScheduler only in
    ``start``: a scheduler that is not started (``CALIB_SCHEDULER_ENABLED=false``) has no next
    run times. ``health_job`` is handed in by the application, which owns the health report.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: MLTrainingPipeline,
        runner: TrainingRunner,
        *,
        training_trigger: BaseTrigger | None = None,
        health_job: HealthJob | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.database = pipeline.database
        self.runner = runner
        self.health_job = health_job
        self.timezone = ZoneInfo(settings.timezone)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.training_trigger = training_trigger or cron_trigger(
            settings.training_cron, self.timezone
        )
        self.health_trigger = IntervalTrigger(
            hours=settings.health_check_interval_hours,
            start_date=INTERVAL_ORIGIN,
            timezone=self.timezone,
        )
        self._jobs = [
            _JobSpec(
                TRAINING_JOB,
                "Quality-gated training of every segment with enough new feedback",
                self.run_training_job,
                self.training_trigger,
                misfire_grace_time=3600,
            ),
            _JobSpec(
                HEALTH_JOB,
                "Health check snapshot",
                self.run_health_job,
                self.health_trigger,
                misfire_grace_time=600,
            ),
        ]
        self._scheduler = BackgroundScheduler(timezone=self.timezone)

    @property
    def running(self) -> bool:
        return self._scheduler.running

    def start(self) -> None:
        for job in self._jobs:
            self._scheduler.add_job(
                job.function,
                trigger=job.trigger,
                id=job.id,
                name=job.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=job.misfire_grace_time,
            )
        self._scheduler.start()
        logger.info("scheduler started (%s)", self.instance)

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _claim(self, job_id: str, scheduled_for: datetime) -> bool:
        with self.database.session_scope() as session:
            return repository.claim_firing(
                session,
                job_id=job_id,
                scheduled_for=scheduled_for,
                claimed_by=self.instance,
                now=utcnow(),
            )

    def _finish(self, job_id: str, scheduled_for: datetime, outcome: str) -> None:
        with self.database.session_scope() as session:
            repository.finish_firing(
                session, job_id=job_id, scheduled_for=scheduled_for, outcome=outcome, now=utcnow()
            )

    def _firing_time(self, trigger: BaseTrigger, scheduled_for: datetime | None) -> datetime:
        if scheduled_for is not None:
            return scheduled_for
        now = datetime.now(self.timezone)
        return latest_fire_time(trigger, now, timedelta(days=8)) or now.replace(microsecond=0)

    def run_training_job(self, scheduled_for: datetime | None = None) -> str | None:
        """Start a run for every segment with enough new feedback; ``None`` if not claimed."""
        scheduled_for = self._firing_time(self.training_trigger, scheduled_for)
        if not self._claim(TRAINING_JOB, scheduled_for):
            logger.info("training firing %s claimed by another replica", scheduled_for)
            return None
        try:
            outcome = self._start_due_runs()
        except Exception as exc:
            logger.exception("scheduled training failed to start")
            outcome = f"failed: {type(exc).__name__}: {exc}"
        self._finish(TRAINING_JOB, scheduled_for, outcome)
        return outcome

    def _train_pooled_first(self) -> str | None:
        """Train ``_pooled`` here, before any segment, when enough new feedback arrived.

        It runs in this job's thread, not the workers': the segments started afterwards must
        see the pooled model it may deploy as their prior.
        """
        with self.database.session_scope(write=False) as session:
            new = pooling.pooled_new_samples(session)
        if new < self.settings.min_samples_for_training:
            return None
        try:
            with self.database.session_scope() as session:
                run_id = self.pipeline.start_run(
                    session,
                    segment=POOLED_SEGMENT,
                    force=False,
                    trigger=RunTrigger.SCHEDULE,
                    requested_by=f"scheduler:{self.instance}",
                ).id
        except ConflictError:
            return f"{POOLED_SEGMENT} already running"
        beat = Heartbeat(self.database, every=self.settings.run_heartbeat_seconds)
        try:
            with beat.holding(run_id):
                status = self.pipeline.execute(run_id)
        finally:
            beat.stop()
        return f"{POOLED_SEGMENT}:{run_id} {status}"

    def _start_due_runs(self) -> str:
        pooled = self._train_pooled_first()
        with self.database.session_scope(write=False) as session:
            stats = training.feedback_stats(session)
            has_prior = pooling.find_prior(session) is not None
        # Segments that borrow from a pooled model train on a few new samples.
        minimum = (
            self.settings.min_segment_samples
            if has_prior
            else self.settings.min_samples_for_training
        )
        due = [s for s, seg in stats.by_segment.items() if seg.new_since_last_training >= minimum]
        started, busy = [], []
        for segment in due:
            try:
                with self.database.session_scope() as session:
                    run = self.pipeline.start_run(
                        session,
                        segment=segment,
                        force=False,
                        trigger=RunTrigger.SCHEDULE,
                        requested_by=f"scheduler:{self.instance}",
                    )
                    run_id = run.id
            except ConflictError:
                busy.append(segment)
                continue
            self.runner.submit(run_id)
            started.append(f"{segment}:{run_id}")
        parts = [f"trained {pooled}"] if pooled else []
        if not due:
            return "; ".join([*parts, f"no segment has {minimum} new samples"])
        parts.append(f"started runs {', '.join(started)}" if started else "started no run")
        if busy:
            parts.append(f"already running: {', '.join(busy)}")
        return "; ".join(parts)

    def run_health_job(self, scheduled_for: datetime | None = None) -> str | None:
        """Store a health snapshot; ``None`` if another replica took this firing."""
        scheduled_for = self._firing_time(self.health_trigger, scheduled_for)
        if self.health_job is None or not self._claim(HEALTH_JOB, scheduled_for):
            return None
        outcome = self.health_job(self.get_scheduler_status())
        self._finish(HEALTH_JOB, scheduled_for, outcome)
        return outcome

    def get_scheduler_status(self) -> SchedulerStatus:
        """What ``GET /v1/scheduler`` serves: running, and each job's trigger and next run."""
        running = self._scheduler.running
        jobs = []
        for spec in self._jobs:
            job = self._scheduler.get_job(spec.id) if running else None
            jobs.append(
                SchedulerJob(
                    id=spec.id,
                    name=spec.name,
                    trigger=str(spec.trigger),
                    next_run_time=getattr(job, "next_run_time", None),
                    last_outcome=self._last_outcome(spec.id),
                )
            )
        return SchedulerStatus(
            enabled=self.settings.scheduler_enabled,
            is_running=running,
            timezone=str(self.timezone),
            jobs=jobs,
        )

    def _last_outcome(self, job_id: str) -> JobOutcome | None:
        try:
            with self.database.session_scope(write=False) as session:
                firing = repository.last_firing(session, job_id)
        except Exception:
            logger.debug("last outcome of %s unavailable", job_id, exc_info=True)
            return None
        if firing is None:
            return None
        return JobOutcome.model_validate(firing, from_attributes=True)
