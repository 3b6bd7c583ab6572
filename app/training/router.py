"""HTTP routes of training runs: start one (202), follow it, list the history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, status

from app.auth import Principal, require_scope
from app.config import SEGMENT_PATTERN
from app.deps import ReadSession, WriteSession
from app.errors import responses
from app.feedback.schemas import FeedbackStats
from app.params import CursorQuery
from app.training import service
from app.training.models import RunStatus, RunTrigger
from app.training.schemas import TrainingRunCreate, TrainingRunPage, TrainingRunRead

router = APIRouter(prefix="/v1/training-runs", tags=["training"])
# Feedback counts beside the training watermarks: only this domain knows both.
feedback_stats_router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(400, 401, 403, 409, 422, 503),
)
def start_training_run(
    request: Request,
    session: WriteSession,
    background: BackgroundTasks,
    principal: Annotated[Principal, Depends(require_scope("train"))],
    payload: TrainingRunCreate | None = None,
) -> TrainingRunRead:
    """Queue a training run; follow it at ``GET /v1/training-runs/{id}``."""
    payload = payload or TrainingRunCreate()
    run = request.app.state.pipeline.start_run(
        session,
        segment=payload.segment,
        force=payload.force,
        trigger=RunTrigger.API,
        requested_by=f"api:{principal.name}",
    )
    # Background tasks run after the response, so after the commit: the worker sees the row.
    background.add_task(request.app.state.training_runner.submit, run.id)
    return service.to_read(run)


@router.get(
    "", dependencies=[Depends(require_scope("read"))], responses=responses(401, 403, 422, 503)
)
def list_training_runs(
    session: ReadSession,
    segment: Annotated[str | None, Query(pattern=SEGMENT_PATTERN)] = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: CursorQuery = None,
) -> TrainingRunPage:
    """Run history, newest first."""
    return service.list_runs(session, segment=segment, status=status, limit=limit, cursor=cursor)


@router.get(
    "/{run_id}",
    dependencies=[Depends(require_scope("read"))],
    responses=responses(401, 403, 404, 422, 503),
)
def get_training_run(
    session: ReadSession, run_id: Annotated[int, Path(ge=1, le=2_147_483_647)]
) -> TrainingRunRead:
    """One run: its status, reason and evaluation results."""
    return service.to_read(service.get_run(session, run_id=run_id))


@feedback_stats_router.get(
    "/stats", dependencies=[Depends(require_scope("read"))], responses=responses(401, 403, 503)
)
def feedback_stats(session: ReadSession) -> FeedbackStats:
    """Totals by label and segment, how many records arrived since the last training, and per
    segment which calibrator serves it and how much it borrows from the pooled one."""
    return service.feedback_stats(session)
