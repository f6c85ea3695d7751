"""`x-request-id` on every response, as OpenAI sends: what a user quotes when reporting a
problem, and what the API's log lines carry. A pure ASGI middleware, so streamed bodies pass
through untouched."""

from __future__ import annotations

import uuid

from starlette.types import Message, Receive, Scope, Send

from nightowl_api.http_middleware import HttpMiddleware

HEADER = b"x-request-id"


class RequestIdMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = f"req_{uuid.uuid4().hex}".encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message["headers"] = [*headers, (HEADER, request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)
