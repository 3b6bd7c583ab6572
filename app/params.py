"""Request parameters shared by many routes: path names, keyset cursors and timestamps."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Protocol, TypeVar

from fastapi import Path, Query

from app.config import SEGMENT_PATTERN
from app.errors import InvalidInputError

# A model version's path. The examples document the usual case, and lead a fuzzer to a stored
# version (it found a 500 of the reliability pictures that way).
SegmentPath = Annotated[str, Path(pattern=SEGMENT_PATTERN, examples=["default"])]
VersionPath = Annotated[int, Path(ge=1, le=2_147_483_647, examples=[1])]

# Every string this pattern admits is a cursor the service can resume from, so the
# OpenAPI document is exact: a schema-valid cursor is never refused.
CURSOR_PATTERN = r"^[0-9]{1,18}$"
# ISO 8601 date-times of the years 1970-2099, the range the store accepts.
TIMESTAMP_PATTERN = (
    r"^(19[7-9][0-9]|20[0-9][0-9])-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
    r"(:[0-9]{2}(\.[0-9]+)?)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$"
)

CursorQuery = Annotated[
    str | None,
    Query(pattern=CURSOR_PATTERN, description="The next_cursor of the previous page"),
]


# Query parameters also take a plain date (its midnight, UTC): "--since 2026-11-29". Exactly
# the texts datetime.fromisoformat reads as an existing instant of 1970-2099, so every string
# the documented pattern admits is accepted: real month lengths, February 29 in leap years.
_YEAR = r"(19[7-9][0-9]|20[0-9][0-9])"
_LEAP_YEAR = r"(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26]))"
_MONTH_DAY = (
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
    r"|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    r"|02-(0[1-9]|1[0-9]|2[0-8]))"
)
_TIME = (
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
QUERY_TIMESTAMP_PATTERN = f"^({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29){_TIME}$"
_QUERY_TIMESTAMP = re.compile(QUERY_TIMESTAMP_PATTERN)
_TIMESTAMP_HELP = (
    "an ISO 8601 date (2026-11-29) or date-time (2026-11-29T10:00:00Z) of the years 1970-2099"
)


def timestamp_query(description: str) -> object:
    """A query parameter holding an ISO 8601 date or date-time (numbers are not read as epochs).

    The pattern is documented but checked by ``parse_timestamp``, whose 422 explains the
    accepted forms instead of quoting the regular expression.
    """
    return Query(
        description=f"{description}: {_TIMESTAMP_HELP}; without an offset, UTC",
        json_schema_extra={"pattern": QUERY_TIMESTAMP_PATTERN},
    )


class _HasId(Protocol):
    id: int


Row = TypeVar("Row", bound=_HasId)


def cursor_id(cursor: str | None) -> int | None:
    """The id a page continues from; ``None`` for the first page."""
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidInputError(
            [{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}]
        )
    return int(cursor)


def page_of(rows: Sequence[Row], limit: int) -> tuple[list[Row], str | None]:
    """Rows fetched with ``limit + 1``: this page, and the next page's cursor (``None``: last)."""
    page = list(rows[:limit])
    return page, (str(page[-1].id) if len(rows) > limit else None)


def parse_timestamp(value: str | None, name: str) -> datetime | None:
    """An aware UTC datetime from a query value (a naive one is read as UTC)."""
    if value is None:
        return None
    try:
        if not _QUERY_TIMESTAMP.fullmatch(value):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(
            [{"loc": ["query", name], "msg": f"expected {_TIMESTAMP_HELP}", "type": "value_error"}]
        ) from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
