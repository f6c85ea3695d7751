"""The dashboard's side of API keys: browsers cannot send `Authorization: Bearer`, so a key
given once through the login form (a POST with a CSRF token, never the URL, which access logs
keep) opens a session (nightowl.platform.auth.open_session) whose random id lives in an HttpOnly
cookie; the key itself is never stored in the browser. This middleware turns the session back
into the tenant that the API's tenant dependency reads.

Only GET/HEAD requests to dashboard paths are authorised by it: a cookie that other sites' pages
can make a browser send must never authorise the API's writes (no CSRF through the dashboard).
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from anyio import to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nightowl.common.errors import Unauthorized
from nightowl.platform import auth
from nightowl.platform.auth import KEY_PREFIX

COOKIE = "nightowl_session"
_OPEN = ("/ui/static/", "/ui/login", "/ui/logout")


def is_dashboard_path(path: str) -> bool:
    return path == "/" or (path.startswith("/ui/") and not path.startswith(_OPEN))


def safe_next(target: str) -> str:
    """Only same-site paths: a login link must not bounce the key holder anywhere else."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _cookie_session(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            jar.load(value.decode("latin-1"))
            if COOKIE in jar and jar[COOKIE].value:
                return jar[COOKIE].value
    return None


class DashboardKeyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in ("GET", "HEAD")
                or not is_dashboard_path(scope["path"])):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        sid = _cookie_session(headers)
        if sid and not any(name == b"authorization" for name, _ in headers):
            tenant = await to_thread.run_sync(_session_tenant, sid)
            if tenant is not None:
                # The route's tenant dependency takes this answer (as from api/guard.py).
                scope.setdefault("state", {})["tenant_id"] = tenant
        if path.startswith("/ui/api/"):
            await self.app(scope, receive, send)  # scripts get the 401 itself
            return
        here = path + (f"?{scope['query_string'].decode('latin-1')}"
                       if scope.get("query_string") else "")
        login = f"/ui/login?next={quote(here, safe='')}" + ("&refused=1" if sid else "")
        await self.app(scope, receive, _redirect_401(send, login))


def _session_tenant(sid: str) -> str | None:
    from nightowl.common.config import get_settings
    from nightowl.platform.db import session_factory

    with session_factory(get_settings())() as session:
        try:
            return auth.session_tenant(session, sid)
        except Unauthorized:
            return None


def logout_token(request: Request) -> str:
    """The logout form's CSRF token for this browser's session ('' without one)."""
    sid = request.cookies.get(COOKIE, "")
    return auth.session_token(sid, "logout") if sid else ""


def _redirect_401(send: Send, location: str) -> Send:
    """A page that needs a key sends the browser to the login form instead of raw JSON."""
    state: dict[str, Any] = {"swallow": False}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            state["swallow"] = True
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode("latin-1")),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if not state["swallow"]:
            await send(message)

    return wrapped


CSRF_COOKIE = "nightowl_csrf"


def scrub_key_from_query(scope: Scope) -> bool:
    """Drop an API key from the query string in place, so that the access log (which reads
    this very scope) never records a key someone pasted into a URL. True if there was one.

    On the dashboard's pages every `key=` is one (the old `?key=` login). Elsewhere `key` is
    an ordinary parameter (GET /v1/finetunes/{id}/metrics?key=train/loss) and goes only when
    its value is an API key."""
    raw: bytes = scope.get("query_string", b"")
    # Judged on the decoded query, as the app reads it: `k%65y=` is `key=`, and `key=+nk-...`
    # is a key behind a space.
    if b"key" not in raw.lower() and b"%" not in raw:
        return False
    dashboard = is_dashboard_path(scope["path"])
    query = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in query
            if not (k.strip().lower() == "key"
                    and (dashboard or v.strip().startswith(KEY_PREFIX)))]
    if len(kept) == len(query):
        return False
    scope["query_string"] = urlencode(kept).encode()
    return True
