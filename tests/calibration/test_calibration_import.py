"""app.calibration is usable alone: importing it loads no web or database framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "pydantic_settings", "httpx")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a fresh interpreter loading scikit-learn
def test_fresh_interpreter_import_loads_no_service_framework():
    code = (
        "import json, sys\n"
        "import app.calibration as c\n"
        "c.fit_calibrator([0.1, 0.4, 0.6, 0.9] * 10, [0, 0, 1, 1] * 10).predict([0.5])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert bad == []


def test_public_surface():
    import app.calibration as c

    assert c.ARTIFACT_FORMAT == "calibrator/v1"
    assert c.METHODS == ("identity", "platt", "beta", "isotonic", "histogram")
    assert set(c.__all__) == {
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
    }
