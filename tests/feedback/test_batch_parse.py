"""The batch fast path (app/feedback/batch.py) against its reference, FeedbackBatchCreate.

Whatever the fast path accepts, the reference accepts with the same row; whatever it does not
take goes to the reference, so the answers (rows or 422 errors) are the reference's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.feedback import batch, service
from app.feedback.schemas import FeedbackBatchCreate


def reference(body: bytes) -> list[Any] | list[dict[str, Any]]:
    """The reference's rows, or its errors."""
    try:
        items = FeedbackBatchCreate.model_validate_json(body).items
    except ValidationError as exc:
        return exc.errors(include_url=False, include_context=False, include_input=False)
    return [service.driver_row(item) for item in items]


def fast(body: bytes) -> list[Any] | None:
    try:
        return batch._fast_rows(body)
    except (ValidationError, ValueError, OverflowError, batch._NotFast):
        return None


def parsed(body: bytes) -> list[Any] | list[dict[str, Any]]:
    try:
        return batch.parse_batch(body)
    except ValidationError as exc:
        return exc.errors(include_url=False, include_context=False, include_input=False)


def check(body: bytes) -> list[Any] | None:
    """Assert the contract for one body; returns the fast path's rows (None: not taken)."""
    expected = reference(body)
    rows = fast(body)
    if rows is not None:
        assert rows == expected
    assert parsed(body) == expected
    return rows


def body_of(*items: object) -> bytes:
    return json.dumps({"items": list(items)}).encode()


# --- values, valid and not ---------------------------------------------------------------

offsets = st.sampled_from(
    [
        UTC,
        timezone(timedelta(0)),
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=-9, minutes=-30)),
        timezone(timedelta(hours=23, minutes=59)),
        timezone(timedelta(hours=-23, minutes=-59)),
    ]
)
instants = st.datetimes(
    min_value=datetime(1965, 1, 1), max_value=datetime(2105, 12, 31), timezones=offsets
) | st.datetimes(min_value=datetime(1965, 1, 1), max_value=datetime(2105, 12, 31))


@st.composite
def written_instants(draw: st.DrawFn) -> str:
    """An instant written the ways clients write them (and some they should not)."""
    value = draw(instants)
    text = value.isoformat(
        sep=draw(st.sampled_from(["T", "T", " ", "t"])),
        timespec=draw(st.sampled_from(["auto", "seconds", "minutes", "milliseconds"])),
    )
    if text.endswith("+00:00"):
        text = text[:-6] + draw(st.sampled_from(["Z", "+00:00", "-00:00", "z", "+0000", ""]))
    if draw(st.booleans()) and "." in text:
        # 1 to 9 fraction digits
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{(digits + '123456789')[: draw(st.integers(1, 9))]}{zone}"
    return text


timestamp_chars = st.sampled_from([*"0123456789-:T+Z. tz٣", "1970", "2099", "2100"])
timestamp_like = st.lists(timestamp_chars, min_size=0, max_size=26).map("".join)
# Mutations of a good timestamp: one character replaced.
mutated = st.tuples(written_instants(), st.integers(0, 30), timestamp_chars).map(
    lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
)
timestamps = (
    written_instants()
    | mutated
    | timestamp_like
    | st.sampled_from(
        [
            "2026-11-01",
            "1700000000",
            "2026-02-29T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2026-11-01T24:00:00Z",
            "2026-11-01T10:00:60Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "2099-12-31T23:59:59.999999Z",
            "2100-01-01T00:00:00Z",
            "1970-01-01T00:00:00+23:59",
            "2099-12-31T23:59:59-23:59",
            "20261101T100000Z",
            "2026-W44-7T10:00:00Z",
            "2026-11-01T10:00:00Z\n",
        ]
    )
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
texts = st.text(max_size=10) | st.sampled_from(["", "a\x00b", "x" * 128, "x" * 129, "é", '"\\'])
items = st.fixed_dictionaries(
    {},
    optional={
        "score": st.floats(-0.1, 1.1)
        | st.floats()
        | st.integers(-1, 2)
        | st.sampled_from(["0.5", True]),
        "label": st.booleans() | st.sampled_from([0, 1, "true", None]),
        "segment": st.sampled_from(["default", "a.b-c_D9", "active", "history", "", "x y", None])
        | st.text(max_size=6),
        "external_id": st.none() | texts,
        "source": st.none() | texts,
        "occurred_at": st.none() | timestamps | st.integers(0, 2**31) | st.booleans(),
        "metadata": st.none()
        | st.dictionaries(st.text(max_size=4), json_values, max_size=4)
        | st.sampled_from([[1], "x", {"x": "y" * 4100}, {"x": "\x00"}, {"x": "\\u0000"}]),
        "colour": st.just("red"),
    },
)
good_items = st.fixed_dictionaries(
    {"score": st.floats(0, 1), "label": st.booleans()},
    optional={
        "segment": st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z"),
        "external_id": st.text(min_size=1, max_size=128).filter(lambda s: "\x00" not in s),
        "source": st.none() | st.text(max_size=128).filter(lambda s: "\x00" not in s),
        "occurred_at": st.none() | written_instants(),
        "metadata": st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    },
)


@pytest.mark.slow  # fuzzing
@hypothesis_settings(max_examples=1500, deadline=None)
@given(st.lists(items, max_size=4))
def test_any_items_give_the_reference_rows_or_errors(values: list[dict[str, object]]) -> None:
    check(json.dumps({"items": values}).encode())


@pytest.mark.slow  # fuzzing
@hypothesis_settings(max_examples=800, deadline=None)
@given(st.lists(good_items, min_size=1, max_size=4))
def test_good_items_give_the_reference_rows(values: list[dict[str, object]]) -> None:
    check(json.dumps({"items": values}).encode())


@pytest.mark.slow  # fuzzing
@hypothesis_settings(max_examples=3000, deadline=None)
@given(timestamps)
@example("2026-11-01T10:00:00Z")
@example("2026-11-01T10:00:00")
@example("2026-11-01T10:00:00+00:00")
@example("2026-11-01T10:00:00.5-00:00")
@example("2026-11-01T10:00:00.123456+02:00")
@example("2026-02-30T10:00:00Z")
@example("2026-11-01T10:00:0٣Z")
@example("2026-11-01T10:00:00.1234567Z")
def test_timestamps_are_read_as_the_reference_reads_them(text: str) -> None:
    check(body_of({"score": 0.5, "label": True, "external_id": "k", "occurred_at": text}))


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00",
        "2026-11-01T10:00:00+00:00",
        "2026-11-01T10:00:00.25Z",
        "2026-11-01T10:00:00.000000Z",
        "2026-11-01T10:00:00.123456-05:30",
        "1970-01-01T00:00:00+23:59",
        "2099-12-31T23:59:59.999999-23:59",
    ],
)
def test_usual_timestamps_take_the_fast_path(text: str) -> None:
    item = {"score": 0.5, "label": True, "external_id": "k", "occurred_at": text}
    assert check(body_of(item)) is not None


@pytest.mark.parametrize(
    "item",
    [
        {"score": 0.5, "label": True, "occurred_at": "2026-11-01"},  # date only: reference
        {"score": 0.5, "label": True, "occurred_at": "1700000000"},  # epoch text: reference
        {"score": 0.5, "label": True, "metadata": {"x": float("nan")}},
        {"score": 0.5, "label": True, "segment": "active"},
        {"score": 0.5, "label": True, "source": "a\x00"},
        {"score": 0.5, "label": True, "metadata": {"x": "y" * 4100}},
    ],
)
def test_what_the_fast_path_leaves_goes_to_the_reference(item: dict[str, object]) -> None:
    body = body_of(item)
    assert fast(body) is None
    check(body)


# Bodies written by hand, where a JSON decoder could differ from pydantic's: the fast path's
# decoder (msgspec) must refuse them, or read them as the reference reads them.
_GOOD = '"score": 0.5, "label": true, "external_id": "k"'


@pytest.mark.parametrize(
    "body",
    [
        b'{"items": [{"score": 1, "label": true, "external_id": "k"}]}',  # an integer score
        b'{"items": [{"score": 0, "label": false}]}',
        b'{"items": [{"score": -0.0, "label": false, "external_id": "k"}]}',
        b'{"items": [{"score": 5e-1, "label": true, "external_id": "k"}]}',
        b'{"items": [{"score": 0.1000000000000000055511151231257827, "label": true}]}',
        b'{"items": [{"score": 0.5, "score": 0.7, "label": true, "external_id": "k"}]}',
        f'{{"items": [{{{_GOOD}, "source": "\\ud800"}}]}}'.encode(),  # a lone surrogate
        f'{{"items": [{{{_GOOD}, "source": "\\ud83d\\ude00"}}]}}'.encode(),  # a pair
        f'{{"items": [{{{_GOOD}, "source": "\u00e9\u4e2d"}}]}}'.encode(),  # raw UTF-8
        f'{{"items": [{{{_GOOD}, "metadata": {{"n": 123456789012345678901234567890}}}}]}}'.encode(),
        f'{{"items": [{{{_GOOD}, "metadata": {{"x": 1e400}}}}]}}'.encode(),
        f'{{"items": [{{{_GOOD}, "metadata": {{"x": NaN}}}}]}}'.encode(),
        f'{{"items": [{{{_GOOD}, "metadata": {{"a": 1, "b": 2, "a": 3}}}}]}}'.encode(),
        f'{{"items": [{{{_GOOD}, "metadata": {{"x": -0, "y": 1.5E+2}}}}]}}'.encode(),
        f'{{"items": [{{{_GOOD}}}], "items": []}}'.encode(),  # a repeated key
        f'\ufeff{{"items": [{{{_GOOD}}}]}}'.encode(),  # a byte order mark
        f' {{"items": [{{{_GOOD}}}]}}\n'.encode(),
        f'{{"items": [{{{_GOOD}}}]}} x'.encode(),
        f'{{"items": [{{{_GOOD}, "segment": null}}]}}'.encode(),
        f'{{"items": [{{{_GOOD}, "external_id": ""}}]}}'.encode(),
        f'{{"items": [{{{_GOOD}, "metadata": []}}]}}'.encode(),
        b'{"items": [{"score": true, "label": true}]}',
        b'{"items": [{"score": "0.5", "label": true}]}',
        b'{"items": [{"score": 0.5, "label": 1}]}',
        b'{"items": null}',
        b"{}",
        b"[]",
    ],
)
def test_hand_written_bodies_are_read_as_the_reference_reads_them(body: bytes) -> None:
    check(body)


def test_a_typical_batch_takes_the_fast_path_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    values = [
        {
            "external_id": f"id-{i}",
            "segment": ("default", "contracts")[i % 2],
            "score": i / 1000,
            "label": i % 3 == 0,
            "occurred_at": (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            **({"source": "analyzer-2", "metadata": {"rule": f"R{i}", "page": i}} if i % 5 else {}),
        }
        for i in range(1000)
    ]
    body = body_of(*values)
    expected = reference(body)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the reference path was taken")

    monkeypatch.setattr(FeedbackBatchCreate, "model_validate_json", refuse)
    assert batch.parse_batch(body) == expected


def test_bad_item_errors_are_the_reference_errors() -> None:
    body = body_of(
        {"score": 0.5, "label": True},
        {"score": 1.5, "label": "yes", "segment": "active"},
        {"score": 0.5, "label": True, "occurred_at": "2200-01-01T00:00:00Z", "x": 1},
    )
    errors = parsed(body)
    assert errors == reference(body)
    assert [error["loc"] for error in errors] == [  # type: ignore[index]
        ("items", 1, "score"),
        ("items", 1, "label"),
        ("items", 2, "occurred_at"),
        ("items", 2, "x"),
    ]


# --- idempotency over HTTP: the first item of an id decides, like before -------------------


def item(score: float, key: str | None = None) -> dict[str, object]:
    return {"score": score, "label": True, **({"external_id": key} if key else {})}


@pytest.mark.parametrize(
    ("stored", "items", "result"),
    [
        # An id stored with another body: every item of it is a conflict.
        ([item(0.2, "a")], [item(0.1, "a"), item(0.1, "a")], (0, 0, [0, 1])),
        ([item(0.2, "a")], [item(0.2, "a"), item(0.1, "a")], (0, 1, [1])),
        # A new id twice: the first item is stored, a repeat compares with it.
        ([], [item(0.1, "a"), item(0.1, "a"), item(0.3, "a")], (1, 1, [2])),
        ([], [item(0.1), item(0.1, "a"), item(0.1), item(0.1, "b")], (4, 0, [])),
        (
            [item(0.5, "k"), item(0.6, "c")],
            [item(0.1, "n"), item(0.5, "k"), item(0.1), item(0.7, "c"), item(0.1, "n")],
            (2, 2, [3]),
        ),
    ],
)
def test_batch_outcomes_for_known_and_repeated_ids(
    client: TestClient,
    stored: list[dict[str, object]],
    items: list[dict[str, object]],
    result: tuple[int, int, list[int]],
) -> None:
    for record in stored:
        assert client.post("/v1/feedback", json=record).status_code == 201
    response = client.post("/v1/feedback/batch", json={"items": items})
    assert response.status_code == 201, response.text
    inserted, duplicates, conflicts = result
    assert response.json() == {
        "inserted": inserted,
        "duplicates": duplicates,
        "conflicts": conflicts,
    }
