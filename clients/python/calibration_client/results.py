"""What the service answers, as typed dataclasses built from its JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

FINAL_RUN_STATUSES = frozenset({"deployed", "rejected", "skipped", "failed"})


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class _Result:
    """``result["name"]`` reads a field too, for code written against the JSON dictionaries."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def _known(cls: type, data: dict[str, Any], times: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``cls`` found in ``data``, with the ``times`` parsed as datetimes."""
    # Fields the service adds later are ignored, so an older client keeps working.
    names = {f.name for f in dataclasses.fields(cls)}
    known = {key: value for key, value in data.items() if key in names}
    for key in times:
        known[key] = _time(known.get(key))
    return known


@dataclass
class FeedbackSummary(_Result):
    """What a ``send_feedback`` call achieved, over all its batches."""

    inserted: int = 0
    duplicates: int = 0
    conflicts: list[int] = field(default_factory=list)
    external_ids: list[str] = field(default_factory=list)


@dataclass
class ImportSummary(_Result):
    """What an ``import_file`` call achieved; ``rejected`` holds (line, reason) pairs."""

    rows: int = 0
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    format: str = "ndjson"
    format_note: str | None = None  # set when the format was guessed from the first line


@dataclass(frozen=True)
class TrainingRun(_Result):
    id: int
    segment: str
    trigger: str
    status: str
    reason: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    evaluation_results: dict[str, Any] | None = None
    error: str | None = None
    model_version: int | None = None
    n_samples: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_RUN_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**_known(cls, data, ("created_at", "started_at", "finished_at")))


@dataclass(frozen=True)
class ModelVersion(_Result):
    segment: str
    version: int
    method: str
    status: str
    metrics: dict[str, Any]
    n_train: int
    n_validation: int
    created_at: datetime | None = None
    activated_at: datetime | None = None
    params: dict[str, Any] = field(default_factory=dict)
    training_run_id: int | None = None
    artifact_sha256: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**_known(cls, data, ("created_at", "activated_at")))


@dataclass(frozen=True)
class ShadowComparison(_Result):
    """A champion/challenger comparison: differences are challenger - champion."""

    segment: str
    challenger_version: int
    champion_version: int
    status: str  # running, promoted, retired, stopped
    n: int
    interval: tuple[float, float]
    brier_difference: float | None = None
    log_loss_difference: float | None = None
    alpha: float | None = None
    reason: str | None = None
    started_at: datetime | None = None
    decided_at: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = _known(cls, data, ("started_at", "decided_at"))
        known["interval"] = tuple(known["interval"])
        return cls(**known)


@dataclass(frozen=True)
class Alert(_Result):
    severity: str
    code: str
    message: str
    segment: str | None = None


@dataclass(frozen=True)
class HealthReport(_Result):
    status: str
    checks: dict[str, dict[str, Any]]
    alerts: list[Alert]
    checked_at: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            status=data["status"],
            checks=data.get("checks", {}),
            alerts=[Alert(**_known(Alert, alert)) for alert in data.get("alerts", [])],
            checked_at=_time(data.get("checked_at")),
        )


@dataclass(frozen=True)
class CalibrateResult(_Result):
    """``POST /v1/calibrate``: the service's own apply of its active calibrator."""

    calibrated: list[float]
    model_version: int
    segment: str
    method: str
    # Whose calibrator answered: the segment's own, or "_pooled" for a segment without one.
    calibrator_segment: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**_known(cls, data))
