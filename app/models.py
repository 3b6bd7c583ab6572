"""Every table, imported in one place so the metadata is complete (Alembic, tests)."""

from app.db import Base
from app.feedback.models import Feedback
from app.health.models import HealthCheck
from app.registry.models import ModelEvent, ModelVersion
from app.scheduling.models import JobFiring
from app.shadow.models import ShadowComparison
from app.training.models import TrainingRun

__all__ = [
    "Base",
    "Feedback",
    "HealthCheck",
    "JobFiring",
    "ModelEvent",
    "ModelVersion",
    "ShadowComparison",
    "TrainingRun",
]
