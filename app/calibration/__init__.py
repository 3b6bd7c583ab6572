"""Score calibration as a library on numpy arrays: methods, metrics, selection, artifact."""

from app.calibration.comparison import paired_bootstrap
from app.calibration.methods import (
    ARTIFACT_FORMAT,
    METHODS,
    Calibrator,
    identity_calibrator,
    load_calibrator,
)
from app.calibration.metrics import evaluate, reliability_bins
from app.calibration.segments import (
    POOLED_SEGMENT,
    SegmentSpread,
    estimate_spread,
    fit_segments,
    fit_with_prior,
)
from app.calibration.selection import fit_calibrator
from app.calibration.validation import validate_scores_labels

__all__ = [
    "ARTIFACT_FORMAT",
    "METHODS",
    "POOLED_SEGMENT",
    "Calibrator",
    "SegmentSpread",
    "estimate_spread",
    "evaluate",
    "fit_calibrator",
    "fit_segments",
    "fit_with_prior",
    "identity_calibrator",
    "load_calibrator",
    "paired_bootstrap",
    "reliability_bins",
    "validate_scores_labels",
]
