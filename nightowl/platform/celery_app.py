"""The Celery app, built from Settings. Producers send by task name; only workers import tasks."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from kombu.entity import Exchange
from kombu.entity import Queue as KQueue

from nightowl.common.config import Settings, get_settings
from nightowl.common.enums import Queue, TaskName

TASK_MODULES = ["nightowl_tasks.inference", "nightowl_tasks.maintenance",
                "nightowl_tasks.training", "nightowl_tasks.batches"]


def make_celery(settings: Settings) -> Celery:
    app = Celery("nightowl", broker=settings.broker_url, include=TASK_MODULES)
    app.conf.update(
        # Messages carry ids only, as JSON: a worker re-reads the row and checks the world itself.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        # No result backend: fan-in and results live in SQL (chords on Redis hang or run twice).
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        # acks_late alone still acks a task whose process died; this makes Redis redeliver it.
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Each queue its own exchange and routing key: with Celery's defaults all three were
        # bound to exchange "cpu" with key "cpu", so Redis copied a message into every queue.
        # New exchange names, because a Redis that ran the old setup still holds those bindings
        # (_kombu.binding.cpu) and would go on copying through them.
        task_queues=[KQueue(q.value, Exchange(f"nightowl.{q.value}"),  # type: ignore[no-untyped-call]
                            routing_key=q.value)
                     for q in Queue],
        task_default_queue=Queue.CPU.value,
        task_routes={TaskName.REAP.value: {"queue": Queue.CPU.value}},
        task_send_sent_event=True,
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Chunks are short; a lost one is re-sent by the reaper long before this.
            "visibility_timeout": 3600,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        },
        # No reaper entry: every worker runs the maintenance pass itself (nightowl_tasks.heartbeat);
        # beat only fires the SQL schedules.
        timezone="UTC",
    )
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery(get_settings())


def send(name: TaskName, args: list[Any], *, queue: str) -> None:
    get_celery().send_task(name.value, args=args, queue=queue, retry=False)
