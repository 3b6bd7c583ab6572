"""HTTP routes of the model registry and of server-side calibration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.auth import Principal, require_scope
from app.config import DEFAULT_SEGMENT, SEGMENT_PATTERN
from app.db import Database
from app.deps import ReadSession, WriteSession
from app.errors import responses
from app.params import (
    CursorQuery,
    SegmentPath,
    VersionPath,
    parse_timestamp,
    timestamp_query,
)
from app.registry import artifacts, history, service
from app.registry.models import ModelStatus
from app.registry.schemas import (
    ActivationRequest,
    CalibrateRequest,
    CalibrateResponse,
    LivePeriodPage,
    ModelVersionPage,
    ModelVersionRead,
)

router = APIRouter(tags=["models"])

CALIBRATOR_SEGMENT_HEADER = "X-Calibrator-Segment"

_read = [Depends(require_scope("read"))]
SegmentQuery = Annotated[str, Query(pattern=SEGMENT_PATTERN)]
LimitQuery = Annotated[int, Query(ge=1, le=500)]


@router.get("/v1/models", dependencies=_read, responses=responses(401, 403, 422, 503))
def list_models(
    session: ReadSession,
    segment: Annotated[str | None, Query(pattern=SEGMENT_PATTERN)] = None,
    status: ModelStatus | None = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> ModelVersionPage:
    """Stored calibrator versions, newest first."""
    return service.list_versions(
        session, segment=segment, status=status, limit=limit, cursor=cursor
    )


_SERVING_HEADER_DOC = {
    CALIBRATOR_SEGMENT_HEADER: {
        "description": "The segment whose calibrator this is ('_pooled': fallback)",
        "schema": {"type": "string"},
    }
}


@router.get(
    "/v1/models/active",
    dependencies=_read,
    responses={
        200: {
            "description": "The model that serves the segment: its own active version, else "
            "the active '_pooled' one (its `segment` is then '_pooled')",
            "headers": _SERVING_HEADER_DOC,
        },
        **responses(401, 403, 404, 422, 503),
    },
)
def active_model(
    session: ReadSession, response: Response, segment: SegmentQuery = DEFAULT_SEGMENT
) -> ModelVersionRead:
    """The metadata of the version serving the segment, by the same rule as the artifact.

    A segment without an active model of its own is served by the active ``_pooled`` model;
    the ``X-Calibrator-Segment`` header (and the body's ``segment``) say which answered.
    """
    model = service.get_serving(session, segment=segment)
    response.headers[CALIBRATOR_SEGMENT_HEADER] = model.segment
    return service.to_read(model)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/v1/models/active/artifact",
    dependencies=_read,
    response_class=Response,
    responses={
        200: {
            "description": "The portable calibrator (calibrator/v1 JSON); ETag is its sha256",
            "content": {"application/json": {"schema": {"type": "object"}}},
            "headers": _SERVING_HEADER_DOC,
        },
        304: {"description": "Not modified: the If-None-Match ETag is still current"},
        **responses(401, 403, 404, 422, 503),
    },
)
async def active_artifact(
    request: Request,
    segment: SegmentQuery = DEFAULT_SEGMENT,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Download the active calibrator; send ``If-None-Match`` to revalidate a cached copy.

    A segment without an active model of its own gets the active ``_pooled`` calibrator; the
    ``X-Calibrator-Segment`` header (and the artifact's ``segment``) say which answered.
    """
    # A revalidation, the analyzer's usual call, is answered on the event loop from one read of
    # the serving model's hash, as are the bytes once made; only making them takes a thread.
    database = request.app.state.database
    serving = await service.serving_digest(database, segment=segment)
    sha256 = serving.artifact_sha256
    if _etag_matches(if_none_match, sha256):
        return Response(status_code=304, headers=_artifact_headers(serving.segment, sha256))
    body = artifacts.cached_body(sha256)
    if body is None:
        return await run_in_threadpool(_artifact_from_session, database, segment)
    return Response(
        content=body,
        media_type="application/json",
        headers=_artifact_headers(serving.segment, sha256),
    )


def _artifact_headers(segment: str, sha256: str) -> dict[str, str]:
    return {
        "ETag": f'"{sha256}"',
        "Cache-Control": "no-cache",
        CALIBRATOR_SEGMENT_HEADER: segment,
    }


def _artifact_from_session(database: Database, segment: str) -> Response:
    with database.session_scope(write=False) as session:
        model = service.get_serving(session, segment=segment)
        body = artifacts.artifact_body(model)
        headers = _artifact_headers(model.segment, model.artifact_sha256)
    return Response(content=body, media_type="application/json", headers=headers)


@router.get("/v1/models/history", dependencies=_read, responses=responses(401, 403, 422, 503))
def model_history(
    session: ReadSession,
    segment: Annotated[str | None, Query(pattern=SEGMENT_PATTERN)] = None,
    at: Annotated[str | None, timestamp_query("only the periods live at this instant")] = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> LivePeriodPage:
    """Which version was live when: activation periods, newest first."""
    return history.history(
        session, segment=segment, at=parse_timestamp(at, "at"), limit=limit, cursor=cursor
    )


@router.get(
    "/v1/models/{segment}/{version}",
    dependencies=_read,
    responses=responses(401, 403, 404, 422, 503),
)
def get_model(session: ReadSession, segment: SegmentPath, version: VersionPath) -> ModelVersionRead:
    """One stored version."""
    return service.to_read(service.get_version(session, segment=segment, version=version))


@router.post(
    "/v1/models/{segment}/{version}/activate",
    responses=responses(400, 401, 403, 404, 409, 422, 503),
)
def activate_model(
    session: WriteSession,
    segment: SegmentPath,
    version: VersionPath,
    principal: Annotated[Principal, Depends(require_scope("admin"))],
    request: Annotated[ActivationRequest | None, Body()] = None,
) -> ModelVersionRead:
    """Promote or roll back to any stored version; already active answers 200 unchanged."""
    request = request or ActivationRequest()
    model, _changed = service.activate(
        session,
        segment=segment,
        version=version,
        actor=f"api:{principal.name}",
        reason=request.reason,
        expected_active_version=request.expected_active_version,
    )
    return service.to_read(model)


@router.post(
    "/v1/calibrate",
    tags=["calibrate"],
    dependencies=_read,
    response_model=CalibrateResponse,
    responses={
        200: {"description": "The calibrated scores", "headers": _SERVING_HEADER_DOC},
        **responses(400, 401, 403, 404, 413, 422, 503),
    },
)
async def calibrate(payload: CalibrateRequest, request: Request) -> Response:
    """Apply the segment's active calibrator (else the pooled one) to raw scores, server-side."""
    # On the event loop when the serving model's calibrator is cached by its artifact hash (the
    # usual case): one read, no thread hop, no session. Loading it takes a thread.
    database = request.app.state.database
    serving = await service.serving_digest(database, segment=payload.segment)
    calibrator = artifacts.cached_calibrator(serving.artifact_sha256)
    if calibrator is None:
        answer, calibrator_segment = await run_in_threadpool(
            _calibrate_in_session, database, payload
        )
    else:
        answer = artifacts.calibrated_by(
            calibrator, serving, payload.scores, segment=payload.segment
        )
        calibrator_segment = serving.segment
    return Response(
        content=answer.model_dump_json(),
        media_type="application/json",
        headers={CALIBRATOR_SEGMENT_HEADER: calibrator_segment},
    )


def _calibrate_in_session(
    database: Database, payload: CalibrateRequest
) -> tuple[CalibrateResponse, str]:
    with database.session_scope(write=False) as session:
        model = service.get_serving(session, segment=payload.segment)
        return artifacts.calibrate(model, payload.scores, segment=payload.segment), model.segment
