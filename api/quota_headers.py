"""Puts the x-ratelimit-* headers a route's dependency counted (api/deps.py) on its answer,
whatever the answer: a result, a stream, or the 429 of a quota. A pure ASGI middleware, so
streamed bodies pass through untouched."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from nightowl_api.http_middleware import HttpMiddleware


class QuotaHeadersMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            extra = scope.get("state", {}).get("quota_headers")
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", []),
                                      *((k.encode(), v.encode()) for k, v in extra.items())]
            await send(message)

        await self.app(scope, receive, send_with_headers)
