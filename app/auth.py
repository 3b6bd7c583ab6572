"""API keys with scopes: ``Authorization: Bearer KEY`` or ``X-API-Key``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer

from app.errors import DomainError

# The two ways of presenting a key, as the OpenAPI document names them.
_bearer = HTTPBearer(auto_error=False)
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_SCHEMES = (_bearer, _api_key_header)
_GUARDS: set[Callable[..., Any]] = set()  # the dependencies require_scope made


class UnauthorizedError(DomainError):
    status_code = 401
    # RFC 9110 section 11.6.1: a 401 names the scheme the client should answer with.
    headers = {"WWW-Authenticate": 'Bearer realm="calibration-service"'}


class ForbiddenError(DomainError):
    status_code = 403


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's fingerprint (never the key) and its scopes."""

    name: str
    scopes: frozenset[str]


ANONYMOUS = Principal(
    name="anonymous", scopes=frozenset({"feedback:write", "read", "train", "admin"})
)


def _fingerprint(key: str) -> str:
    """A short, stable name for a key that reveals nothing of it (for logs and events)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _match_key(presented: str, keys: dict[str, list[str]]) -> Principal | None:
    found: Principal | None = None
    # Compare against every key, in constant time each, so timing reveals nothing.
    for key, scopes in keys.items():
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = Principal(name=f"key:{_fingerprint(key)}", scopes=frozenset(scopes))
    return found


def presented_key(request: Request) -> str | None:
    """The key a request presents: the credentials of ``Authorization: Bearer``, else
    ``X-API-Key``, read as FastAPI's ``HTTPBearer`` and ``APIKeyHeader`` read them."""
    headers = request.headers
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if credentials and scheme.lower() == "bearer":
            return credentials
    return headers.get(_api_key_header.model.name) or None


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers whose key has ``scope`` (or ``admin``)."""

    # One dependency reading the headers itself: FastAPI's per-dependency work (cache keys,
    # query and cookie parsing) for HTTPBearer and APIKeyHeader as sub-dependencies cost more
    # than the check. ``document_api_keys`` puts both schemes in the OpenAPI document.
    # async: it does no I/O, and a plain def would cost every request a thread-pool hop.
    async def dependency(request: Request) -> Principal:
        keys: dict[str, list[str]] = request.app.state.settings.api_keys
        if not keys:
            return ANONYMOUS
        presented = presented_key(request)
        principal = _match_key(presented, keys) if presented else None
        if principal is None:
            raise UnauthorizedError("missing or invalid API key")
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise ForbiddenError(f"this API key lacks the '{scope}' scope")
        return principal

    _GUARDS.add(dependency)
    return dependency


def _guarded(dependant: Dependant) -> bool:
    return dependant.call in _GUARDS or any(_guarded(sub) for sub in dependant.dependencies)


def document_api_keys(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Declare both ways of presenting a key on every route of ``routers`` that asks for one,
    in the OpenAPI document, as FastAPI does for security dependencies."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemes = {
            scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
            for scheme in _SCHEMES
        }
        requirement = [{scheme.scheme_name: []} for scheme in _SCHEMES]
        guarded = [
            route
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.include_in_schema and _guarded(route.dependant)
        ]
        for route in guarded:
            for method in route.methods:
                schema["paths"][route.path_format][method.lower()]["security"] = requirement
        if guarded:
            schema.setdefault("components", {})["securitySchemes"] = schemes
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
