"""The serving lane's loop: a thread in every worker process that runs direct requests.

At each step it takes every direct request waiting on its queues' lanes (nightowl.jobs.lane),
groups them by model version and runs each group through the same engine and runners as batch
items, so concurrent requests share micro-batches and throughput rises with concurrency.
Streamed requests get their text published as it is generated. No SQL on this path: the
request carries what the worker needs, the answer goes back through Redis, and the API records
both in bulk afterwards.

Direct requests go ahead of bulk work in the same process: a chunk's micro-batch loop waits at
its next boundary while the lane has work (`GATE`), so a long chunk delays a direct request by
at most one micro-batch. The thread starts after the fork (torch must not run in a prefork
parent) and loads models lazily through the same per-process cache as chunks.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from functools import partial

import redis
import torch

from nightowl.common.config import Settings, get_settings
from nightowl.common.enums import ErrorCode, ItemStatus, Queue, TaskKind
from nightowl.common.errors import ArtifactError, ModelLoadError
from nightowl.common.items import ItemOutcome
from nightowl.jobs import lane
from nightowl.platform.broker import redis_client
from nightowl.storage.cache import local_dir
from nightowl_workers.cache import get_runner
from nightowl_workers.device import choose_device
from nightowl_workers.engine import WorkItem, run_batched

log = logging.getLogger(__name__)
# How often a streamed request's cancel mark is looked up while it generates.
CANCEL_CHECK_S = 0.25


class DeviceGate:
    """Direct requests first, between micro-batches: bulk work takes the device one
    micro-batch at a time and waits while the lane wants it; the lane waits only for the
    micro-batch in flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._bulk_holding = False
        self._lane_wants = 0
        self._lane_running = False

    def bulk_step(self) -> None:
        """Before each bulk micro-batch: let the lane run first if it has work."""
        with self._cond:
            self._bulk_holding = False
            self._cond.notify_all()
            while self._lane_wants or self._lane_running:
                self._cond.wait()
            self._bulk_holding = True

    def bulk_done(self) -> None:
        with self._cond:
            self._bulk_holding = False
            self._cond.notify_all()

    @contextmanager
    def lane(self) -> Iterator[None]:
        with self._cond:
            self._lane_wants += 1
            while self._bulk_holding:
                self._cond.wait()
            self._lane_wants -= 1
            self._lane_running = True
        try:
            yield
        finally:
            with self._cond:
                self._lane_running = False
                self._cond.notify_all()


GATE = DeviceGate()


class _CancelWatch:
    """Which of a step's streamed requests were cancelled, looked up at most every
    CANCEL_CHECK_S (generate() asks once per token)."""

    def __init__(self, r: redis.Redis, ids: list[str]) -> None:
        self.r, self.ids = r, ids
        self.gone: set[str] = set()
        self.checked = 0.0

    def stopped(self, request_id: str) -> bool:
        if time.monotonic() - self.checked >= CANCEL_CHECK_S:
            self.checked = time.monotonic()
            with suppress(redis.RedisError):
                self.gone = lane.cancelled(self.r, self.ids)
        return request_id in self.gone


class _Outbox:
    """Publishes on its own thread, in order: generation never waits on a Redis round trip,
    and a request's answer still follows all of its text."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.queue: queue.Queue[Callable[[redis.Redis], None]] = queue.Queue()
        threading.Thread(target=self._run, name="nightowl-lane-publish", daemon=True).start()

    def send(self, publish: Callable[[redis.Redis], None]) -> None:
        self.queue.put(publish)

    def _run(self) -> None:
        while True:
            publish = self.queue.get()
            try:
                publish(self.r)
            except redis.RedisError:
                log.warning("publishing a lane event failed", exc_info=True)


class _Deltas:
    """The text a generation step produced for a group's streamed requests, sent together."""

    def __init__(self, outbox: _Outbox) -> None:
        self.outbox = outbox
        self.pending: list[tuple[lane.LaneRequest, int, int, str]] = []

    def flush(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, []
            self.outbox.send(partial(lane.publish_deltas, deltas=pending))


class _Publisher:
    """A streamed request's listener: its settled text goes on its event stream, each step's
    with the group's others."""

    def __init__(self, deltas: _Deltas, req: lane.LaneRequest, item: int,
                 watch: _CancelWatch) -> None:
        self.deltas, self.req, self.item, self.watch = deltas, req, item, watch

    def text(self, choice: int, delta: str) -> None:
        self.deltas.pending.append((self.req, self.item, choice, delta))

    def step(self) -> None:
        self.deltas.flush()

    def stopped(self) -> bool:
        return self.watch.stopped(self.req.id)


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _outcome(o: ItemOutcome) -> lane.Outcome:
    code = o.error_code.value if isinstance(o.error_code, ErrorCode) else o.error_code
    return lane.Outcome(status=ItemStatus(o.status).value, output=o.output, error_code=code,
                        error_message=o.error_message, tokens_in=o.tokens_in,
                        tokens_out=o.tokens_out, started_at=_epoch(o.started_at),
                        finished_at=_epoch(o.finished_at))


class LaneLoop:
    """The lane thread of one worker process, with its liveness thread."""

    def __init__(self, settings: Settings, queues: list[str], name: str) -> None:
        self.settings, self.queues, self.name = settings, queues, name
        self.id = lane.new_worker_id()
        self.device = torch.device("cpu")
        self.outbox = _Outbox(redis_client(settings))

    def start(self) -> None:
        for target, what in ((self._alive, "alive"), (self._loop, "loop")):
            threading.Thread(target=target, name=f"nightowl-lane-{what}", daemon=True).start()

    def _alive(self) -> None:
        r = redis_client(self.settings)
        while True:
            try:
                lane.refresh_alive(r, self.id)
            except redis.RedisError:
                log.warning("the lane could not reach Redis; retrying")
            time.sleep(lane.ALIVE_EVERY_S)

    def _loop(self) -> None:
        # Here, not in the fork hook: that hook must return within 4 s.
        self.device = choose_device(self.settings.device)
        r = redis_client(self.settings)
        while True:
            try:
                taken = lane.take(r, self.queues, most=self.settings.max_batch_size,
                                  block_s=1.0)
            except redis.RedisError:
                time.sleep(1.0)
                continue
            if not taken:
                continue
            try:
                with GATE.lane():
                    self.serve(r, taken)
            except Exception as e:
                # Whatever was not answered gets an error, never silence until its timeout.
                log.exception("the lane failed on %d requests", len(taken))
                with suppress(redis.RedisError):
                    lane.publish_dones(r, [(req, lane.failed(
                        req, ItemStatus.FAILED, ErrorCode.MODEL_ERROR.value,
                        f"{type(e).__name__}: {e}", started=True)) for req in taken])

    def serve(self, r: redis.Redis, taken: list[lane.LaneRequest]) -> None:
        """Run one step: every request taken, grouped by model version."""
        gone = lane.mark_taken(r, taken, self.id)
        now = time.time()
        groups: dict[tuple[int, str], list[lane.LaneRequest]] = {}
        ended: list[tuple[lane.LaneRequest, lane.Done]] = []
        for req in taken:
            if req.id in gone:
                ended.append((req, lane.failed(req, ItemStatus.CANCELLED,
                                               ErrorCode.CANCELLED.value, "the caller went away",
                                               started=True)))
            elif req.deadline <= now:
                ended.append((req, lane.failed(req, ItemStatus.EXPIRED, ErrorCode.TIMEOUT.value,
                                               "the request waited past its deadline",
                                               started=True)))
            else:
                groups.setdefault((req.version_id, req.kind), []).append(req)
        lane.publish_dones(r, ended)
        for group in groups.values():
            self._run_group(r, group)

    def _run_group(self, r: redis.Redis, group: list[lane.LaneRequest]) -> None:
        first = group[0]
        kind = TaskKind(first.kind)
        try:
            runner = get_runner(kind=kind, version_key=str(first.version_id),
                                source=local_dir(first.source, first.sha256, self.settings),
                                revision=first.revision, settings=self.settings,
                                device=self.device)
        except (ModelLoadError, ArtifactError) as e:
            lane.publish_dones(r, [(req, lane.failed(req, ItemStatus.FAILED,
                                                     ErrorCode.MODEL_ERROR.value, str(e),
                                                     started=True)) for req in group])
            return
        watch = _CancelWatch(r, [req.id for req in group if req.stream])
        deltas = _Deltas(self.outbox)
        work: list[WorkItem] = []
        owner: dict[int, tuple[lane.LaneRequest, int]] = {}
        for req in group:
            follows = req.stream and kind is TaskKind.GENERATE
            for i, item in enumerate(req.items):
                listener = _Publisher(deltas, req, i, watch) if follows else None
                owner[len(work)] = (req, i)
                work.append(WorkItem(key=len(work), text=item.text, params=item.params,
                                     listener=listener))
        results: dict[str, list[lane.Outcome | None]] = {
            req.id: [None] * len(req.items) for req in group}
        started = time.perf_counter()
        for outcomes in run_batched(runner, work, max_batch_tokens=self.settings.max_batch_tokens,
                                    max_batch_size=self.settings.max_batch_size, truncate=False):
            deltas.flush()  # text held back to the end goes before the answer
            touched: dict[str, lane.LaneRequest] = {}
            for o in outcomes:
                req, i = owner[o.key]
                results[req.id][i] = _outcome(o)
                touched[req.id] = req
            # Each request is answered as soon as its last item is done, not with the group.
            answers = []
            for req in touched.values():
                done = results[req.id]
                if all(x is not None for x in done):
                    answers.append((req, lane.Done(
                        [x for x in done if x is not None], worker=self.name,
                        device=str(self.device), seconds=time.perf_counter() - started)))
            self.outbox.send(partial(lane.publish_dones, answers=answers))


def lane_queues() -> list[str]:
    """The inference queues this worker reads (its lane lists are theirs)."""
    named = os.environ.get("NIGHTOWL_WORKER_QUEUES", Queue.CPU.value).split(",")
    return [q.strip() for q in named if q.strip() and q.strip() != Queue.TRAIN.value]


def start_lane(name: str) -> LaneLoop | None:
    """Start this process's lane thread (after the fork), unless the lane is off or the worker
    reads no inference queue."""
    settings = get_settings()
    queues = lane_queues()
    if not settings.direct_lane or not queues:
        return None
    loop = LaneLoop(settings, queues, name)
    loop.start()
    return loop
