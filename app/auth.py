"""API keys with scopes: ``Authorization: Bearer KEY`` or ``X-API-Key``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import DomainError

_bearer = HTTPBearer(auto_error=False)
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


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


def require_scope(scope: str) -> Callable[..., Principal]:
    """A dependency admitting callers whose key has ``scope`` (or ``admin``)."""

    # async: it does no I/O, and a plain def would cost every request a thread-pool hop.
    async def dependency(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        api_key: str | None = Depends(_api_key_header),
    ) -> Principal:
        keys: dict[str, list[str]] = request.app.state.settings.api_keys
        if not keys:
            return ANONYMOUS
        presented = bearer.credentials if bearer is not None else api_key
        principal = _match_key(presented, keys) if presented else None
        if principal is None:
            raise UnauthorizedError("missing or invalid API key")
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise ForbiddenError(f"this API key lacks the '{scope}' scope")
        return principal

    return dependency
