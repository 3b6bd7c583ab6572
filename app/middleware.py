"""ASGI middleware: the request size limits.

Oversized bodies are refused before they are read whole, with a JSON error: FastAPI's own
``max_body_size`` answers a declared oversize with plain text, which breaks the contract that
every error is ``{"detail": ...}``. The metadata limit is published for the request's validators.
"""

from __future__ import annotations

from contextvars import ContextVar

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_METADATA_BYTES = 4096
# CALIB_MAX_METADATA_BYTES of the app serving the current request. Request models are validated
# by FastAPI before any handler could pass settings in, so their validators read it here.
max_metadata_bytes: ContextVar[int] = ContextVar(
    "max_metadata_bytes", default=DEFAULT_MAX_METADATA_BYTES
)


class BodySizeLimitMiddleware:
    """413 when ``Content-Length`` or the streamed body exceeds ``max_bytes``; sets the request's
    ``max_metadata_bytes``."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_metadata_bytes = max_metadata_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = max_metadata_bytes.set(self.max_metadata_bytes)
        try:
            await self._limited(scope, receive, send)
        finally:
            max_metadata_bytes.reset(token)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        oversized = declared is not None and (
            not declared.isdigit() or int(declared) > self.max_bytes
        )
        received = 0

        async def limited_receive() -> Message:
            # A declared oversize is refused at the first read, before any byte of the body
            # is awaited; like a streamed one, after routing, so /metrics names its route.
            nonlocal received
            if oversized:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> HTTPException:
        # FastAPI re-raises HTTPExceptions met while reading the body; the rest of the body
        # is never read, so the connection cannot be reused.
        return HTTPException(
            413, f"request body exceeds {self.max_bytes} bytes", headers={"Connection": "close"}
        )
