"""Periodic upkeep: the reaper re-sends lost chunks, frees dead leases and expires deadlines."""

from __future__ import annotations

from nightowl.common.config import get_settings
from nightowl.common.enums import TaskName
from nightowl.fleet.reaper import reap
from nightowl.platform import broker
from nightowl.platform.db import session_scope
from nightowl_tasks.app import app


@app.task(name=TaskName.REAP.value)
def reap_task() -> dict[str, int]:
    settings = get_settings()
    with session_scope(settings) as session:
        report = reap(session, settings, queue_depth=lambda q: broker.queue_depth(settings, q))
    return report.__dict__
