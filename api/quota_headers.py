"""Puts the x-ratelimit-* headers a route's dependency counted (api/deps.py) on its answer,
whatever the answer: a result, a stream, or the 429 of a quota. A pure ASGI middleware, so
streamed bodies pass through untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class QuotaHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            extra = scope.get("state", {}).get("quota_headers")
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", []),
                                      *((k.encode(), v.encode()) for k, v in extra.items())]
            await send(message)

        await self.app(scope, receive, send_with_headers)
