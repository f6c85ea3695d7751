"""Riding out a database restart: retry a unit of SQL work with backoff instead of losing it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_db_retry(
    fn: Callable[[], T],
    *,
    session: Session | None = None,
    attempts: int = 10,
    first_delay: float = 0.5,
) -> T:
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (OperationalError, DBAPIError) as e:
            if session is not None:
                session.rollback()
            if attempt == attempts or not _transient(e):
                raise
            log.warning("database unavailable (%s); retry %d in %.1fs", e.orig, attempt, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
    raise AssertionError("unreachable")


def _transient(e: DBAPIError) -> bool:
    return isinstance(e, OperationalError) or bool(e.connection_invalidated)
