"""ASGI middleware: refuse oversized bodies before reading them whole, with a JSON error.

FastAPI's own ``max_body_size`` answers a declared oversize with plain text, which breaks the
contract that every error is ``{"detail": ...}``.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimitMiddleware:
    """413 when ``Content-Length`` or the streamed body exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
