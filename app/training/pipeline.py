"""The seed's training interface: one object that trains segments by the service's rules.

    pipeline = MLTrainingPipeline(min_samples_for_training=50, training_interval_days=7,
                                  performance_threshold=0.05)   # None: from settings
    result = await pipeline.fine_tune_model_with_feedback(force_retrain=True)
    result["status"], result["evaluation_results"]["ece_improvement"]

The HTTP API and the scheduler go through the same object (``start_run`` then ``execute``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.training import service
from app.training.evaluation import TrainingPolicy
from app.training.heartbeat import Heartbeat
from app.training.models import RunTrigger, TrainingRun


class MLTrainingPipeline:
    """Collect feedback, train, judge against production, deploy through the quality gate.

    Parameters
    ----------
    min_samples_for_training, training_interval_days, performance_threshold : optional
        Override the settings' ``CALIB_MIN_SAMPLES_FOR_TRAINING``,
        ``CALIB_TRAINING_INTERVAL_DAYS`` and ``CALIB_PERFORMANCE_THRESHOLD``.
    settings : Settings, optional
        Read from the environment when not given.
    database : Database, optional
        Shared with the service when given; otherwise the pipeline opens (and closes) its own.
    """

    def __init__(
        self,
        min_samples_for_training: int | None = None,
        training_interval_days: float | None = None,
        performance_threshold: float | None = None,
        *,
        settings: Settings | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings or Settings()
        overrides = {
            field: value
            for field, value in (
                ("min_samples", min_samples_for_training),
                ("interval_days", training_interval_days),
                ("threshold", performance_threshold),
            )
            if value is not None
        }
        self.policy = dataclasses.replace(TrainingPolicy.from_settings(self.settings), **overrides)
        self._owns_database = database is None
        self.database = database or Database(self.settings)

    def start_run(
        self,
        session: Session,
        *,
        segment: str,
        force: bool,
        trigger: str,
        requested_by: str | None,
    ) -> TrainingRun:
        """Record a queued run in the caller's transaction (409 if one is open)."""
        return service.start_run(
            session, segment=segment, force=force, trigger=trigger, requested_by=requested_by
        )

    def execute(self, run_id: int) -> str | None:
        """Run a queued run to its end; the final status (``None`` if another worker has it)."""
        return service.execute_run(self.database, self.policy, run_id)

    def run_once(
        self, *, segment: str = "default", force: bool = False, trigger: str = RunTrigger.CLI
    ) -> dict[str, Any]:
        """Start and execute one run here, heartbeating it; the run as its JSON."""
        with self.database.session_scope() as session:
            run_id = self.start_run(
                session, segment=segment, force=force, trigger=trigger, requested_by="pipeline"
            ).id
        heartbeat = Heartbeat(self.database, every=self.settings.run_heartbeat_seconds)
        try:
            with heartbeat.holding(run_id):
                self.execute(run_id)
        finally:
            heartbeat.stop()
        with self.database.session_scope(write=False) as session:
            run = service.to_read(service.get_run(session, run_id=run_id))
        return run.model_dump(mode="json")

    async def fine_tune_model_with_feedback(
        self, force_retrain: bool = False, segment: str = "default"
    ) -> dict[str, Any]:
        """Train ``segment`` now (off the event loop); the finished run as a dict."""
        return await asyncio.to_thread(self.run_once, segment=segment, force=force_retrain)

    def close(self) -> None:
        if self._owns_database:
            self.database.dispose()
