"""The analyzer's client, kept importable here; it lives in ``clients/python`` now."""

from calibration_client import (
    CalibrationClient,
    CalibrationServiceError,
    FeedbackSummary,
    ImportSummary,
    TrainingRun,
)

__all__ = [
    "CalibrationClient",
    "CalibrationServiceError",
    "FeedbackSummary",
    "ImportSummary",
    "TrainingRun",
]
