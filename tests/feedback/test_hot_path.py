"""The single-record hot path: replays read back from the driver, waiting for another writer on
SQLite, and dropped PostgreSQL connections."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db import Database
from app.feedback.models import Feedback


def _stored_ids(database_url: str) -> list[tuple[int, str | None]]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(Feedback.id, Feedback.external_id).order_by(Feedback.id))
        found = [(row.id, row.external_id) for row in rows]
    engine.dispose()
    return found


def test_replay_of_a_full_record_answers_what_was_stored(client: TestClient) -> None:
    body = {
        "score": 0.123456789,
        "label": False,
        "segment": "invoices",
        "external_id": "full-1",
        "source": "analyzer-9",
        "occurred_at": "2026-03-04T05:06:07.891011-03:30",
        "metadata": {"rule": "Ü-7", "pages": [1, 2], "nested": {"ok": True}},
    }
    first = client.post("/v1/feedback", json=body)
    replay = client.post("/v1/feedback", json=body)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json() == first.json()
    assert first.json()["occurred_at"] == "2026-03-04T08:36:07.891011Z"
    # The listing reads through the ORM: the same record, field for field.
    [listed] = client.get("/v1/feedback").json()["items"]
    assert listed == first.json()


def test_replay_of_a_record_stored_by_a_batch_answers_200(client: TestClient) -> None:
    item = {"score": 0.5, "label": True, "external_id": "from-batch", "metadata": {"a": 1}}
    assert client.post("/v1/feedback/batch", json={"items": [item]}).status_code == 201
    replay = client.post("/v1/feedback", json=item)
    assert replay.status_code == 200
    assert replay.json() == client.get("/v1/feedback").json()["items"][0]
    conflict = client.post("/v1/feedback", json={**item, "metadata": {"a": 2}})
    assert conflict.status_code == 409


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_post_waits_for_another_writer_then_is_stored(
    client: TestClient, clean_database: str
) -> None:
    path = clean_database.removeprefix("sqlite:///")
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO feedback (external_id, segment, score, label, occurred_at, received_at)"
            " VALUES ('holder', 'default', 0.5, 1, '2026-01-01 00:00:00.000000',"
            " '2026-01-01 00:00:00.000000')"
        )
        locked.set()
        release.wait(10)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert locked.wait(10)
    # The post cannot commit while the lock is held: it retries between event-loop steps.
    threading.Timer(0.3, release.set).start()
    response = client.post("/v1/feedback", json={"score": 0.25, "label": True, "external_id": "w"})
    holder.join(10)
    assert response.status_code == 201
    assert _stored_ids(clean_database) == [(1, "holder"), (2, "w")]
    assert response.json()["id"] == 2
    # And the next post takes the event loop's connection again.
    assert client.post("/v1/feedback", json={"score": 0.5, "label": True}).status_code == 201


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_connections_ended_by_the_server_answer_503_then_recover(
    client: TestClient, clean_database: str
) -> None:
    assert client.post("/v1/feedback", json={"score": 0.5, "label": True}).status_code == 201
    artifact = {"If-None-Match": '"x"'}
    # The serving path reads on connections of its own: no model yet, 404.
    assert client.get("/v1/models/active/artifact", headers=artifact).status_code == 404
    dsn = clean_database.replace("postgresql+psycopg://", "postgresql://", 1)
    database = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchone()[0]
    assert ended >= 1

    failed = client.post("/v1/feedback", json={"score": 0.5, "label": True, "external_id": "x"})
    assert failed.status_code == 503
    assert failed.headers["Retry-After"].isdigit()
    retried = client.post("/v1/feedback", json={"score": 0.5, "label": True, "external_id": "x"})
    assert retried.status_code == 201
    reads = [client.get("/v1/models/active/artifact", headers=artifact) for _ in range(2)]
    assert [read.status_code for read in reads] == [503, 404]
    assert _stored_ids(clean_database) == [(1, None), (retried.json()["id"], "x")]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_hot_path_rows_hold_what_psycopg_reads(clean_database: str) -> None:
    """The hot path sends parameters as text and reads results with psycopg's loaders on
    connections it drives itself: a statement gives the same Python values there as through
    a plain psycopg cursor, and a statement that fails answers its own error without
    spoiling the connection."""
    statement = (
        "SELECT ?::text, ?::float8, ?::bigint, ?::boolean, ?::text IS NULL,"
        " ?::timestamptz, '{\"a\": [1, null, \"\\u00dc\"]}'::json, 'NaN'::float8,"
        " '-Infinity'::float8, 1.5::numeric, NULL::int"
    )
    parameters = [
        'it\'s "Ü" ? ',
        0.1234567890123456789,
        2**62,
        False,
        None,
        "2026-03-04 05:06:07.891011-03:30",
    ]
    dsn = clean_database.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as plain:
        expected = plain.execute(statement.replace("?", "%s"), parameters).fetchall()

    async def run() -> tuple[list, Exception, list]:
        database = Database(Settings(database_url=clean_database, env="test"))
        try:
            written = await database.write_one(statement, parameters)
            read = await database.read_one(statement, parameters)
            assert _comparable(written) == _comparable(read)
            with pytest.raises(DBAPIError) as refused:
                await database.read_one("SELECT no_such_column FROM feedback", [])
            again = await database.read_one(statement, parameters)
        finally:
            await database.close_writer()
            database.dispose()
        return read, refused.value, again

    read, refused, again = asyncio.run(run())
    assert _comparable(read) == _comparable(expected)
    assert [type(value) for value in read[0]] == [type(value) for value in expected[0]]
    assert isinstance(refused.orig, psycopg.errors.UndefinedColumn)
    assert _comparable(again) == _comparable(expected)


def _comparable(rows: list[tuple]) -> list[tuple]:
    """NaN as text (NaN != NaN); timestamps in UTC (the hot path's sessions are in UTC, a plain
    connection in the server's zone: the same instant, another tzinfo)."""
    return [
        tuple(
            value.astimezone(UTC)
            if isinstance(value, datetime)
            else "nan"
            if isinstance(value, float) and math.isnan(value)
            else value
            for value in row
        )
        for row in rows
    ]
