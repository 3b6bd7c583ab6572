"""Query timestamps: every text the documented pattern admits is read, the rest explained."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import InvalidInputError
from app.params import QUERY_TIMESTAMP_PATTERN, parse_timestamp


@settings(max_examples=300, deadline=None)
@given(st.from_regex(QUERY_TIMESTAMP_PATTERN, fullmatch=True))
def test_every_documented_text_is_an_instant(text: str) -> None:
    parsed = parse_timestamp(text, "since")
    assert parsed is not None and parsed.tzinfo is not None
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),
        ("2026-11-29T10:00", datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29T10:00:00.5+02:00", datetime(2026, 11, 29, 8, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_dates_and_date_times(text: str, expected: datetime) -> None:
    assert parse_timestamp(text, "since") == expected


@pytest.mark.parametrize(
    "text",
    ["2026-02-29", "1970-00-00", "2026-11-31", "2026-11-29t10:00z", "1969-12-31", "20261129"],
)
def test_other_texts_are_refused_by_the_pattern_and_the_parser(text: str) -> None:
    assert re.fullmatch(QUERY_TIMESTAMP_PATTERN, text) is None
    with pytest.raises(InvalidInputError):
        parse_timestamp(text, "since")
