"""Artifacts: the exact bytes served (and their ETag), and the calibrators they load into."""

from __future__ import annotations

import hashlib
import json
from threading import Lock
from typing import Any

import numpy as np

from app.calibration import Calibrator, load_calibrator
from app.registry.models import ModelVersion
from app.registry.schemas import CalibrateResponse

_CACHE_SIZE = 64
_calibrators: dict[str, Calibrator] = {}
_calibrators_lock = Lock()


def canonical_json(document: dict[str, Any]) -> bytes:
    """The exact bytes served for an artifact; its sha256 is the ETag."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def artifact_sha256(document: dict[str, Any]) -> str:
    """The strong ETag of an artifact: the sha256 of its canonical bytes."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def artifact_document(model: ModelVersion) -> tuple[bytes, str]:
    """The artifact's bytes and its strong ETag."""
    return canonical_json(model.artifact), model.artifact_sha256


def calibrator_for(model: ModelVersion) -> Calibrator:
    """The model's calibrator, cached by artifact hash (the hash names the content)."""
    with _calibrators_lock:
        cached = _calibrators.get(model.artifact_sha256)
    if cached is not None:
        return cached
    calibrator = load_calibrator(model.artifact)
    with _calibrators_lock:
        if len(_calibrators) >= _CACHE_SIZE:
            _calibrators.pop(next(iter(_calibrators)))
        _calibrators[model.artifact_sha256] = calibrator
    return calibrator


def calibrate(model: ModelVersion, scores: list[float], *, segment: str) -> CalibrateResponse:
    """Apply a version's calibrator (the client's artifact code) to raw scores of ``segment``.

    ``model`` may be the pooled one, serving a segment without a model of its own.
    """
    calibrated = calibrator_for(model).predict(np.asarray(scores, dtype=np.float64))
    return CalibrateResponse(
        calibrated=calibrated.tolist(),
        model_version=model.version,
        segment=segment,
        calibrator_segment=model.segment,
        method=model.method,
    )
