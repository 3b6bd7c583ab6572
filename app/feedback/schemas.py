"""Request and response shapes of the feedback API; strict, so nothing is guessed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.config import DEFAULT_SEGMENT, RESERVED_SEGMENTS, SEGMENT_PATTERN, check_segment
from app.middleware import max_metadata_bytes
from app.params import TIMESTAMP_PATTERN

# PostgreSQL text cannot hold NUL; documented here, enforced by check_no_nul.
NO_NUL_PATTERN = r"^[^\u0000]*$"

# One day of slack each side: any offset of a 1970-2099 local time stays inside.
MIN_TIMESTAMP = datetime(1969, 12, 31, tzinfo=UTC)
MAX_TIMESTAMP = datetime(2100, 1, 2, tzinfo=UTC)


def check_no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A NUL character is written \u0000 in JSON; a backslash before it would make it literal text.
_ENCODED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_TIMESTAMP_TEXT = re.compile(TIMESTAMP_PATTERN)


def encodes_nul(encoded: str) -> bool:
    """Whether ASCII-escaped JSON text holds a real NUL character (not the text "\\u0000")."""
    return "\\u0000" in encoded and _ENCODED_NUL.search(encoded) is not None


def check_small_json_object(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """At most ``CALIB_MAX_METADATA_BYTES`` of JSON, without NaN, Infinity or NUL characters."""
    if value is None:
        return None
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError("must not contain NaN or Infinity") from exc
    if encodes_nul(encoded):
        raise ValueError("must not contain NUL characters")
    limit = max_metadata_bytes.get()
    if len(encoded.encode()) > limit:
        raise ValueError(f"must be at most {limit} bytes as JSON")
    return value


def check_timestamp(value: datetime | None) -> datetime | None:
    """Timestamps are UTC (a naive one is read as UTC) between 1970 and 2100."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not MIN_TIMESTAMP <= value < MAX_TIMESTAMP:
        raise ValueError("must be between 1970-01-01 and 2100-01-01")
    return value.astimezone(UTC)


class FeedbackCreate(BaseModel):
    """One reviewer verdict: the analyzer said ``score``, the reviewer said ``label``."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(
        ge=0.0, le=1.0, allow_inf_nan=False, strict=True, description="Analyzer confidence"
    )
    label: bool = Field(strict=True, description="True when the finding was right")
    segment: str = Field(default=DEFAULT_SEGMENT, pattern=SEGMENT_PATTERN, strict=True)
    external_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        strict=True,
        description="The client's idempotency key: a replay with the same body is a no-op",
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    )
    source: str | None = Field(
        default=None,
        max_length=128,
        strict=True,
        description="Analyzer or model version",
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    )
    occurred_at: datetime | None = Field(
        default=None,
        description="When the finding was made (ISO 8601, years 1970-2099); default: received",
        json_schema_extra={"pattern": TIMESTAMP_PATTERN},
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        strict=True,
        description="A small JSON object (at most CALIB_MAX_METADATA_BYTES, 4 KiB by default)",
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _timestamp_is_text(cls, value: Any) -> Any:
        # Lax parsing would read a number, or digits in a string, as an epoch: only ISO 8601
        # date-time text of the accepted years gets through.
        if value is None or isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not _TIMESTAMP_TEXT.fullmatch(value):
            raise ValueError("must be an ISO 8601 date-time string (years 1970-2099)")
        return value

    @model_validator(mode="after")
    def _check_fields(self) -> FeedbackCreate:
        # One Python call per item rather than one per field: a batch validates 10,000 items.
        # Each failure still names its field; pydantic prefixes the item's location.
        errors: list[InitErrorDetails] = []
        checks: list[tuple[str, Callable[[Any], Any]]] = []
        if self.segment in RESERVED_SEGMENTS:
            checks.append(("segment", check_segment))
        if self.external_id is not None and "\x00" in self.external_id:
            checks.append(("external_id", check_no_nul))
        if self.source is not None and "\x00" in self.source:
            checks.append(("source", check_no_nul))
        if self.occurred_at is not None:
            # Also replaces pydantic's tzinfo by datetime.UTC, which later formatting reads faster.
            checks.append(("occurred_at", check_timestamp))
        if self.metadata is not None:
            checks.append(("metadata", check_small_json_object))
        for field, check in checks:
            value = getattr(self, field)
            try:
                setattr(self, field, check(value))
            except ValueError as exc:
                error = PydanticCustomError(
                    "value_error", "Value error, {reason}", {"reason": str(exc)}
                )
                errors.append(InitErrorDetails(type=error, loc=(field,), input=value))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


class FeedbackRead(BaseModel):
    id: int
    external_id: str | None
    segment: str
    score: float
    label: bool
    source: str | None
    occurred_at: datetime
    received_at: datetime
    metadata: dict[str, Any] | None


class FeedbackBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackCreate] = Field(
        description="At most max_batch_size (10,000) records; all stored or none"
    )


class FeedbackBatchResult(BaseModel):
    inserted: int = Field(description="Records stored by this request")
    duplicates: int = Field(description="Skipped: external_id already stored with the same body")
    conflicts: list[int] = Field(
        description="Indices of skipped items whose external_id is stored with another body"
    )


class FeedbackPage(BaseModel):
    items: list[FeedbackRead]
    next_cursor: str | None


class LabelCounts(BaseModel):
    true: int
    false: int


class SegmentStats(BaseModel):
    total: int
    by_label: LabelCounts
    new_since_last_training: int
    last_training_feedback_id: int | None
    served_by: str | None = Field(
        default=None,
        description="whose calibrator serves the segment: its own name, '_pooled', or null",
    )
    pooling_weight: float | None = Field(
        default=None,
        description="how much the segment's calibrator borrows from the pooled one "
        "(1: the pooled map, 0: its own data alone); null without a pooled prior",
    )
    distance_from_pooled: float | None = Field(
        default=None,
        description="mean |segment map - pooled map| over the segment's training scores",
    )


class FeedbackStats(BaseModel):
    total: int
    by_label: LabelCounts
    by_segment: dict[str, SegmentStats]
    new_since_last_training: int
