"""Periodic upkeep: the reaper re-sends lost chunks, frees dead leases and expires deadlines."""

from __future__ import annotations

from nightowl import broker
from nightowl.config import get_settings
from nightowl.db import session_scope
from nightowl.enums import TaskName
from nightowl.reaper import reap
from nightowl_tasks.app import app


@app.task(name=TaskName.REAP.value)
def reap_task() -> dict[str, int]:
    settings = get_settings()
    with session_scope(settings) as session:
        report = reap(session, settings, queue_depth=lambda q: broker.queue_depth(settings, q))
    return report.__dict__
