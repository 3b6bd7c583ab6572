"""Request-scoped dependencies: the settings, and sessions that own the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database


# async: FastAPI runs a plain ``def`` dependency in the thread pool, a hop for an attribute.
async def get_database(request: Request) -> Database:
    return request.app.state.database


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _read_session(request: Request) -> Iterator[Session]:
    with request.app.state.database.session_scope(write=False) as session:
        yield session


def _write_session(request: Request) -> Iterator[Session]:
    with request.app.state.database.session_scope(write=True) as session:
        yield session


# scope="function": commit before the response is sent, so a 2xx means the data is stored.
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]
WriteSession = Annotated[Session, Depends(_write_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
