"""Score calibration on numpy arrays: methods, metrics, selection, sequential tests, artifact."""

from app.calibration.comparison import paired_bootstrap
from app.calibration.methods import (
    ARTIFACT_FORMAT,
    METHODS,
    Calibrator,
    identity_calibrator,
    load_calibrator,
)
from app.calibration.metrics import band_check, evaluate, reliability_bins
from app.calibration.segments import (
    POOLED_SEGMENT,
    SegmentSpread,
    estimate_spread,
    fit_segments,
    fit_with_prior,
)
from app.calibration.selection import fit_calibrator
from app.calibration.sequential import (
    ConfidenceSequenceState,
    extend_confidence_sequence,
    paired_confidence_sequence,
)
from app.calibration.validation import validate_scores_labels

__all__ = [
    "ARTIFACT_FORMAT",
    "METHODS",
    "POOLED_SEGMENT",
    "Calibrator",
    "ConfidenceSequenceState",
    "SegmentSpread",
    "band_check",
    "estimate_spread",
    "evaluate",
    "extend_confidence_sequence",
    "fit_calibrator",
    "fit_segments",
    "fit_with_prior",
    "identity_calibrator",
    "load_calibrator",
    "paired_bootstrap",
    "paired_confidence_sequence",
    "reliability_bins",
    "validate_scores_labels",
]
