"""The worker's Celery app (`celery -A tasks.app worker`), with process hooks for torch and SQL."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_init, worker_ready

from nightowl.celery_app import get_celery
from nightowl.config import offline_hub
from nightowl.db import dispose_engines
from nightowl.enums import Queue, TaskName

log = logging.getLogger(__name__)
app = get_celery()
offline_hub()


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pooled SQL connections must not cross a fork; models load lazily on first use because
    # this hook is killed after 4 s.
    dispose_engines()


@worker_ready.connect
def _reap_on_start(sender: Any = None, **_: Any) -> None:
    # A fresh worker picks up what a dead one or a restarted broker left behind.
    try:
        app.send_task(TaskName.REAP.value, queue=Queue.CPU.value)
    except Exception as e:  # the broker just answered the worker; a failure here is transient
        log.warning("could not queue the start-up reap: %s", e)


def worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"
