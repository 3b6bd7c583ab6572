"""HTTP routes of the feedback store: parse, call one service function, return.

``GET /v1/feedback/stats`` is served by the training domain: "new since the last training" is
a fact about training runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from app.auth import require_scope
from app.config import SEGMENT_PATTERN
from app.deps import DatabaseDep, ReadSession, SettingsDep, WriteSession
from app.errors import responses
from app.feedback import batch, service
from app.feedback.repository import BatchRow
from app.feedback.schemas import (
    FeedbackBatchCreate,
    FeedbackBatchResult,
    FeedbackCreate,
    FeedbackPage,
    FeedbackRead,
)
from app.params import CursorQuery, parse_timestamp, timestamp_query

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])

_write = [Depends(require_scope("feedback:write"))]
_read = [Depends(require_scope("read"))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    response_model=FeedbackRead,
    responses={
        200: {"model": FeedbackRead, "description": "A replay of a stored external_id"},
        **responses(400, 401, 403, 409, 413, 422, 503),
    },
)
async def create_feedback(item: FeedbackCreate, request: Request) -> Response:
    """Store one record; replaying the same ``external_id`` and body answers 200."""
    # async, and the record serialised here: the analyzer's most frequent call costs no
    # thread-pool hop and no second validation of the response. The database is taken from
    # the request, not through a dependency: each dependency costs FastAPI ~20 us per request.
    record, created = await service.create_feedback(request.app.state.database, item=item)
    return Response(
        content=record.model_dump_json(),
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        media_type="application/json",
    )


async def _json_bytes(request: Request) -> bytes:
    """The raw body of a JSON request; read here, on the event loop, and parsed off it."""
    content_type = request.headers.get("content-type")
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "the body must be application/json", "type": "json_type"}]
        )
    return await request.body()


def _parse_batch(body: bytes) -> list[BatchRow]:
    try:
        return batch.parse_batch(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


JsonBytes = Annotated[bytes, Depends(_json_bytes)]

# The route reads bytes, so FastAPI cannot infer the request body: describe it by hand.
# FeedbackCreate is in the document's components already (the single-record route uses it).
_BATCH_BODY = FeedbackBatchCreate.model_json_schema(ref_template="#/components/schemas/{model}")
_BATCH_BODY.pop("$defs", None)


@router.post(
    "/batch",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=responses(400, 401, 403, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BATCH_BODY}},
        }
    },
)
def create_feedback_batch(
    body: JsonBytes, session: WriteSession, settings: SettingsDep
) -> FeedbackBatchResult:
    """Store up to ``max_batch_size`` records at once: all of them, or none on a bad item."""
    # Validated from the bytes straight to driver rows, in this worker thread (the event loop
    # stays free); see app/feedback/batch.py for the fast path and its reference.
    rows = _parse_batch(body)
    return service.create_feedback_batch(session, rows=rows, max_batch_size=settings.max_batch_size)


@router.get("", dependencies=_read, responses=responses(401, 403, 422, 503))
def list_feedback(
    session: ReadSession,
    segment: Annotated[str | None, Query(pattern=SEGMENT_PATTERN)] = None,
    since: Annotated[str | None, timestamp_query("received at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> FeedbackPage:
    """Page through records in arrival order; pass ``next_cursor`` back for the next page."""
    return service.list_feedback(
        session,
        segment=segment,
        since=parse_timestamp(since, "since"),
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/export",
    dependencies=_read,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Every matching record, streamed",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        },
        **responses(401, 403, 422, 503),
    },
)
def export_feedback(
    database: DatabaseDep,
    format: Annotated[Literal["csv", "ndjson"], Query()] = "ndjson",
    segment: Annotated[str | None, Query(pattern=SEGMENT_PATTERN)] = None,
    since: Annotated[str | None, timestamp_query("received at or after")] = None,
) -> StreamingResponse:
    """Stream every matching record in id order, never holding the table in memory."""
    lines = service.export_feedback(
        database, fmt=format, segment=segment, since=parse_timestamp(since, "since")
    )
    media_type = "text/csv" if format == "csv" else "application/x-ndjson"
    filename = f"feedback.{'csv' if format == 'csv' else 'ndjson'}"
    return StreamingResponse(
        lines,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
