"""The rules of ingestion: idempotency by external id, all-or-nothing batches, paging, stats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from sqlalchemy.orm import Session

from app.calibration.segments import POOLED_SEGMENT
from app.db import Database, utcnow
from app.errors import ConflictError, PayloadTooLargeError
from app.feedback import repository
from app.feedback.models import Feedback
from app.feedback.schemas import (
    FeedbackBatchResult,
    FeedbackCreate,
    FeedbackPage,
    FeedbackRead,
    FeedbackStats,
    LabelCounts,
    SegmentStats,
)
from app.params import cursor_id, page_of

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical_body_sha256(
    segment: str,
    score: float,
    label: bool,
    source: str | None,
    occurred_json: str,
    metadata_json: str,
) -> str:
    """A fingerprint of everything a client sent except the key, to tell replays from reuse.

    It hashes ``json.dumps([segment, score, label, source, occurred_at, metadata],
    sort_keys=True, separators=(",", ":"))``; stored hashes depend on that exact text. Both
    ingestion paths call this: ``occurred_json`` and ``metadata_json`` are those values already
    encoded that way (``"null"`` when absent). It is assembled piece by piece because the
    encoder's set-up per call dominated a batch: a segment matches ``SEGMENT_PATTERN``, and
    ``repr`` of a float is what the encoder writes. ``batch._fast_rows`` writes the same text
    out in its loop (a call per item was a tenth of it); ``tests/feedback`` compares the two.
    """
    source_json = "null" if source is None else encode_basestring_ascii(source)
    label_json = "true" if label else "false"
    canonical = (
        f'["{segment}",{score!r},{label_json},{source_json},{occurred_json},{metadata_json}]'
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def body_sha256(item: FeedbackCreate) -> str:
    """``canonical_body_sha256`` of a validated record (an ISO timestamp has nothing to escape)."""
    occurred = "null" if item.occurred_at is None else f'"{item.occurred_at.isoformat()}"'
    metadata = "null" if item.metadata is None else _CANONICAL.encode(item.metadata)
    return canonical_body_sha256(
        item.segment, item.score, item.label, item.source, occurred, metadata
    )


def driver_row(item: FeedbackCreate) -> repository.BatchRow:
    """The record as the driver stores it (``repository.BatchRow``), for either path."""
    occurred = item.occurred_at
    return repository.BatchRow(
        item.external_id,
        item.segment,
        item.score,
        item.label,
        item.source,
        None if occurred is None else repository.sqlite_timestamp(occurred),
        None if item.metadata is None else json.dumps(item.metadata),
        None if item.external_id is None else body_sha256(item),
    )


def to_read(record: Feedback | repository.StoredFeedback) -> FeedbackRead:
    return FeedbackRead(
        id=record.id,
        external_id=record.external_id,
        segment=record.segment,
        score=record.score,
        label=record.label,
        source=record.source,
        occurred_at=record.occurred_at,
        received_at=record.received_at,
        metadata=record.metadata_ if isinstance(record, Feedback) else record.metadata,
    )


async def create_feedback(database: Database, *, item: FeedbackCreate) -> tuple[FeedbackRead, bool]:
    """Store one record. Returns it and whether it was new (``False`` for a replay).

    The analyzer's hot path: one statement (``Database.write_one``), which on PostgreSQL also
    reads the stored record when the insert skipped a known ``external_id`` (on SQLite a
    second statement reads it).
    """
    row = driver_row(item)
    now = utcnow()
    stored = await repository.insert_or_find(database, row, now)
    if isinstance(stored, int):
        return FeedbackRead(
            id=stored,
            external_id=item.external_id,
            segment=item.segment,
            score=item.score,
            label=item.label,
            source=item.source,
            occurred_at=item.occurred_at or now,
            received_at=now,
            metadata=item.metadata,
        ), True
    if stored is None or stored.body_sha256 != row.body_sha256:
        raise ConflictError(
            f"external_id '{item.external_id}' is already stored with a different body"
        )
    return to_read(stored), False


def create_feedback_batch(
    session: Session, *, rows: list[repository.BatchRow], max_batch_size: int
) -> FeedbackBatchResult:
    """Store a batch at once; items whose external id is known are skipped and reported.

    ``rows`` come from ``batch.parse_batch``, one per item in the body's order. The first item
    of each external id is offered to the database, which skips the ids it holds already (or
    that a concurrent request stored a moment ago). Only when it skipped some, or an id repeats
    inside the batch, are the bodies compared: an item whose body differs from the one stored
    under its id is a conflict, any other skipped item a duplicate. A batch of new ids (the
    usual case) costs the insert alone.
    """
    if len(rows) > max_batch_size:
        raise PayloadTooLargeError(
            f"batch has {len(rows)} items; at most {max_batch_size} are accepted per request"
        )
    now = utcnow()
    first: dict[str, str | None] = {}  # external id -> body hash of its first item
    offered: list[repository.BatchRow] = []
    for row in rows:
        key = row.external_id
        if key is None:
            offered.append(row)
        elif key not in first:
            first[key] = row.body_sha256
            offered.append(row)

    inserted = repository.insert_many(session, offered, now)
    conflicts: list[int] = []
    if inserted < len(offered) or len(offered) < len(rows):
        # Every first item stored: their bodies are the stored ones. Else ask the database.
        stored = first if inserted == len(offered) else repository.body_hashes(session, first)
        for index, row in enumerate(rows):
            key = row.external_id
            if key is not None and stored.get(key) != row.body_sha256:
                conflicts.append(index)
    return FeedbackBatchResult(
        inserted=inserted, duplicates=len(rows) - inserted - len(conflicts), conflicts=conflicts
    )


def list_feedback(
    session: Session,
    *,
    segment: str | None,
    since: datetime | None,
    limit: int,
    cursor: str | None,
) -> FeedbackPage:
    records = repository.page(
        session, segment=segment, since=since, after_id=cursor_id(cursor), limit=limit + 1
    )
    records, next_cursor = page_of(records, limit)
    return FeedbackPage(items=[to_read(r) for r in records], next_cursor=next_cursor)


def _serving_fields(segment: str, serving: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    own = serving.get(segment)
    if own is None:
        return {"served_by": POOLED_SEGMENT if POOLED_SEGMENT in serving else None}
    return {
        "served_by": segment,
        "pooling_weight": own.get("pooling_weight"),
        "distance_from_pooled": own.get("distance_from_pooled"),
    }


def feedback_stats(
    session: Session,
    *,
    watermarks: Mapping[str, int],
    serving: Mapping[str, Mapping[str, Any]] | None = None,
) -> FeedbackStats:
    """Totals by segment and label; "new" counts records above each segment's ``watermarks``
    (the last feedback id a training run used, which the training domain knows). With
    ``serving`` (the registry's report of active models per segment), also which calibrator
    serves each segment and how much it borrows from the pooled one."""
    segments: dict[str, dict[str, int]] = {}
    for segment, label, count, new in repository.counts_by_segment_and_label(session, watermarks):
        counts = segments.setdefault(segment, {"true": 0, "false": 0, "new": 0})
        counts["true" if label else "false"] += count
        counts["new"] += int(new or 0)
    by_segment = {
        segment: SegmentStats(
            total=counts["true"] + counts["false"],
            by_label=LabelCounts(true=counts["true"], false=counts["false"]),
            new_since_last_training=counts["new"],
            last_training_feedback_id=watermarks.get(segment),
            **(_serving_fields(segment, serving) if serving is not None else {}),
        )
        for segment, counts in sorted(segments.items())
    }
    return FeedbackStats(
        total=sum(s.total for s in by_segment.values()),
        by_label=LabelCounts(
            true=sum(s.by_label.true for s in by_segment.values()),
            false=sum(s.by_label.false for s in by_segment.values()),
        ),
        by_segment=by_segment,
        new_since_last_training=sum(s.new_since_last_training for s in by_segment.values()),
    )


EXPORT_PAGE_SIZE = 5000


def _export_lines(rows: list[tuple[Any, ...]], fmt: str) -> str:
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            record = dict(zip(repository.EXPORT_COLUMNS, row, strict=True))
            writer.writerow(
                [
                    record["id"],
                    record["external_id"] or "",
                    record["segment"],
                    repr(record["score"]),
                    "true" if record["label"] else "false",
                    record["source"] or "",
                    record["occurred_at"].isoformat(),
                    record["received_at"].isoformat(),
                    json.dumps(record["metadata"]) if record["metadata"] is not None else "",
                ]
            )
    else:
        for row in rows:
            record = dict(zip(repository.EXPORT_COLUMNS, row, strict=True))
            record["occurred_at"] = record["occurred_at"].isoformat()
            record["received_at"] = record["received_at"].isoformat()
            record["label"] = bool(record["label"])
            out.write(json.dumps(record) + "\n")
    return out.getvalue()


def export_feedback(
    database: Database, *, fmt: str, segment: str | None, since: datetime | None
) -> Iterator[str]:
    """Every matching record as CSV or NDJSON text, read in keyset pages.

    Each page is its own short read transaction, so memory stays bounded and no long
    transaction holds back writers. The first page is read before this returns, so an
    unreachable database is reported (503) before any byte is streamed.
    """

    def fetch(after_id: int) -> list[tuple[Any, ...]]:
        with database.session_scope(write=False) as session:
            return repository.export_page(
                session, segment=segment, since=since, after_id=after_id, limit=EXPORT_PAGE_SIZE
            )

    first = fetch(0)

    def stream() -> Iterator[str]:
        if fmt == "csv":
            yield ",".join(repository.EXPORT_COLUMNS) + "\n"
        rows = first
        while rows:
            yield _export_lines(rows, fmt)
            if len(rows) < EXPORT_PAGE_SIZE:
                return
            rows = fetch(rows[-1][0])

    return stream()
