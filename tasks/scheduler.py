"""A Celery beat scheduler that reads the `schedules` table: edits apply without a restart.

`celery -A nightowl_tasks.scheduler beat -S nightowl_tasks.scheduler:DatabaseScheduler` (what
`nightowl beat` runs). Static entries from the app's beat_schedule run as usual, in memory; every
`NIGHTOWL_SCHEDULE_POLL_SECONDS` (and at each schedule's next slot) the scheduler re-reads the
table and fires what is due through nightowl.scheduling.schedules.fire, whose unique schedule_runs
row makes a second beat harmless. Nothing here imports task code or torch: beat sends by name.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.beat import Scheduler

from nightowl.common.config import Settings, get_settings
from nightowl.platform.celery_app import make_celery
from nightowl.platform.db import dispose_engines, session_factory
from nightowl.platform.orm import utcnow
from nightowl.scheduling import schedules

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def beat_app() -> Celery:
    """The Celery app for a beat process: same config, but no task modules (and so no torch)."""
    app = make_celery(get_settings())
    app.conf.include = []
    return app


def __getattr__(name: str) -> Any:
    # `celery -A nightowl_tasks.scheduler` looks up `app`; built lazily so that a worker's
    # embedded beat, which only imports DatabaseScheduler, does not create a second app.
    if name == "app":
        return beat_app()
    raise AttributeError(name)


class DatabaseScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory entries plus the SQL schedules, re-read every few seconds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.settings: Settings = get_settings()
        self.poll_interval = self.settings.schedule_poll_seconds
        self.fired_by = f"beat:{socket.gethostname()}:{os.getpid()}"
        self._next_poll = 0.0  # monotonic
        self._wake_at: float | None = None  # wall clock of the next known slot
        # An embedded beat (`worker --beat`) is forked from the worker: no pooled connection
        # may cross that fork.
        dispose_engines()
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        delay: float = super().tick(*args, **kwargs)
        if time.monotonic() >= self._next_poll or (
                self._wake_at is not None and time.time() >= self._wake_at):
            self.poll()
        until_poll = max(0.0, self._next_poll - time.monotonic())
        until_slot = (max(0.0, self._wake_at - time.time()) if self._wake_at is not None
                      else until_poll)
        return min(delay, until_poll, until_slot)

    def poll(self) -> None:
        """Fire what is due and note the next slot. A database outage is logged, never fatal."""
        self._next_poll = time.monotonic() + self.poll_interval
        try:
            with session_factory(self.settings)() as session:
                schedules.fire_due(session=session, settings=self.settings, now=utcnow(),
                                   fired_by=self.fired_by)
                nxt = schedules.next_wakeup(session, utcnow())
                session.commit()
        except Exception as e:
            log.warning("beat could not read schedules (retry in %.0fs): %s",
                        self.poll_interval, e)
            self._wake_at = None
            return
        self._wake_at = nxt.timestamp() if nxt is not None else None

    @property
    def info(self) -> str:
        return (f"    . db schedules: polled every {self.poll_interval:g}s "
                f"({self.settings.sqlalchemy_url.split('@')[-1]})")
