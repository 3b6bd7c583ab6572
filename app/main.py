"""The application factory: settings in, a FastAPI app out; resources live in the lifespan."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.auth import document_api_keys
from app.config import Settings
from app.dashboard.router import router as dashboard_router
from app.db import Database
from app.errors import install_error_handlers
from app.feedback.router import router as feedback_router
from app.health import service as health
from app.health.router import router as health_router
from app.logging import configure_logging
from app.metrics import HTTPMetricsMiddleware, ServiceMetrics
from app.middleware import BodySizeLimitMiddleware
from app.registry.router import router as registry_router
from app.scheduling.router import router as scheduling_router
from app.scheduling.scheduler import MLScheduler
from app.shadow.router import router as shadow_router
from app.shadow.service import ShadowPolicy
from app.shadow.updater import FeedbackHookMiddleware, ShadowUpdater
from app.training.pipeline import MLTrainingPipeline
from app.training.router import feedback_stats_router
from app.training.router import router as training_router
from app.training.runner import TrainingRunner

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Without ``settings``, they are read from the environment."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(json_lines=settings.log_json)
        if not settings.api_keys:
            logger.warning(
                "no API keys configured (CALIB_API_KEYS): the service is open to anyone who "
                "can reach it; keep it bound to localhost"
            )
        database = Database(settings)
        metrics = ServiceMetrics(database)
        pipeline = MLTrainingPipeline(settings=settings, database=database)
        runner = TrainingRunner(
            pipeline.execute,
            database,
            heartbeat_every=settings.run_heartbeat_seconds,
            stale_after=settings.run_stale_after_seconds,
            reap_every=settings.run_reap_interval_seconds,
            on_finished=metrics.training_finished,
        )
        scheduler = MLScheduler(
            settings,
            pipeline,
            runner,
            health_job=functools.partial(
                health.snapshot_job, database, settings, on_status=metrics.health_reported
            ),
        )
        app.state.database = database
        app.state.metrics = metrics
        app.state.pipeline = pipeline
        app.state.training_runner = runner
        app.state.scheduler = scheduler
        app.state.shadow_updater = ShadowUpdater(database, ShadowPolicy.from_settings(settings))
        runner.start()
        if settings.scheduler_enabled:
            scheduler.start()
        try:
            yield
        finally:
            scheduler.shutdown()
            runner.stop()
            await database.close_writer()
            app.state.shadow_updater.shutdown()
            database.dispose()

    docs = settings.docs_enabled
    app = FastAPI(
        title="Calibration service",
        version="1.0.0",
        summary="Learns from human feedback how much to trust an AI analyzer's confidence.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        max_metadata_bytes=settings.max_metadata_bytes,
    )
    app.add_middleware(HTTPMetricsMiddleware)
    app.add_middleware(FeedbackHookMiddleware)
    install_error_handlers(app)
    routers = (
        feedback_router,
        feedback_stats_router,
        training_router,
        # Before the registry: its /v1/models/{segment}/{version} would take ".../shadow".
        shadow_router,
        registry_router,
        health_router,
        scheduling_router,
        dashboard_router,
    )
    for router in routers:
        app.include_router(router)
    document_api_keys(app, routers)
    return app
