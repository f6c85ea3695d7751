"""Dependencies as Annotated aliases: settings, a session per request, the calling tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from nightowl.config import Settings, get_settings
from nightowl.db import session_factory


def _settings() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]


def _session(settings: SettingsDep) -> Iterator[Session]:
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(_session)]


def _tenant() -> str | None:
    return None


# The tenant whose rows a request may see; None is the operator, who sees everything.
TenantDep = Annotated[str | None, Depends(_tenant)]
