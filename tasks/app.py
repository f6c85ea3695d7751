"""The worker's Celery app (`celery -A nightowl_tasks.app worker`), with process hooks for torch
and SQL."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from nightowl.common.config import offline_hub
from nightowl.fleet.heartbeats import owner_prefix
from nightowl.platform.celery_app import get_celery
from nightowl.platform.db import dispose_engines
from nightowl_tasks.heartbeat import WORKER_ID, Heartbeat
from nightowl_tasks.serving import start_lane

log = logging.getLogger(__name__)
app = get_celery()
offline_hub()


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pooled SQL connections must not cross a fork; models load lazily on first use because
    # this hook is killed after 4 s (starting the lane's thread is instant; it loads lazily).
    dispose_engines()
    start_lane(worker_name())


_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    # Heartbeats and the maintenance pass run in this (parent) process; its first pass picks
    # up at once what a dead worker or a restarted broker left behind.
    global _heartbeat
    name = str(getattr(sender, "hostname", "") or worker_name())
    queues = os.environ.get("NIGHTOWL_WORKER_QUEUES", "")
    concurrency = int(os.environ.get("NIGHTOWL_WORKER_CONCURRENCY", "1"))
    _heartbeat = Heartbeat(name, queues, concurrency)
    _heartbeat.start()
    if os.environ.get("NIGHTOWL_WORKER_POOL") == "solo":
        # One process runs the tasks (a GPU worker): the lane runs beside them here.
        start_lane(worker_name())


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def worker_name() -> str:
    """What result rows name as their worker: the node (or `--hostname`) and the process."""
    return f"{os.environ.get('NIGHTOWL_WORKER_NAME') or os.uname().nodename}:{os.getpid()}"


def lease_owner() -> str:
    """Who holds a lease: this worker's id first, so the fleet frees it if the worker dies."""
    return f"{owner_prefix(WORKER_ID)}{worker_name()}:{uuid.uuid4().hex[:8]}"
