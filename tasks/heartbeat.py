"""A thread in the worker's main process: heartbeats into SQL and the maintenance pass.

It lives in the Celery parent, never in the pool children that run models, so a long forward
does not delay a heartbeat and the hot path pays nothing. Every worker runs the maintenance
pass on a timer (NIGHTOWL_REAP_INTERVAL_SECONDS) and a cheap dead-worker check at every beat:
recovery needs no beat process and no single reaper.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.fleet import heartbeats as fleet
from nightowl.fleet.reaper import reap
from nightowl.fleet.views import WorkerInfo
from nightowl.platform import broker
from nightowl.platform.db import session_factory
from nightowl.platform.orm import new_id

log = logging.getLogger(__name__)
MAINTENANCE_KEY = "nightowl:maintenance"

# Set by `nightowl worker` before exec, inherited by the pool's children: lease owners start
# with it, so the fleet can free a dead worker's leases by prefix.
WORKER_ID = os.environ.setdefault("NIGHTOWL_WORKER_ID", new_id("w")[:26])
# Items finished by this worker's children; created before the pool forks, so shared with it.
_items = multiprocessing.Value("q", 0)


def count_items(n: int) -> None:
    with _items.get_lock():
        _items.value += n


def pid_alive(pid: int) -> bool:
    """Whether a process of this host still runs. On Linux a zombie (killed, not yet reaped
    by the pool) counts as gone."""
    if _PROC.is_dir():
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PROC = Path("/proc/self").resolve().parent


def device_label(device: str) -> str:
    """What `auto` will pick, told without torch (the parent must never import it): CUDA's
    first card where the driver shows one, else the CPU."""
    if device != "auto":
        return device
    return "cuda:0" if Path("/dev/nvidia0").exists() else "cpu"


def interval(settings: Settings) -> float:
    # Four beats per dead-after window: one late beat never gets a live worker declared dead.
    return max(0.5, settings.worker_dead_after / 4)


class Heartbeat(threading.Thread):
    def __init__(self, name: str, queues: str, concurrency: int) -> None:
        super().__init__(name="nightowl-heartbeat", daemon=True)
        self.settings = get_settings()
        self.info = WorkerInfo(
            id=WORKER_ID, name=name, host=socket.gethostname(), pid=os.getpid(),
            queues=queues, device=device_label(self.settings.device), concurrency=concurrency)
        self.stopping = threading.Event()

    def run(self) -> None:
        make = session_factory(self.settings)
        last_items, last_beat = 0, time.monotonic()
        next_beat = next_reap = 0.0  # a fresh worker picks up at once what a dead one left
        registered = False
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                with make() as session:
                    if not registered:
                        fleet.register(session, self.info)
                        registered = True
                    beat = now >= next_beat
                    if beat:
                        next_beat = now + interval(self.settings)
                        done = int(_items.value)
                        rate = (done - last_items) / max(now - last_beat, 1e-6)
                        last_items, last_beat = done, now
                        self._beat(session, done, rate)
                    full = now >= next_reap and self._my_turn()
                    if full:
                        next_reap = now + self.settings.reap_interval_seconds
                    if beat or full:  # on SQLite every transaction takes the write lock
                        fleet.maintenance_pass(session, self.settings, self._reap, full=full)
            except Exception as e:  # a database or broker outage: keep beating, log once a beat
                log.warning("heartbeat or maintenance pass failed: %s", e)
            self.stopping.wait(min(interval(self.settings),
                                   self.settings.reap_interval_seconds))

    def _beat(self, session: Session, done: int, rate: float) -> None:
        if not fleet.heartbeat(session, WORKER_ID, items_done=done, items_per_s=rate,
                               lease_seconds=self.settings.lease_seconds,
                               pid_alive=pid_alive):
            log.warning("this worker had been declared dead (no heartbeat for %.0f s); its "
                        "leases went to others", self.settings.worker_dead_after)

    def _my_turn(self) -> bool:
        """One full pass per interval across the fleet, not one per worker: the first worker
        to take the broker's short-lived key runs it (SQLite has no advisory lock, and every
        pass takes its write lock). With the broker down, each runs its own."""
        try:
            return bool(broker.redis_client(self.settings).set(
                MAINTENANCE_KEY, WORKER_ID, nx=True,
                px=max(1, int(self.settings.reap_interval_seconds * 1000 * 0.9))))
        except RedisError:
            return True

    def _reap(self, session: Session) -> None:
        report = reap(session, self.settings,
                      queue_depth=lambda q: broker.queue_depth(self.settings, q))
        if any(report.__dict__.values()):
            log.info("maintenance pass: %s", report.__dict__)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        try:
            with session_factory(self.settings)() as session:
                # The items finished since the last beat count too: a worker stopped right
                # after its last chunk showed hundreds fewer than it ran.
                fleet.mark_stopped(session, WORKER_ID, items_done=int(_items.value))
        except Exception as e:
            log.warning("could not mark this worker stopped: %s", e)
