"""A batch body, from request bytes to driver rows, with the single record's rules.

The reference is ``FeedbackBatchCreate`` (a model per item, then ``service.driver_row``, the
single record's row, per item). For 10,000 items that costs several times the insert,
so batches take a fast path first:

* ``_FAST``, a msgspec decoder, validates the bytes into plain structs in C (no Python code
  per item; about 4x faster than pydantic's ``validate_json`` into dicts, measured on 10,000
  items). Each field carries exactly the constraints of ``FeedbackCreate``, except
  ``occurred_at``, which stays text here.
* ``_fast_rows`` then does, in one loop, what the model's own validator and the row building
  do: reserved segments, NUL characters, metadata size and NaN, the timestamp's UTC text, and
  the body hash (``service.canonical_body_sha256``'s text, written out in the loop).

The fast path only ever accepts a subset of what the reference accepts, and gives the same row
for it. Anything it does not take (any invalid item, but also a timestamp it does not parse
itself, such as a date without a time) sends the whole body down the reference path, which
then decides: so the 422s, their order and wording, and the accepted set are those of the
reference by construction, whatever the two JSON decoders make of odd input (msgspec refuses
NaN, numbers beyond a double and lone surrogates; those bodies go to the reference too).
``tests/feedback`` checks both paths give the same rows, body hashes included.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Annotated, Any

import msgspec
from pydantic import ValidationError

from app.config import DEFAULT_SEGMENT, RESERVED_SEGMENTS, SEGMENT_PATTERN
from app.feedback.repository import BatchRow
from app.feedback.schemas import (
    FeedbackBatchCreate,
    encodes_nul,
)
from app.feedback.service import driver_row
from app.middleware import max_metadata_bytes


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    """The constraints of FeedbackCreate's fields, field by field."""

    score: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    label: bool
    # SEGMENT_PATTERN is checked in _fast_rows, once per distinct segment of the batch.
    segment: str = DEFAULT_SEGMENT
    external_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    source: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    # FeedbackCreate takes only text (or null) here too; _fast_rows parses the forms it knows.
    occurred_at: str | None = None
    metadata: dict[str, Any] | None = None


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    items: list[_Item]


_FAST = msgspec.json.Decoder(_Body)

# The timestamps the fast path parses itself: date, "T", time with seconds, up to 6 fraction
# digits, then "Z", an offset or nothing (naive is UTC). Years 1970-2099 and an offset under a
# day (fromisoformat refuses more) keep every such instant inside check_timestamp's bounds.
_TIMESTAMP = re.compile(
    r"((?:19[7-9][0-9]|20[0-9][0-9])-[0-9]{2}-[0-9]{2})T([0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.([0-9]{1,6}))?(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
)
_UTC_ZONES = frozenset({None, "Z", "+00:00", "-00:00"})
# The usual case, without the regular expression: "YYYY-MM-DDTHH:MM:SS" and one of these.
_UTC_TAILS = frozenset({"", "Z", "+00:00"})
_SEGMENT = re.compile(SEGMENT_PATTERN)

# check_small_json_object's encoding, but with sorted keys: the same length and the same
# string contents, and it is also the hash's encoding of the metadata (NaN refused here).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_STORED = json.JSONEncoder()  # json.dumps with its defaults: what SQLAlchemy's JSON type writes


class _NotFast(Exception):
    """The fast path does not take this body; the reference path decides."""


def parse_batch(body: bytes) -> list[BatchRow]:
    """The rows of a batch body (``repository.BatchRow``), in the items' order.

    Raises pydantic's ``ValidationError`` (locations from ``items``) on any bad item.
    """
    try:
        return _fast_rows(body)
    except (ValidationError, ValueError, OverflowError, _NotFast):
        pass
    batch = FeedbackBatchCreate.model_validate_json(body)
    return [driver_row(item) for item in batch.items]


def _fast_rows(body: bytes) -> list[BatchRow]:
    items = _FAST.decode(body).items
    rows: list[BatchRow] = []
    append = rows.append
    sha256 = hashlib.sha256
    new_row = tuple.__new__  # BatchRow._make without its length check: half the cost
    fromisoformat = datetime.fromisoformat
    segments: set[str] = set()  # the batch's segments that passed the checks
    metadata_limit = max_metadata_bytes.get()
    for item in items:
        segment = item.segment
        external_id = item.external_id
        source = item.source
        occurred = item.occurred_at
        metadata = item.metadata
        score = item.score
        label = item.label
        if segment not in segments:
            if segment in RESERVED_SEGMENTS or _SEGMENT.fullmatch(segment) is None:
                raise _NotFast
            segments.add(segment)
        if source is None:
            source_json = "null"
        elif "\x00" in source:
            raise _NotFast
        else:
            source_json = encode_basestring_ascii(source)

        if occurred is None:
            occurred_text = None
            occurred_json = "null"
        elif (
            len(occurred) >= 19
            and occurred[4:17:3] == "--T::"
            and occurred[19:] in _UTC_TAILS
            and "1970" <= occurred[:4] <= "2099"
        ):
            # "YYYY-MM-DDTHH:MM:SS" in UTC. fromisoformat checks the digits and that the day
            # and the time exist (ValueError otherwise).
            fromisoformat(occurred)
            occurred_text = f"{occurred[:10]} {occurred[11:19]}.000000"
            occurred_json = f'"{occurred[:19]}+00:00"'
        else:
            occurred_text, occurred_json = _timestamp(occurred)

        if metadata is None:
            stored_metadata = None
            metadata_json = "null"
        else:
            metadata_json = _CANONICAL.encode(metadata)  # ValueError on NaN or Infinity
            if encodes_nul(metadata_json) or len(metadata_json) > metadata_limit:
                raise _NotFast
            stored_metadata = _STORED.encode(metadata)

        if external_id is None:
            digest = None
        else:
            # service.canonical_body_sha256, inlined: a call per item is a tenth of the loop.
            if "\x00" in external_id:
                raise _NotFast
            digest = sha256(
                f'["{segment}",{score!r},{"true" if label else "false"},{source_json},'
                f"{occurred_json},{metadata_json}]".encode()
            ).hexdigest()
        row = (external_id, segment, score, label, source, occurred_text, stored_metadata, digest)
        append(new_row(BatchRow, row))
    return rows


def _timestamp(text: str) -> tuple[str, str]:
    """``sqlite_timestamp`` of the instant, and its UTC ``isoformat`` as JSON (for the hash)."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise _NotFast
    parsed = datetime.fromisoformat(text)  # ValueError: no such day or time
    date, clock, fraction, zone = match.groups()
    if zone in _UTC_ZONES:
        micro = "000000" if fraction is None else fraction.ljust(6, "0")
        if micro == "000000":
            return f"{date} {clock}.000000", f'"{date}T{clock}+00:00"'
        return f"{date} {clock}.{micro}", f'"{date}T{clock}.{micro}+00:00"'
    utc = parsed.astimezone(UTC)
    return utc.isoformat(" ", "microseconds")[:26], f'"{utc.isoformat()}"'
