"""The one shape of this API's pure ASGI middlewares: lifespan and websocket traffic passes
straight through, and an HTTP request goes to the subclass's `handle`. Pure ASGI (not
BaseHTTPMiddleware) so streamed bodies pass through untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request; the subclass calls `self.app` with whatever wrapping it adds."""
        raise NotImplementedError
