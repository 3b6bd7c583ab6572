"""Single posts that arrive together: on PostgreSQL they are committed in one transaction (group
commit), on SQLite one after the other. Either way each post must get what it would have got
alone, in its order of arrival: 201, a 200 replay, a 409 conflict or its own error, and exactly
the acknowledged records are stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, text

from app import db
from app.config import Settings
from app.db import Database
from app.devserver import serve_in_thread
from app.errors import ConflictError
from app.feedback import service
from app.feedback.schemas import FeedbackCreate, FeedbackRead
from app.main import create_app

# Records whose segment is "poison" are refused by a trigger: a real error of the database,
# raised by one statement of a group and by no other.
_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON feedback WHEN NEW.segment = 'poison'"
        " BEGIN SELECT RAISE(ABORT, 'poisoned record'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.segment = 'poison' THEN RAISE EXCEPTION 'poisoned record'; END IF;"
        " RETURN NEW; END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON feedback"
        " FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ],
}
_DROP = {
    "sqlite": ["DROP TRIGGER IF EXISTS refuse_poison"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS refuse_poison ON feedback",
        "DROP FUNCTION IF EXISTS refuse_poison()",
    ],
}


@pytest.fixture
def poison_trigger(clean_database: str) -> Iterator[None]:
    engine = create_engine(clean_database)
    dialect = engine.dialect.name
    with engine.begin() as connection:
        for statement in _TRIGGERS[dialect]:
            connection.execute(text(statement))
    try:
        yield
    finally:
        with engine.begin() as connection:
            for statement in _DROP[dialect]:
                connection.execute(text(statement))
        engine.dispose()


def _stored(database_url: str) -> dict[int, dict[str, Any]]:
    """Every stored record by id, as the listing would show it."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, external_id, segment, score, label, metadata FROM feedback")
        ).all()
    engine.dispose()
    return {
        row.id: {
            "external_id": row.external_id,
            "segment": row.segment,
            "score": row.score,
            "label": bool(row.label),
            "metadata": json.loads(row.metadata) if isinstance(row.metadata, str) else row.metadata,
        }
        for row in rows
    }


def _expected(posts: list[dict[str, Any]], known: dict[str, dict[str, Any]]) -> list[str]:
    """What each post gets when the posts run one after the other in this order."""
    stored = dict(known)
    outcomes = []
    for post in posts:
        key = post.get("external_id")
        if post.get("segment") == "poison":
            outcomes.append("error")
        elif key is None or key not in stored:
            if key is not None:
                stored[key] = post
            outcomes.append("created")
        else:
            outcomes.append("replay" if stored[key] == post else "conflict")
    return outcomes


def _posts() -> list[dict[str, Any]]:
    """New ids, a key posted five times alike, a key posted with two bodies in turn, a key
    stored before (posted alike and not), records without a key, and poisoned records."""
    posts: list[dict[str, Any]] = []
    for n in range(40):
        kind = n % 8
        if kind == 0:
            posts.append({"score": 0.25, "label": True, "external_id": "same"})
        elif kind == 1:
            body = {"score": 0.5 if n % 16 == 1 else 0.75, "label": False}
            posts.append({**body, "external_id": "two-bodies"})
        elif kind == 2:
            posts.append({"score": 0.125, "label": True, "external_id": "before"})
        elif kind == 3:
            posts.append({"score": 0.875, "label": True, "external_id": "before"})
        elif kind == 4:
            posts.append({"score": n / 100, "label": n % 3 == 0})
        elif kind == 5:
            posts.append({"score": 0.5, "label": True, "segment": "poison", "external_id": f"p{n}"})
        else:
            posts.append(
                {"score": n / 100, "label": True, "external_id": f"new-{n}", "metadata": {"n": n}}
            )
    return posts


_BEFORE = {"score": 0.125, "label": True, "external_id": "before"}


def test_posts_of_one_group_get_what_they_would_get_one_after_the_other(
    settings: Settings, poison_trigger: None
) -> None:
    posts = _posts()

    async def post(database: Database, body: dict[str, Any]) -> tuple[str, FeedbackRead | None]:
        try:
            record, created = await service.create_feedback(
                database, item=FeedbackCreate.model_validate(body)
            )
        except ConflictError:
            return "conflict", None
        except Exception:  # the database's refusal of this record
            return "error", None
        return ("created" if created else "replay"), record

    async def run() -> tuple[FeedbackRead, list[tuple[str, FeedbackRead | None]]]:
        database = Database(settings)
        try:
            before, _ = await service.create_feedback(
                database, item=FeedbackCreate.model_validate(_BEFORE)
            )
            # Started together: on PostgreSQL the first committer takes all of them at once.
            results = await asyncio.gather(*(post(database, body) for body in posts))
        finally:
            await database.close_writer()
            database.dispose()
        return before, results

    before, results = asyncio.run(run())
    assert [outcome for outcome, _ in results] == _expected(posts, {"before": _BEFORE})

    stored = _stored(settings.database_url)
    created = {record.id: record for outcome, record in results if outcome == "created"}
    # Exactly the acknowledged records are stored, each as its answer says.
    assert set(stored) == set(created) | {before.id}
    for record_id, record in created.items():
        assert stored[record_id] == {
            "external_id": record.external_id,
            "segment": record.segment,
            "score": record.score,
            "label": record.label,
            "metadata": record.metadata,
        }
    # A replay answers the stored record: the first post of its key, here or before.
    first_of = {"before": before}
    for outcome, record in results:
        if outcome == "created" and record.external_id is not None:
            first_of[record.external_id] = record
    for outcome, record in results:
        if outcome == "replay":
            assert record == first_of[record.external_id]


def test_concurrent_http_posts_answer_each_its_status(
    live_server: str, clean_database: str, poison_trigger: None
) -> None:
    posts = [*_posts(), {"score": 1.5, "label": True, "external_id": "bad-score"}]

    async def run() -> list[httpx.Response]:
        # A connection of its own per post: the server closes one after a 500.
        limits = httpx.Limits(max_connections=len(posts), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=live_server, limits=limits, timeout=30) as client:
            assert (await client.post("/v1/feedback", json=_BEFORE)).status_code == 201
            return await asyncio.gather(*(client.post("/v1/feedback", json=p) for p in posts))

    responses = asyncio.run(run())
    statuses = [response.status_code for response in responses]
    assert statuses[-1] == 422
    assert responses[-1].json()["detail"][0]["loc"] == ["body", "score"]
    for body, status in zip(posts[:-1], statuses[:-1], strict=True):
        key = body.get("external_id")
        if body.get("segment") == "poison":
            assert status == 500
        elif key in ("same", "two-bodies"):
            # Which one is first depends on the order of arrival over HTTP.
            assert status in (200, 201, 409)
        elif key == "before":
            assert status == (200 if body == _BEFORE else 409)
        else:
            assert status == 201
    stored = _stored(clean_database)
    acknowledged = {r.json()["id"] for r in responses if r.status_code == 201}
    assert set(stored) == acknowledged | {min(stored)}  # and the record stored before
    # One record per key; each post of a key answers as its body compares with the stored one.
    keys = [record["external_id"] for record in stored.values() if record["external_id"]]
    assert sorted(keys) == sorted(set(keys))
    by_key = {record["external_id"]: (i, record) for i, record in stored.items()}
    for key in ("same", "two-bodies"):
        stored_id, record = by_key[key]
        answers = [
            (body, response)
            for body, response in zip(posts, responses, strict=True)
            if body.get("external_id") == key
        ]
        assert [response.status_code for _, response in answers].count(201) == 1
        for body, response in answers:
            if body["score"] == record["score"]:
                assert response.status_code in (200, 201)
                assert response.json()["id"] == stored_id
            else:
                assert response.status_code == 409


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_unreachable_postgres_answers_503_to_every_waiting_request(
    clean_database: str, dropping_listener: Any
) -> None:
    port = dropping_listener.url.rsplit(":", 1)[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/nowhere"
    settings = Settings(database_url=url, env="test", scheduler_enabled=False)

    with serve_in_thread(create_app(settings)) as base_url:

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                posts = [
                    client.post("/v1/feedback", json={"score": 0.5, "label": True})
                    for _ in range(20)
                ]
                # The serving path reads on connections of its own: the same answer.
                reads = [
                    client.get("/v1/models/active/artifact", headers={"If-None-Match": '"x"'}),
                    client.post("/v1/calibrate", json={"scores": [0.5]}),
                ]
                return await asyncio.gather(*posts, *reads)

        responses = asyncio.run(run())
    assert [response.status_code for response in responses] == [503] * 22
    assert all(response.headers["Retry-After"].isdigit() for response in responses)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_post_waits_a_bounded_time_and_one_never_sent_is_never_stored(
    live_server: str, clean_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a lock holds the hot path's transactions, posts answer 503 after the wait limit.
    Those already sent commit once the lock goes (a timeout leaves the outcome unknown, so a
    retry with the same external_id answers 200); those still queued are never sent."""
    monkeypatch.setattr(db, "POOL_TIMEOUT_SECONDS", 1)
    body = {"score": 0.5, "label": True}

    async def run() -> list[list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
            assert (await client.post("/v1/feedback", json={**body, "external_id": "a"})).is_success
            with psycopg.connect(clean_database.replace("+psycopg", "")) as locker:
                locker.execute("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")
                waves: list[list[Any]] = []
                for wave, size in enumerate([1, 1, 3]):  # two groups in flight, then a queue
                    waves.append(
                        [
                            asyncio.ensure_future(
                                client.post(
                                    "/v1/feedback", json={**body, "external_id": f"w{wave}-{n}"}
                                )
                            )
                            for n in range(size)
                        ]
                    )
                    await asyncio.sleep(0.2)
                answered = [await asyncio.gather(*wave) for wave in waves]
                locker.rollback()
            retry = await client.post("/v1/feedback", json={**body, "external_id": "w0-0"})
            return [*answered, [retry]]

    *waves, [retry] = asyncio.run(run())
    assert [[r.status_code for r in wave] for wave in waves] == [[503], [503], [503] * 3]
    assert retry.status_code == 200
    keys = {record["external_id"] for record in _stored(clean_database).values()}
    assert keys == {"a", "w0-0", "w1-0"}
