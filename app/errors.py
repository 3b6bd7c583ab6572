"""Domain errors carrying their HTTP status, and the handlers that render every error as JSON."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5


class DomainError(Exception):
    """A rule of the service was broken; ``status_code`` says how the client hears it."""

    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail


class NotFoundError(DomainError):
    status_code = 404


class ConflictError(DomainError):
    status_code = 409


class PayloadTooLargeError(DomainError):
    status_code = 413


class InvalidInputError(DomainError):
    status_code = 422


class ErrorBody(BaseModel):
    """Every error answer: FastAPI's shape."""

    detail: Any


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` declaration of a route's error answers, for a true OpenAPI document."""
    texts = {
        400: "The body could not be read (not UTF-8 or not parseable)",
        401: "Missing or invalid API key",
        403: "The API key lacks the required scope",
        404: "Not found",
        409: "Conflict with the stored state",
        413: "Request too large",
        422: "Invalid input",
        503: "Database unavailable; retry after the given seconds",
    }
    return {code: {"model": ErrorBody, "description": texts[code]} for code in codes}


def _validation_detail(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The default handler echoes the input, and a NaN there breaks JSON encoding (a 500).
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in errors
    ]


def validation_error_response(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": _validation_detail(errors)})


def database_unavailable_response() -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"detail": "database unavailable, retry later"},
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def is_connection_error(exc: BaseException) -> bool:
    """True when a database error means the server is unreachable, not that a query is wrong."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        return not any(word in text for word in ("syntax", "no such", "does not exist"))
    return False


def _documented_methods(app: FastAPI) -> list[tuple[re.Pattern[str], str]]:
    """Each documented path as a regex, with its methods for an ``Allow`` header."""
    table = []
    for path, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        methods = ", ".join(sorted(method.upper() for method in operations))
        table.append((re.compile(f"^{pattern}$"), methods))
    return table


def install_error_handlers(app: FastAPI) -> None:
    allow_table: list[tuple[re.Pattern[str], str]] = []

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        # Starlette lists only the methods of the first route matching the path; list them all.
        if not allow_table:
            allow_table.extend(_documented_methods(app))
        path = request.url.path
        allowed = next((methods for pattern, methods in allow_table if pattern.match(path)), None)
        headers = dict(exc.headers or {})
        if allowed:
            headers["Allow"] = allowed
        return JSONResponse(status_code=405, content={"detail": exc.detail}, headers=headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(list(exc.errors()))

    @app.exception_handler(DBAPIError)
    async def _database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        if is_connection_error(exc):
            logger.warning("database unavailable: %s", type(exc.orig).__name__)
            return database_unavailable_response()
        raise exc

    @app.exception_handler(PoolTimeoutError)
    async def _pool_timeout(_request: Request, _exc: PoolTimeoutError) -> JSONResponse:
        logger.warning("database pool exhausted or unreachable")
        return database_unavailable_response()
