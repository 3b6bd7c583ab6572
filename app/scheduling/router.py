"""HTTP route of the scheduler's status."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.auth import require_scope
from app.errors import responses
from app.scheduling.schemas import SchedulerStatus

router = APIRouter(tags=["scheduler"])


@router.get(
    "/v1/scheduler",
    dependencies=[Depends(require_scope("read"))],
    responses=responses(401, 403),
)
def scheduler_status(request: Request) -> SchedulerStatus:
    """Whether the scheduler runs, and each job's trigger, next run time and last outcome."""
    return request.app.state.scheduler.get_scheduler_status()
