"""Is anything there to run a queued job? The broker's ping and the workers consuming a queue,
asked once when a job makes no progress, so a user hears why within seconds instead of
watching a bar stuck at 0."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nightowl.common.config import EMBEDDED, Settings
from nightowl.platform import broker

log = logging.getLogger(__name__)
# Control replies come within milliseconds from an idle worker; a busy solo worker may not
# answer at all, which the warning's wording allows for.
INSPECT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class QueueHealth:
    queue: str
    broker: bool
    workers: int | None  # None: the broker is down, nobody could be asked

    def warning(self, settings: Settings) -> str | None:
        if not self.broker:
            return broker_down_message(settings)
        if self.workers == 0:
            return (f"no worker is consuming the {self.queue!r} queue, so the job waits "
                    f"queued: start one with `nightowl worker -Q {self.queue}` (or run "
                    "`nightowl up`, which starts one for every queue)")
        return None


def broker_down_message(settings: Settings) -> str:
    if settings.redis_url == EMBEDDED:
        return (f"no broker is running (the embedded one listens on {settings.embedded_socket} "
                "while `nightowl up` runs): start `nightowl up` in another shell with the same "
                "NIGHTOWL_HOME, or set NIGHTOWL_REDIS_URL to a running Redis")
    return (f"the broker at {settings.redis_url} does not answer: start it, or set "
            "NIGHTOWL_REDIS_URL to a running Redis")


def workers_on(settings: Settings, queue: str) -> int | None:
    """How many workers answer that they consume `queue`; None if they cannot be asked."""
    from nightowl.platform.celery_app import get_celery

    try:
        replies = get_celery().control.inspect(timeout=INSPECT_TIMEOUT_S).active_queues() or {}
    except Exception as e:  # any broker trouble means "cannot tell"
        log.warning("celery inspect failed: %s", e)
        return None
    return sum(1 for queues in replies.values()
               if any(q.get("name") == queue for q in queues or []))


def queue_health(settings: Settings, queue: str) -> QueueHealth:
    if not broker.ping(settings):
        return QueueHealth(queue=queue, broker=False, workers=None)
    return QueueHealth(queue=queue, broker=True, workers=workers_on(settings, queue))
