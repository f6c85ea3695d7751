"""The gate in front of routing: a request's key is checked, and its body size bounded, before
any byte of the body is read or spooled; every answer carries the browser hardening headers.

Route dependencies run only after FastAPI has parsed (and for multipart, spooled to disk) the
body, so they cannot do either job: 150 MB of JSON without a key would be read before the 401.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote_plus

from anyio import to_thread
from starlette.types import Message, Receive, Scope, Send

from nightowl.common.config import get_settings
from nightowl.common.errors import Unauthorized
from nightowl.platform import auth
from nightowl.platform.db import session_factory
from nightowl_api.dashboard_auth import is_dashboard_path, scrub_key_from_query
from nightowl_api.errors import error_content
from nightowl_api.http_middleware import HttpMiddleware

# Paths under /v1 that answer without a key (none today), and what needs none elsewhere.
_OPEN_V1: tuple[str, ...] = ()
UPLOAD_PATHS = ("/v1/files",)
# Slack over the file limit for the multipart envelope (boundaries, part headers, purpose).
MULTIPART_SLACK = 64 * 1024
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
     b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class BodyTooLarge(Exception):
    pass


def _error(status: int, message: str, code: str, extra: list[tuple[bytes, bytes]]
           ) -> tuple[dict[str, Any], bytes]:
    body = json.dumps(error_content(status, message, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length",
               str(len(body)).encode()), (b"x-should-retry", b"false"), *extra]
    return {"type": "http.response.start", "status": status, "headers": headers}, body


async def _answer(send: Send, status: int, message: str, code: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    start, body = _error(status, message, code, [*SECURITY_HEADERS, *(extra or [])])
    await send(start)
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _check_key(key: str | None) -> str:
    settings = get_settings()
    session = session_factory(settings)()
    try:
        tenant = auth.authenticate(session, key)
        session.commit()
        return tenant
    finally:
        session.close()


class GuardMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = _with_headers(send)
        path: str = scope["path"]
        if scrub_key_from_query(scope) and is_dashboard_path(path):
            # The old `?key=` login: refused, and the key is already out of the log line.
            await _redirect(send, "/ui/login?next=" + quote(path, safe=""))
            return
        if "\x00" in path or "\x00" in unquote_plus(scope.get("query_string", b"").decode(
                "latin-1")):
            # The same rule as for bodies (nightowl.common.values.check_text): no id, name or
            # filter holds a NUL, so none reaches the database, which refuses it in text.
            await _answer(send, 400, "the URL holds a NUL character (%00); no id, name or "
                          "parameter can contain one", "invalid_request")
            return
        if path.startswith("/v1/") and not path.startswith(_OPEN_V1):
            try:
                tenant = await to_thread.run_sync(_check_key, _bearer(scope))
            except Unauthorized as e:
                await _answer(send, 401, str(e), "invalid_api_key",
                              [(b"www-authenticate", b"Bearer")])
                return
            # The route's tenant dependency reuses this answer instead of asking again.
            scope.setdefault("state", {})["tenant_id"] = tenant
        settings = get_settings()
        upload = path.startswith(UPLOAD_PATHS)
        limit = settings.max_upload_bytes + MULTIPART_SLACK if upload else settings.max_body_bytes
        setting = "NIGHTOWL_MAX_UPLOAD_BYTES" if upload else "NIGHTOWL_MAX_BODY_BYTES"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, f"request body of {declared} bytes is over the limit of "
                          f"{limit} bytes ({setting}); split the input, or upload a file and "
                          "name its id",
                          "request_too_large")
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            # A chunked body with no Content-Length: stopped as soon as it passes the limit,
            # answered here, and whatever the app makes of the interruption is dropped.
            nonlocal seen, started, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not started:
                        started = refused = True
                        await _answer(send, 413, f"request body is over the limit of {limit} "
                                      f"bytes ({setting}); split the input", "request_too_large")
                    raise BodyTooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except Exception:
            if not refused:
                raise


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")),
                            (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped
