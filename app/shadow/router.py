"""HTTP routes of champion/challenger comparisons (included before the registry's routes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth import Principal, require_scope
from app.deps import DatabaseDep, SettingsDep, WriteSession
from app.errors import responses
from app.params import SegmentPath, VersionPath
from app.shadow import service
from app.shadow.schemas import ShadowComparisonRead
from app.shadow.service import ShadowPolicy

router = APIRouter(tags=["shadow"])

Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.post(
    "/v1/models/{segment}/{version}/shadow",
    status_code=201,
    responses=responses(401, 403, 404, 409, 422, 503),
)
def start_shadow(
    session: WriteSession,
    settings: SettingsDep,
    segment: SegmentPath,
    version: VersionPath,
    principal: Admin,
) -> ShadowComparisonRead:
    """Compare this version (challenger) with the active one on feedback received from now on."""
    comparison = service.start(
        session,
        segment=segment,
        version=version,
        actor=f"api:{principal.name}",
        alpha=settings.shadow_alpha,
    )
    return service.to_read(comparison)


@router.get(
    "/v1/models/{segment}/shadow",
    dependencies=[Depends(require_scope("read"))],
    responses=responses(401, 403, 404, 422, 503),
)
def get_shadow(
    database: DatabaseDep, settings: SettingsDep, segment: SegmentPath
) -> ShadowComparisonRead:
    """The segment's latest comparison, brought up to the newest feedback first."""
    return service.current(database, ShadowPolicy.from_settings(settings), segment=segment)


@router.delete(
    "/v1/models/{segment}/shadow",
    responses=responses(401, 403, 404, 422, 503),
)
def stop_shadow(
    session: WriteSession, segment: SegmentPath, principal: Admin
) -> ShadowComparisonRead:
    """Stop the running comparison (status ``stopped``); an ended one is returned as it is."""
    return service.to_read(service.stop(session, segment=segment, actor=f"api:{principal.name}"))
