"""The analyzer's client of the calibration service (httpx and numpy only)."""

from typing import TYPE_CHECKING, Any

from calibration_client.artifact import (
    ARTIFACT_FORMAT,
    ArtifactCalibrator,
    band_interval,
    load_artifact,
)
from calibration_client.results import (
    Alert,
    CalibrateResult,
    FeedbackSummary,
    HealthReport,
    ImportSummary,
    ModelVersion,
    ShadowComparison,
    TrainingRun,
)

if TYPE_CHECKING:
    from calibration_client.client import CalibrationClient, CalibrationServiceError

# The HTTP client loads httpx, so it is imported on first use: the service imports this
# package's artifact code and has no use for an HTTP client.
_LAZY = {"CalibrationClient", "CalibrationServiceError"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from calibration_client import client

        return getattr(client, name)
    raise AttributeError(f"module 'calibration_client' has no attribute {name!r}")


__all__ = [
    "ARTIFACT_FORMAT",
    "Alert",
    "ArtifactCalibrator",
    "CalibrateResult",
    "CalibrationClient",
    "CalibrationServiceError",
    "FeedbackSummary",
    "HealthReport",
    "ImportSummary",
    "ModelVersion",
    "ShadowComparison",
    "TrainingRun",
    "band_interval",
    "load_artifact",
]
