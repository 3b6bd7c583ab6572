"""The feedback API over HTTP, on SQLite and PostgreSQL: what a client sees and what is stored."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.dialects import sqlite

from app.config import Settings
from app.db import UTCDateTime
from app.feedback.models import Feedback
from app.feedback.repository import sqlite_timestamp
from app.feedback.schemas import FeedbackCreate
from app.feedback.service import body_sha256
from app.main import create_app


def stored(database_url: str) -> list[Feedback]:
    engine = create_engine(database_url)
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        rows = list(session.scalars(select(Feedback).order_by(Feedback.id)))
    engine.dispose()
    return rows


def count(database_url: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(Feedback)).scalar_one()
    engine.dispose()
    return total


def post_raw(client: TestClient, path: str, body: str):
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


def test_single_record_is_stored_and_returned(client: TestClient, clean_database: str) -> None:
    body = {
        "score": 0.8125,
        "label": True,
        "segment": "contracts",
        "external_id": "finding-1",
        "source": "analyzer-2.3",
        "occurred_at": "2026-11-20T10:00:00+02:00",
        "metadata": {"rule": "R12", "page": 3},
    }
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 201
    record = response.json()
    assert record["id"] > 0
    assert record["score"] == 0.8125 and record["label"] is True
    assert record["occurred_at"] == "2026-11-20T08:00:00Z"
    assert record["metadata"] == {"rule": "R12", "page": 3}

    [row] = stored(clean_database)
    assert (row.id, row.segment, row.score, row.label) == (record["id"], "contracts", 0.8125, True)
    assert row.external_id == "finding-1" and row.source == "analyzer-2.3"
    assert row.occurred_at.isoformat() == "2026-11-20T08:00:00+00:00"


def test_replay_answers_200_and_conflict_answers_409(
    client: TestClient, clean_database: str
) -> None:
    body = {"score": 0.4, "label": False, "external_id": "abc"}
    first = client.post("/v1/feedback", json=body)
    replay = client.post("/v1/feedback", json=body)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json() == first.json()

    conflict = client.post("/v1/feedback", json={**body, "label": True})
    assert conflict.status_code == 409
    assert "abc" in conflict.json()["detail"]
    assert count(clean_database) == 1


def test_records_without_external_id_are_all_stored(
    client: TestClient, clean_database: str
) -> None:
    for _ in range(3):
        assert client.post("/v1/feedback", json={"score": 0.5, "label": True}).status_code == 201
    assert count(clean_database) == 3


BAD_INPUTS = [
    ('{"score": NaN, "label": true}', "score"),
    ('{"score": Infinity, "label": true}', "score"),
    ('{"score": -Infinity, "label": true}', "score"),
    ('{"score": "0.5", "label": true}', "score"),
    ('{"score": 1.0000001, "label": true}', "score"),
    ('{"score": -0.1, "label": true}', "score"),
    ('{"score": true, "label": true}', "score"),
    ('{"label": true}', "score"),
    ('{"score": 0.5, "label": "yes"}', "label"),
    ('{"score": 0.5, "label": 1}', "label"),
    ('{"score": 0.5, "label": null}', "label"),
    ('{"score": 0.5, "label": true, "segment": "has space"}', "segment"),
    ('{"score": 0.5, "label": true, "segment": "active"}', "segment"),
    ('{"score": 0.5, "label": true, "segment": ""}', "segment"),
    ('{"score": 0.5, "label": true, "external_id": ""}', "external_id"),
    ('{"score": 0.5, "label": true, "source": "a\\u0000b"}', "source"),
    ('{"score": 0.5, "label": true, "occurred_at": 1700000000}', "occurred_at"),
    ('{"score": 0.5, "label": true, "occurred_at": "0161-01-01T00:00:00Z"}', "occurred_at"),
    ('{"score": 0.5, "label": true, "occurred_at": "yesterday"}', "occurred_at"),
    ('{"score": 0.5, "label": true, "occurred_at": "1700000000"}', "occurred_at"),
    ('{"score": 0.5, "label": true, "occurred_at": "2026-11-01"}', "occurred_at"),
    ('{"score": 0.5, "label": true, "metadata": [1, 2]}', "metadata"),
    ('{"score": 0.5, "label": true, "metadata": {"x": NaN}}', "metadata"),
    ('{"score": 0.5, "label": true, "metadata": {"x": "\\u0000"}}', "metadata"),
    ('{"score": 0.5, "label": true, "colour": "red"}', "colour"),
]


@pytest.mark.parametrize(("raw", "field"), BAD_INPUTS)
def test_bad_input_is_422_naming_the_field(
    client: TestClient, clean_database: str, raw: str, field: str
) -> None:
    response = post_raw(client, "/v1/feedback", raw)
    assert response.status_code == 422, response.text
    assert any(error["loc"][-1] == field for error in response.json()["detail"])
    assert count(clean_database) == 0


@pytest.mark.parametrize("limit", [64, 8192])
def test_the_metadata_limit_is_the_setting(clean_database: str, limit: int) -> None:
    settings = Settings(database_url=clean_database, env="test", max_metadata_bytes=limit)
    # JSON sizes just under and just over the limit ({"x":"..."} is 8 bytes around the text).
    fits, too_big = {"x": "y" * (limit - 8)}, {"x": "y" * (limit - 7)}
    with TestClient(create_app(settings)) as client:
        one = client.post("/v1/feedback", json={"score": 0.5, "label": True, "metadata": fits})
        assert one.status_code == 201, one.text
        refused = client.post(
            "/v1/feedback", json={"score": 0.5, "label": True, "metadata": too_big}
        )
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "metadata"]
        assert f"at most {limit} bytes" in refused.json()["detail"][0]["msg"]
        items = [{"score": 0.1, "label": False, "metadata": fits}] * 2
        batch = client.post("/v1/feedback/batch", json={"items": items})
        assert batch.status_code == 201, batch.text
        items.append({"score": 0.1, "label": False, "metadata": too_big})
        batch = client.post("/v1/feedback/batch", json={"items": items})
        assert batch.status_code == 422
        assert batch.json()["detail"][0]["loc"] == ["body", "items", 2, "metadata"]
    assert count(clean_database) == 3


def test_long_strings_and_big_metadata_are_rejected(client: TestClient) -> None:
    too_long = client.post(
        "/v1/feedback", json={"score": 0.5, "label": True, "external_id": "x" * 129}
    )
    assert too_long.status_code == 422
    big = client.post(
        "/v1/feedback", json={"score": 0.5, "label": True, "metadata": {"x": "y" * 4100}}
    )
    assert big.status_code == 422
    assert big.json()["detail"][0]["loc"][-1] == "metadata"
    assert client.post("/v1/feedback", json={"score": 0, "label": False}).status_code == 201
    assert client.post("/v1/feedback", json={"score": 1, "label": True}).status_code == 201


def test_not_json_is_422(client: TestClient) -> None:
    assert post_raw(client, "/v1/feedback", "{not json").status_code == 422
    assert post_raw(client, "/v1/feedback", "[1, 2]").status_code == 422


def batch_item(index: int, **overrides: object) -> dict[str, object]:
    return {"score": (index % 100) / 100, "label": index % 3 == 0, **overrides}


def test_batch_stores_everything(client: TestClient, clean_database: str) -> None:
    items = [batch_item(i, external_id=f"b-{i}") for i in range(250)]
    response = client.post("/v1/feedback/batch", json={"items": items})
    assert response.status_code == 201
    assert response.json() == {"inserted": 250, "duplicates": 0, "conflicts": []}
    rows = stored(clean_database)
    assert [(r.external_id, r.score, r.label) for r in rows] == [
        (item["external_id"], item["score"], item["label"]) for item in items
    ]


def test_batch_skips_known_ids_and_reports_conflicts(
    client: TestClient, clean_database: str
) -> None:
    client.post("/v1/feedback", json=batch_item(1, external_id="known"))
    client.post("/v1/feedback", json=batch_item(2, external_id="changed"))
    items = [
        batch_item(1, external_id="known"),
        batch_item(3, external_id="changed"),
        batch_item(4, external_id="new"),
        batch_item(4, external_id="new"),
        batch_item(5, external_id="new"),
        batch_item(6),
    ]
    response = client.post("/v1/feedback/batch", json={"items": items})
    assert response.status_code == 201
    assert response.json() == {"inserted": 2, "duplicates": 2, "conflicts": [1, 4]}
    assert sorted(r.external_id or "" for r in stored(clean_database)) == [
        "",
        "changed",
        "known",
        "new",
    ]


def test_bad_batch_item_names_index_and_field_and_stores_nothing(
    client: TestClient, clean_database: str
) -> None:
    items = [batch_item(i) for i in range(5)]
    items[3]["score"] = 1.5
    response = client.post("/v1/feedback/batch", json={"items": items})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "items", 3, "score"]
    body = json.dumps({"items": [batch_item(0), batch_item(1)]}).replace("0.01", "NaN")
    assert post_raw(client, "/v1/feedback/batch", body).status_code == 422
    assert count(clean_database) == 0


def test_a_batch_whose_last_id_is_known_stores_the_others_in_order(
    client: TestClient, clean_database: str
) -> None:
    """On PostgreSQL the batch is first copied straight into the table; a known id at its very
    end undoes that copy, and the staging path must then store the rest as if it had not run."""
    client.post("/v1/feedback", json=batch_item(0, external_id="last"))
    items = [batch_item(i, external_id=f"n-{i}") for i in range(1, 300)]
    items.append(batch_item(0, external_id="last"))
    items.append(batch_item(7, external_id="last"))  # a repeat with another body: a conflict
    response = client.post("/v1/feedback/batch", json={"items": items})
    assert response.status_code == 201, response.text
    assert response.json() == {"inserted": 299, "duplicates": 1, "conflicts": [300]}
    rows = stored(clean_database)
    assert [r.external_id for r in rows] == ["last", *(f"n-{i}" for i in range(1, 300))]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    # And a batch of new ids after it takes the direct path again.
    fresh = [batch_item(i, external_id=f"m-{i}") for i in range(5)]
    response = client.post("/v1/feedback/batch", json={"items": fresh})
    assert response.json() == {"inserted": 5, "duplicates": 0, "conflicts": []}
    assert count(clean_database) == 305


def test_a_driver_error_inside_a_batch_is_sqlalchemys_and_stores_nothing(
    clean_database: str,
) -> None:
    """The batch insert goes to the driver without SQLAlchemy: its errors still reach the error
    handlers as SQLAlchemy's, and the transaction is rolled back whole."""
    from sqlalchemy.exc import IntegrityError

    from app.db import Database
    from app.feedback import batch, service

    engine = create_engine(clean_database)
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON feedback"
                    " WHEN NEW.external_id = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    " IF NEW.external_id = 'refused' THEN"
                    " RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END IF;"
                    " RETURN NEW; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON feedback"
                    " FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    body = json.dumps(
        {"items": [batch_item(i, external_id=key) for i, key in enumerate(["a", "refused", "b"])]}
    ).encode()
    database = Database(Settings(database_url=clean_database))
    try:
        with pytest.raises(IntegrityError), database.session_scope() as session:
            service.create_feedback_batch(session, rows=batch.parse_batch(body), max_batch_size=10)
    finally:
        database.dispose()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "DROP TRIGGER refuse"
                    + ("" if connection.dialect.name == "sqlite" else " ON feedback")
                )
            )
            if connection.dialect.name != "sqlite":
                connection.execute(text("DROP FUNCTION refuse()"))
        engine.dispose()
    assert count(clean_database) == 0


def test_batch_over_item_limit_is_413(clean_database: str) -> None:
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(database_url=clean_database, max_batch_size=5))
    with TestClient(app) as client:
        response = client.post(
            "/v1/feedback/batch", json={"items": [batch_item(i) for i in range(6)]}
        )
        assert response.status_code == 413
        assert "at most 5" in response.json()["detail"]
        ok = client.post("/v1/feedback/batch", json={"items": [batch_item(i) for i in range(5)]})
        assert ok.status_code == 201
    assert count(clean_database) == 5


def test_body_over_size_limit_is_413_declared_or_streamed(clean_database: str) -> None:
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(database_url=clean_database, max_body_bytes=2048))
    body = json.dumps({"items": [batch_item(i) for i in range(100)]})
    with TestClient(app) as client:
        declared = post_raw(client, "/v1/feedback/batch", body)
        assert declared.status_code == 413
        assert "detail" in declared.json()

        def chunks():
            for start in range(0, len(body), 512):
                yield body[start : start + 512].encode()

        streamed = client.post(
            "/v1/feedback/batch", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert "detail" in streamed.json()
    assert count(clean_database) == 0


def test_listing_pages_without_gaps_or_repeats_while_records_arrive(client: TestClient) -> None:
    client.post("/v1/feedback/batch", json={"items": [batch_item(i) for i in range(25)]})
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/feedback", params=params).json()
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        if pages == 1:
            client.post("/v1/feedback/batch", json={"items": [batch_item(i) for i in range(7)]})
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 32
    assert seen == sorted(set(seen))


def test_listing_filters_by_segment_and_rejects_bad_cursor(client: TestClient) -> None:
    client.post(
        "/v1/feedback/batch",
        json={"items": [batch_item(i, segment="a" if i % 2 else "b") for i in range(10)]},
    )
    page = client.get("/v1/feedback", params={"segment": "a"}).json()
    assert len(page["items"]) == 5 and {i["segment"] for i in page["items"]} == {"a"}
    assert page["next_cursor"] is None
    bad = client.get("/v1/feedback", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert client.get("/v1/feedback", params={"limit": 0}).status_code == 422


def test_stats_count_labels_segments_and_new_since_training(
    client: TestClient, clean_database: str
) -> None:
    items = [batch_item(i, segment="a") for i in range(9)] + [
        batch_item(i, segment="b") for i in range(4)
    ]
    client.post("/v1/feedback/batch", json={"items": items})
    ids = [row.id for row in stored(clean_database) if row.segment == "a"]

    from sqlalchemy import insert

    from app.db import utcnow
    from app.training.models import TrainingRun

    engine = create_engine(clean_database)
    with engine.begin() as connection:
        connection.execute(
            insert(TrainingRun),
            {
                "segment": "a",
                "trigger": "api",
                "status": "deployed",
                "force": False,
                "created_at": utcnow(),
                "last_feedback_id": ids[5],
            },
        )
    engine.dispose()

    stats = client.get("/v1/feedback/stats").json()
    assert stats["total"] == 13
    true_a = sum(1 for i in range(9) if i % 3 == 0)
    true_b = sum(1 for i in range(4) if i % 3 == 0)
    assert stats["by_label"] == {"true": true_a + true_b, "false": 13 - true_a - true_b}
    assert stats["by_segment"]["a"]["total"] == 9
    assert stats["by_segment"]["a"]["new_since_last_training"] == 3
    assert stats["by_segment"]["b"]["new_since_last_training"] == 4
    assert stats["new_since_last_training"] == 7


# --- the fast batch path (bytes validation, driver-level inserts) keeps the contract ----


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))]
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 30), timezones=offsets
)


def reference_body_sha256(item: FeedbackCreate) -> str:
    """The fingerprint's definition, as stored hashes were computed."""
    canonical = json.dumps(
        [
            item.segment,
            item.score,
            item.label,
            item.source,
            item.occurred_at.isoformat() if item.occurred_at else None,
            item.metadata,
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    score=st.floats(0, 1),
    label=st.booleans(),
    segment=st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z").filter(
        lambda s: s not in ("active", "history")
    ),
    source=st.none() | st.text(max_size=20).filter(lambda s: "\x00" not in s),
    occurred_at=st.none() | instants,
    metadata=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=4),
)
def test_body_hash_is_the_documented_canonical_json(**fields: object) -> None:
    metadata = fields["metadata"]
    if metadata is not None and "\\u0000" in json.dumps(metadata):
        return
    item = FeedbackCreate.model_validate(fields)
    assert body_sha256(item) == reference_body_sha256(item)


@hypothesis_settings(max_examples=300, deadline=None)
@given(instants)
def test_sqlite_timestamp_text_is_what_sqlalchemy_stores(value: datetime) -> None:
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert sqlite_timestamp(value) == process(value)


def batch_of(raw_item: str) -> str:
    good = json.dumps(batch_item(0))
    return f'{{"items": [{good}, {good}, {raw_item}]}}'


@pytest.mark.parametrize(("raw", "field"), BAD_INPUTS)
def test_bad_batch_item_names_index_and_field_like_a_single_record(
    client: TestClient, clean_database: str, raw: str, field: str
) -> None:
    response = post_raw(client, "/v1/feedback/batch", batch_of(raw))
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["body", "items", 2, field] in locations
    assert count(clean_database) == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{not json", "application/json"),
        ('{"items": [1, 2]}', "application/json"),
        ('{"items": []} trailing', "application/json"),
        ('{"items": [], "extra": 1}', "application/json"),
        ('{"items": []}', "text/plain"),
        ("[]", "application/json"),
    ],
)
def test_malformed_batch_bodies_are_422_about_the_body(
    client: TestClient, body: str, content_type: str
) -> None:
    response = client.post(
        "/v1/feedback/batch", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    assert all(error["loc"][0] == "body" for error in response.json()["detail"])


def test_json_with_charset_and_vendor_types_are_accepted(client: TestClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.calib+json"):
        response = client.post(
            "/v1/feedback/batch",
            content=json.dumps({"items": [batch_item(1)]}),
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 201, response.text


def test_openapi_describes_the_batch_request_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    body = document["paths"]["/v1/feedback/batch"]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    reference = schema["properties"]["items"]["items"]["$ref"]
    name = reference.removeprefix("#/components/schemas/")
    assert reference == f"#/components/schemas/{name}"
    assert {"score", "label", "external_id"} <= set(
        document["components"]["schemas"][name]["properties"]
    )
    assert schema["required"] == ["items"]


def test_batch_and_single_paths_store_the_same_values(
    client: TestClient, clean_database: str
) -> None:
    item = {
        "score": 0.125,
        "label": False,
        "segment": "contracts",
        "source": "analyzer-é",
        "occurred_at": "2026-11-20T10:00:00.5+02:00",
        "metadata": {"rule": "R1", "pages": [1, 2]},
    }
    single = client.post("/v1/feedback", json={**item, "external_id": "single"})
    batch = client.post(
        "/v1/feedback/batch",
        json={"items": [{**item, "external_id": "batched"}, {"score": 0.5, "label": True}]},
    )
    assert (single.status_code, batch.status_code) == (201, 201)
    by_key = {row.external_id: row for row in stored(clean_database)}
    one, other = by_key["single"], by_key["batched"]
    for column in ("segment", "score", "label", "source", "occurred_at", "metadata_"):
        assert getattr(one, column) == getattr(other, column), column
    assert other.occurred_at == datetime(2026, 11, 20, 8, 0, 0, 500000, tzinfo=UTC)
    assert other.body_sha256 == one.body_sha256
    assert by_key[None].occurred_at == by_key[None].received_at
    assert by_key[None].metadata_ is None

    # The hashes agree across paths: replays are recognised whichever path stored the record.
    assert client.post("/v1/feedback", json={**item, "external_id": "batched"}).status_code == 200
    again = client.post("/v1/feedback/batch", json={"items": [{**item, "external_id": "single"}]})
    assert again.json() == {"inserted": 0, "duplicates": 1, "conflicts": []}

    engine = create_engine(clean_database)
    with engine.connect() as connection:
        nulls = connection.execute(
            text("SELECT count(*) FROM feedback WHERE metadata IS NULL")
        ).scalar_one()
    engine.dispose()
    assert nulls == 1


def test_consecutive_batches_keep_order_and_skip_replays(
    client: TestClient, clean_database: str
) -> None:
    first = [batch_item(i, external_id=f"k-{i}") for i in range(300)]
    second = [batch_item(i, external_id=f"k-{i}") for i in range(200, 500)]
    assert client.post("/v1/feedback/batch", json={"items": first}).json()["inserted"] == 300
    result = client.post("/v1/feedback/batch", json={"items": second}).json()
    assert result == {"inserted": 200, "duplicates": 100, "conflicts": []}
    rows = stored(clean_database)
    assert [row.external_id for row in rows] == [f"k-{i}" for i in range(500)]


def test_metadata_may_hold_the_text_of_an_escaped_nul(client: TestClient) -> None:
    body = {"score": 0.5, "label": True, "metadata": {"pattern": "\\u0000"}}
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"pattern": "\\u0000"}
    batch = client.post("/v1/feedback/batch", json={"items": [body]})
    assert batch.status_code == 201 and batch.json()["inserted"] == 1


def test_since_takes_a_date_or_a_date_time_and_explains_a_bad_one(client: TestClient) -> None:
    from datetime import UTC, datetime, timedelta

    client.post("/v1/feedback/batch", json={"items": [{"score": 0.5, "label": True}] * 3})
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    for path in ("/v1/feedback", "/v1/feedback/export"):
        for since, expected in ((today, 3), (tomorrow, 0), (f"{today}T00:00Z", 3)):
            response = client.get(path, params={"since": str(since)})
            assert response.status_code == 200, response.text
            found = (
                len(response.json()["items"])
                if path == "/v1/feedback"
                else len(response.text.splitlines())
            )
            assert found == expected, (path, since)
    assert client.get("/v1/models/history", params={"at": str(today)}).status_code == 200
    for bad in ("yesterday", "29.11.2026", "1969-12-31", "2026-11-29T25:00:00Z"):
        response = client.get("/v1/feedback", params={"since": bad})
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == ["query", "since"]
        assert "ISO 8601 date (2026-11-29) or date-time" in error["msg"]
        assert "^" not in error["msg"]
