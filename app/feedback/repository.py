"""All SQL touching the feedback table: writes, pages, counts, and reads into numpy arrays."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, Row, String, any_, bindparam, case, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db import HotPath
from app.feedback.models import Feedback

feedback_table = Feedback.__table__
_ARRAY_DTYPE = np.dtype([("score", np.float64), ("label", np.bool_)])


class BatchRow(NamedTuple):
    """A batch item ready for the driver, its fields in the insert's column order."""

    external_id: str | None
    segment: str
    score: float
    label: bool
    source: str | None
    occurred_at: str | None  # ``sqlite_timestamp`` text; None: the received time
    metadata: str | None  # the text ``json.dumps`` writes
    body_sha256: str | None  # None without an external_id


def insert_many(session: Session, rows: Sequence[BatchRow], received_at: datetime) -> int:
    """Insert records in one transaction, skipping those whose ``external_id`` is stored.

    Returns how many were inserted. The rows go straight to the driver (a 10,000-record batch
    through SQLAlchemy's per-row parameter processing costs several times the insert itself):
    ``executemany`` of tuples on SQLite; on PostgreSQL ``COPY`` straight into the table, or,
    when that meets a stored ``external_id``, into a staging table that is then inserted with
    ``ON CONFLICT DO NOTHING``.
    """
    if not rows:
        return 0
    connection = session.connection()
    received = sqlite_timestamp(received_at)
    if connection.dialect.name == "postgresql":
        return _copy_skipping_known_ids(connection, rows, received)
    return _executemany_skipping_known_ids(connection, rows, received)


# The tuples below follow this column order.
_SQLITE_INSERT = (
    "INSERT INTO feedback (external_id, segment, score, label, source, occurred_at, received_at,"
    " metadata, body_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (external_id) DO NOTHING"
)
# Per connection, emptied at every commit; ``ord`` keeps the ids in the batch's order.
_PG_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS feedback_incoming ("
    "ord integer, external_id varchar(128), segment varchar(64), score double precision,"
    " label boolean, source varchar(128), occurred_at timestamptz, received_at timestamptz,"
    " metadata json, body_sha256 varchar(64)) ON COMMIT DELETE ROWS"
)
_PG_COPY = (
    "COPY feedback_incoming (ord, external_id, segment, score, label, source, occurred_at,"
    " received_at, metadata, body_sha256) FROM STDIN"
)
_PG_COPY_DIRECT = (
    "COPY feedback (external_id, segment, score, label, source, occurred_at, received_at,"
    " metadata, body_sha256) FROM STDIN"
)
_PG_INSERT = (
    "INSERT INTO feedback (external_id, segment, score, label, source, occurred_at, received_at,"
    " metadata, body_sha256)"
    " SELECT external_id, segment, score, label, source, occurred_at, received_at, metadata,"
    " body_sha256 FROM feedback_incoming ORDER BY ord"
    " ON CONFLICT (external_id) DO NOTHING"
)


_INSERT_ONE = _SQLITE_INSERT + " RETURNING id"
_FIND = (
    "SELECT id, external_id, segment, score, label, source, occurred_at, received_at, metadata,"
    " body_sha256 FROM feedback WHERE external_id = ?"
)
# On PostgreSQL the read of a skipped external_id rides in the insert's statement: a replay
# costs no second statement. Its snapshot predates the insert, so a record another transaction
# committed while this one waited on its key is not in it; that case reads again (_FIND).
_PG_INSERT_OR_FIND = (
    "WITH inserted AS (INSERT INTO feedback (external_id, segment, score, label, source,"
    " occurred_at, received_at, metadata, body_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (external_id) DO NOTHING RETURNING id)"
    " SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM inserted"
    " UNION ALL SELECT id, external_id, segment, score, label, source, occurred_at,"
    " received_at, metadata, body_sha256 FROM feedback"
    " WHERE external_id = ? AND NOT EXISTS (SELECT FROM inserted)"
)


class StoredFeedback(NamedTuple):
    """A stored record as the driver reads it, with Python types on both backends."""

    id: int
    external_id: str | None
    segment: str
    score: float
    label: bool
    source: str | None
    occurred_at: datetime
    received_at: datetime
    metadata: dict[str, Any] | None
    body_sha256: str | None


# The hot path (Database.write_one): straight to the driver, as insert_many.


async def insert_or_find(
    hot_path: HotPath, row: BatchRow, received_at: datetime
) -> int | StoredFeedback | None:
    """Insert one record: its new id, or when its ``external_id`` is stored already, the stored
    record (``None`` if it vanished since)."""
    external_id, segment, score, label, source, occurred, meta, digest = row
    received = sqlite_timestamp(received_at)
    postgres = hot_path.dialect == "postgresql"
    if postgres:
        received += "+00"  # the SQLite text is naive UTC
        occurred = None if occurred is None else occurred + "+00"
    parameters = [
        external_id,
        segment,
        score,
        label,
        source,
        occurred or received,
        received,
        meta,
        digest,
    ]
    if postgres:
        found = await hot_path.write_one(_PG_INSERT_OR_FIND, [*parameters, external_id])
        if found and found[0][1] is not None:
            return _stored(found[0], postgres=True)
    else:
        found = await hot_path.write_one(_INSERT_ONE, parameters)
    if found:
        return found[0][0]
    if external_id is None:
        return None
    found = await hot_path.write_one(_FIND, [external_id])
    return _stored(found[0], postgres=postgres) if found else None


def _stored(found: tuple[Any, ...], *, postgres: bool) -> StoredFeedback:
    id_, key, segment, score, label, source, occurred, received, meta, digest = found
    if postgres:
        occurred, received = occurred.astimezone(UTC), received.astimezone(UTC)
    else:
        # SQLite holds naive UTC text, 0/1 and JSON text (see UTCDateTime, sqlite_timestamp).
        occurred = datetime.fromisoformat(occurred).replace(tzinfo=UTC)
        received = datetime.fromisoformat(received).replace(tzinfo=UTC)
        meta = None if meta is None else json.loads(meta)
    return StoredFeedback(
        id_, key, segment, score, bool(label), source, occurred, received, meta, digest
    )


def sqlite_timestamp(value: datetime) -> str:
    """The text SQLAlchemy stores for a ``UTCDateTime`` on SQLite (naive UTC, microseconds)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def _executemany_skipping_known_ids(
    connection: Connection, rows: Sequence[BatchRow], received: str
) -> int:
    parameters = [
        (external_id, segment, score, label, source, occurred or received, received, meta, digest)
        for external_id, segment, score, label, source, occurred, meta, digest in rows
    ]
    # Straight to the driver: SQLAlchemy's exec_driver_sql copies every parameter tuple first,
    # a quarter of the insert's own time (10k rows: 46 ms against 35 ms, measured).
    driver_connection = connection.connection.driver_connection
    try:
        return driver_connection.executemany(_SQLITE_INSERT, parameters).rowcount
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, _SQLITE_INSERT, exc) from exc


def _driver_error(connection: Connection, statement: str, exc: Exception) -> DBAPIError:
    """SQLAlchemy's exception for an error the driver raised outside SQLAlchemy, so the error
    handlers know it (503 when the database is unreachable)."""
    closed = getattr(connection.connection.driver_connection, "closed", False)
    return DBAPIError.instance(
        statement,
        None,
        exc,
        connection.dialect.loaded_dbapi.Error,
        connection_invalidated=bool(closed),
    )


def _copy_skipping_known_ids(
    connection: Connection, rows: Sequence[BatchRow], received: str
) -> int:
    """COPY the rows into the table; if one's ``external_id`` is stored already, undo that and
    go through the staging table instead.

    A batch of new ids (the usual case) costs one COPY: 1.7x the staging path's rate (100k
    records in batches of 10k, measured). The ids of a batch are distinct (the service offers
    the first item of each), so the COPY can only fail on an id stored before or by a
    concurrent batch. It stops at that row, so a replayed batch wastes little; a batch whose
    only known id is its last wastes one COPY.
    """
    driver_connection = connection.connection.driver_connection
    received += "+00"  # the SQLite text is naive UTC

    connection.exec_driver_sql("SAVEPOINT feedback_copy")
    try:
        _copy(driver_connection, _PG_COPY_DIRECT, rows, received, numbered=False)
    except UniqueViolation:
        connection.exec_driver_sql("ROLLBACK TO SAVEPOINT feedback_copy")
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, _PG_COPY_DIRECT, exc) from exc
    else:
        connection.exec_driver_sql("RELEASE SAVEPOINT feedback_copy")
        return len(rows)

    connection.exec_driver_sql(_PG_STAGING)
    try:
        _copy(driver_connection, _PG_COPY, rows, received, numbered=True)
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, _PG_COPY, exc) from exc
    return connection.exec_driver_sql(_PG_INSERT).rowcount


def _copy(
    driver_connection: Any,
    statement: str,
    rows: Sequence[BatchRow],
    received: str,
    *,
    numbered: bool,
) -> None:
    """Write the rows through ``COPY ... FROM STDIN``, led by their index when ``numbered``."""
    with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        write_row = copy.write_row
        for index, (
            external_id,
            segment,
            score,
            label,
            source,
            occurred,
            meta,
            digest,
        ) in enumerate(rows):
            row = (
                external_id,
                segment,
                score,
                label,
                source,
                received if occurred is None else occurred + "+00",
                received,
                meta,
                digest,
            )
            write_row((index, *row) if numbered else row)


def get(session: Session, feedback_id: int) -> Feedback | None:
    return session.get(Feedback, feedback_id)


def body_hashes(session: Session, external_ids: Iterable[str]) -> dict[str, str | None]:
    """The stored body hash of each given ``external_id`` that exists."""
    wanted = list(external_ids)
    if not wanted:
        return {}
    # One parameter for the whole list: thousands of placeholders cost more to parse than to run.
    if session.get_bind().dialect.name == "postgresql":
        ids = bindparam("ids", wanted, type_=postgresql.ARRAY(String()))
        condition = feedback_table.c.external_id == any_(ids)
    else:
        given = func.json_each(json.dumps(wanted)).table_valued("value")
        condition = feedback_table.c.external_id.in_(select(given.c.value))
    statement = select(feedback_table.c.external_id, feedback_table.c.body_sha256).where(condition)
    return {key: digest for key, digest in session.execute(statement)}


def page(
    session: Session,
    *,
    segment: str | None,
    since: datetime | None,
    after_id: int | None,
    limit: int,
) -> list[Feedback]:
    """Records in id order after ``after_id``: a stable order that new records only extend."""
    statement = select(Feedback).order_by(Feedback.id).limit(limit)
    if segment is not None:
        statement = statement.where(Feedback.segment == segment)
    if since is not None:
        statement = statement.where(Feedback.received_at >= since)
    if after_id is not None:
        statement = statement.where(Feedback.id > after_id)
    return list(session.scalars(statement))


def counts_by_segment_and_label(
    session: Session, watermarks: Mapping[str, int]
) -> Sequence[Row[tuple[str, bool, int, int]]]:
    """(segment, label, count, count above the segment's watermark) for every stored pair."""
    watermark = (
        case(
            *((feedback_table.c.segment == seg, last_id) for seg, last_id in watermarks.items()),
            else_=0,
        )
        if watermarks
        else 0
    )
    new_rows = func.sum(case((feedback_table.c.id > watermark, 1), else_=0))
    statement = select(
        feedback_table.c.segment,
        feedback_table.c.label,
        func.count(),
        new_rows,
    ).group_by(feedback_table.c.segment, feedback_table.c.label)
    return session.execute(statement).all()


EXPORT_COLUMNS = (
    "id",
    "external_id",
    "segment",
    "score",
    "label",
    "source",
    "occurred_at",
    "received_at",
    "metadata",
)


def export_page(
    session: Session,
    *,
    segment: str | None,
    since: datetime | None,
    after_id: int,
    limit: int,
) -> list[tuple[Any, ...]]:
    """One keyset page of export rows (``EXPORT_COLUMNS`` order) after ``after_id``."""
    statement = (
        select(*(feedback_table.c[name] for name in EXPORT_COLUMNS))
        .where(feedback_table.c.id > after_id)
        .order_by(feedback_table.c.id)
        .limit(limit)
    )
    if segment is not None:
        statement = statement.where(feedback_table.c.segment == segment)
    if since is not None:
        statement = statement.where(feedback_table.c.received_at >= since)
    return [tuple(row) for row in session.execute(statement)]


def max_id(session: Session, segment: str | None) -> int | None:
    """The newest feedback id of a segment (``None``: of all segments)."""
    statement = select(func.max(feedback_table.c.id))
    if segment is not None:
        statement = statement.where(feedback_table.c.segment == segment)
    return session.execute(statement).scalar_one()


def count_between(session: Session, segment: str | None, after_id: int, up_to_id: int) -> int:
    """Records with ids in (after_id, up_to_id] of a segment (``None``: of all segments)."""
    statement = select(func.count()).where(
        feedback_table.c.id > after_id, feedback_table.c.id <= up_to_id
    )
    if segment is not None:
        statement = statement.where(feedback_table.c.segment == segment)
    return session.execute(statement).scalar_one()


def segments_up_to(session: Session, up_to_id: int) -> list[str]:
    """The segments holding feedback with ids up to ``up_to_id``."""
    statement = (
        select(feedback_table.c.segment)
        .where(feedback_table.c.id <= up_to_id)
        .group_by(feedback_table.c.segment)
        .order_by(feedback_table.c.segment)
    )
    return list(session.scalars(statement))


# A binary COPY row of (float8 NOT NULL, bool NOT NULL): the field count, then each field's
# length and big-endian value: 2 + (4 + 8) + (4 + 1) = 19 bytes, parsed by numpy in one go
# (psycopg's per-row parsing costs about 2x more).
_PG_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("score_len", ">i4"),
        ("score", ">f8"),
        ("label_len", ">i4"),
        ("label", "u1"),
    ]
)
_PG_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def _pg_binary_rows(buffer: bytearray) -> np.ndarray:
    """The rows of a PostgreSQL binary COPY of (score, label), checked field by field."""
    if buffer[:11] != _PG_SIGNATURE:
        raise ValueError("not a PostgreSQL binary COPY stream")
    start = 19 + int.from_bytes(buffer[15:19], "big")  # header, then its extension area
    end = len(buffer) - 2  # the trailer: a field count of -1
    if buffer[end:] != b"\xff\xff" or (end - start) % _PG_ROW.itemsize:
        raise ValueError("unexpected PostgreSQL binary COPY layout")
    rows = np.frombuffer(memoryview(buffer)[start:end], dtype=_PG_ROW)
    layout_ok = (
        (rows["fields"] == 2).all()
        and (rows["score_len"] == 8).all()
        and (rows["label_len"] == 1).all()
    )
    if not layout_ok:
        raise ValueError("unexpected PostgreSQL binary COPY row layout")
    return rows


def score_label_arrays(
    session: Session, segment: str, up_to_id: int, after_id: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scores and labels of a segment with ``after_id < id <= up_to_id``, straight to numpy.

    SQLAlchemy Row objects cost ~20x more than the driver's tuples, so rows go from the DBAPI
    cursor into one structured array (on PostgreSQL, a binary COPY parsed by numpy).
    """
    connection = session.connection()
    dbapi = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        query = (
            "COPY (SELECT score, label FROM feedback WHERE segment = %s AND id > %s AND id <= %s"
            " ORDER BY id) TO STDOUT (FORMAT BINARY)"
        )
        params = (segment, after_id, up_to_id)
        with dbapi.cursor() as cursor, cursor.copy(query, params) as copy:
            buffer = bytearray()
            for block in copy:
                buffer += block
        rows = _pg_binary_rows(buffer)
        return rows["score"].astype(np.float64), rows["label"].astype(np.float64)
    else:
        cursor = dbapi.cursor()
        try:
            cursor.execute(
                "SELECT score, label FROM feedback"
                " WHERE segment = ? AND id > ? AND id <= ? ORDER BY id",
                (segment, after_id, up_to_id),
            )
            rows = np.fromiter(cursor, dtype=_ARRAY_DTYPE)
        finally:
            cursor.close()
    return np.ascontiguousarray(rows["score"]), rows["label"].astype(np.float64)


def recent_scores_labels(
    session: Session, *, segment: str | None, after_id: int, limit: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scores and labels of the newest ``limit`` records of a segment (``None``: of all
    segments) after ``after_id``."""
    statement = select(feedback_table.c.score, feedback_table.c.label).where(
        feedback_table.c.id > after_id
    )
    if segment is not None:
        statement = statement.where(feedback_table.c.segment == segment)
    statement = statement.order_by(feedback_table.c.id.desc()).limit(limit)
    rows = [(score, float(label)) for score, label in session.execute(statement)]
    array = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return array[:, 0].copy(), array[:, 1].copy()


def oldest_after(
    session: Session, *, segment: str, after_id: int, limit: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Ids, scores and labels of the oldest ``limit`` records of a segment after ``after_id``."""
    statement = (
        select(feedback_table.c.id, feedback_table.c.score, feedback_table.c.label)
        .where(feedback_table.c.segment == segment, feedback_table.c.id > after_id)
        .order_by(feedback_table.c.id)
        .limit(limit)
    )
    rows = session.execute(statement).all()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    scores = np.fromiter((row[1] for row in rows), dtype=np.float64, count=len(rows))
    labels = np.fromiter((row[2] for row in rows), dtype=np.float64, count=len(rows))
    return ids, scores, labels


def counts_after(session: Session, after_id: int) -> list[tuple[str, bool, int, int]]:
    """(segment, label, count, max id) of records after ``after_id``: an index range scan."""
    statement = (
        select(
            feedback_table.c.segment,
            feedback_table.c.label,
            func.count(),
            func.max(feedback_table.c.id),
        )
        .where(feedback_table.c.id > after_id)
        .group_by(feedback_table.c.segment, feedback_table.c.label)
    )
    return [(segment, bool(label), n, top) for segment, label, n, top in session.execute(statement)]
