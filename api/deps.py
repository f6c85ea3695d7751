"""Dependencies as Annotated aliases: settings, a session per request, the calling tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
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
