"""Artifacts: the exact bytes served (and their ETag), and the calibrators they load into."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from threading import Lock
from typing import Any, Protocol, TypeVar

import numpy as np

from app.calibration import Calibrator, load_calibrator
from app.registry.models import ModelVersion
from app.registry.schemas import CalibrateResponse

T = TypeVar("T")

_CACHE_SIZE = 64
_calibrators: dict[str, Calibrator] = {}
_bodies: dict[str, bytes] = {}
_cache_lock = Lock()


def _cached(store: dict[str, T], key: str, make: Callable[[], T]) -> T:
    """``store[key]``, made once (the key is a content hash, so an entry never goes stale)."""
    with _cache_lock:
        cached = store.get(key)
    if cached is not None:
        return cached
    value = make()
    with _cache_lock:
        if len(store) >= _CACHE_SIZE:
            store.pop(next(iter(store)))
        store[key] = value
    return value


def canonical_json(document: dict[str, Any]) -> bytes:
    """The exact bytes served for an artifact; its sha256 is the ETag."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def artifact_sha256(document: dict[str, Any]) -> str:
    """The strong ETag of an artifact: the sha256 of its canonical bytes."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def artifact_body(model: ModelVersion) -> bytes:
    """The artifact's exact bytes, cached by their hash (an averaged map is ~65 KB of JSON)."""
    return _cached(_bodies, model.artifact_sha256, lambda: canonical_json(model.artifact))


def calibrator_for(model: ModelVersion) -> Calibrator:
    """The model's calibrator, cached by artifact hash (the hash names the content)."""
    return _cached(_calibrators, model.artifact_sha256, lambda: load_calibrator(model.artifact))


def cached_body(sha256: str) -> bytes | None:
    """The artifact bytes of this hash, if made already."""
    with _cache_lock:
        return _bodies.get(sha256)


def cached_calibrator(sha256: str) -> Calibrator | None:
    """The calibrator of this artifact hash, if loaded already."""
    with _cache_lock:
        return _calibrators.get(sha256)


def calibrate(model: ModelVersion, scores: list[float], *, segment: str) -> CalibrateResponse:
    """Apply a version's calibrator (the client's artifact code) to raw scores of ``segment``.

    ``model`` may be the pooled one, serving a segment without a model of its own.
    """
    return calibrated_by(calibrator_for(model), model, scores, segment=segment)


class Served(Protocol):
    """What an answer names of the model that gave it: a ``ModelVersion`` or a digest of one."""

    @property
    def segment(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def method(self) -> str: ...


def calibrated_by(
    calibrator: Calibrator, model: Served, scores: list[float], *, segment: str
) -> CalibrateResponse:
    """The answer of ``calibrator``, ``model``'s, to raw scores of ``segment``."""
    calibrated = calibrator.predict(np.asarray(scores, dtype=np.float64))
    return CalibrateResponse(
        calibrated=calibrated.tolist(),
        model_version=model.version,
        segment=segment,
        calibrator_segment=model.segment,
        method=model.method,
    )
