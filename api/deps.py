"""Dependencies as Annotated aliases: settings, a session per request, the calling tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.common.values import check_text
from nightowl.jobs import quotas
from nightowl.platform import auth
from nightowl.platform.db import session_scope


def _settings() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]


def _session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings) as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


_bearer = HTTPBearer(auto_error=False, description="A nightowl API key (`nightowl keys create`)")


def _tenant(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    checked = getattr(request.state, "tenant_id", None)
    if isinstance(checked, str):
        return checked  # api/guard.py checked the key before the body was read
    tenant = auth.authenticate(session, credentials.credentials if credentials else None)
    # End the transaction now: on SQLite an open one holds the write lock through a long upload.
    session.commit()
    return tenant


# The tenant whose rows a request may see, from its `Authorization: Bearer KEY` (else 401).
# Every tenant sees only its own rows; the operator (None, sees all) exists only in the CLI.
TenantDep = Annotated[str, Depends(_tenant)]
# For routers whose handlers do not need the tenant but must still refuse anonymous callers.
require_key = Depends(_tenant)


async def _storable_body(request: Request) -> None:
    """A JSON body's every string must be storable text (no NUL, no lone surrogate): refused
    here, naming the field, before any route can pass it to the database or an encoder."""
    if "json" not in request.headers.get("content-type", ""):
        return
    try:
        body = await request.json()  # cached: FastAPI parsed it already for the route
    except (ValueError, RecursionError):
        return  # not JSON, or nested past parsing: the route's own parsing answers that
    check_text("body" if not isinstance(body, dict) else "", body)


storable_body = Depends(_storable_body)


def _quota_headers(request: Request, session: SessionDep, tenant: TenantDep) -> None:
    """x-ratelimit-* headers for a request that queues work under a quota, counted before it
    runs; api/quota_headers.py puts them on its answer, a 429 included."""
    request.state.quota_headers = quotas.rate_headers(session, tenant)
    session.commit()


# On routes that queue work (direct requests, batches, jobs): where a tenant's quota applies.
quota_headers = Depends(_quota_headers)
