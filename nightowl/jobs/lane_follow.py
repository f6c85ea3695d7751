"""The API's side of the serving lane: push a request, then follow its events to the end.

`follow` is the one relay every direct endpoint streams through (chat, completions, and any
later endpoint that generates text): it yields the text deltas as the worker publishes them
and ends with the request's outcome. It never hangs past the request's deadline: a caller that
goes away cancels the request, a passed deadline answers as timed out, and a worker that dies
holding the request gives it back to the lane once (if nothing was streamed yet) or ends it
with an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from nightowl.common.config import Settings
from nightowl.common.enums import ErrorCode, ItemStatus
from nightowl.jobs.lane import (
    KEEP_S,
    Done,
    LaneRequest,
    alive_key,
    cancel_key,
    events_key,
    failed,
    queue_key,
)
from nightowl.platform.broker import broker_url

log = logging.getLogger(__name__)
# How often a waiting caller looks up from the stream to check its deadline, its client and
# the liveness of the worker holding its request.
LOOK_UP_S = 0.5
# Times a request whose worker died goes back to the lane before it is answered with an error.
MAX_GIVE_BACKS = 1
WORKER_LOST = "worker_lost"

_clients: dict[tuple[int, str], aioredis.Redis] = {}


def client(settings: Settings) -> aioredis.Redis:
    """One connection pool per event loop and broker (an async pool is bound to its loop)."""
    key = (id(asyncio.get_running_loop()), broker_url(settings))
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = aioredis.Redis.from_url(
            key[1], socket_connect_timeout=2, max_connections=1024)
    return found


@dataclass
class Event:
    """A text delta (item, choice, text) or, last, the request's outcome (`done`)."""

    item: int = 0
    choice: int = 0
    text: str = ""
    done: Done | None = None


async def push(r: aioredis.Redis, req: LaneRequest) -> None:
    await r.rpush(queue_key(req.queue), req.dumps())


async def cancel(r: aioredis.Redis, request_id: str) -> None:
    await r.set(cancel_key(request_id), "1", ex=KEEP_S * 5)


_tasks: set[asyncio.Task[Any]] = set()


def _background(work: Awaitable[Any]) -> None:
    """Run `work` on its own task: a cancelled caller (a client that hung up) cannot await."""

    async def run() -> None:
        try:
            await work
        except Exception:
            log.warning("lane cleanup failed", exc_info=True)

    task = asyncio.ensure_future(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def abandon(r: aioredis.Redis, request_id: str) -> None:
    """Nobody waits for this request any more: the worker skips or stops it."""

    async def run() -> None:
        await cancel(r, request_id)
        await r.delete(events_key(request_id))

    _background(run())


async def follow(r: aioredis.Redis, req: LaneRequest, *,
                 gone: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[Event]:
    """The request's deltas as they come, then its outcome. `gone()` says whether the caller
    went away (then the request is cancelled and nothing more is yielded)."""
    key = events_key(req.id)
    last: Any = "0-0"
    holder: str | None = None
    streamed = False
    ended = False
    try:
        while True:
            left = req.deadline - time.time()
            if left <= 0:
                await cancel(r, req.id)
                ended = True
                yield Event(done=failed(req, ItemStatus.EXPIRED, ErrorCode.TIMEOUT.value,
                                        f"request {req.id} did not finish in time; is a "
                                        "worker running?"))
                return
            reply: Any = await r.xread({key: last}, count=256,
                                       block=max(1, int(1000 * min(LOOK_UP_S, left))))
            if not reply:
                if gone is not None and await gone():
                    return
                if holder is not None and not await r.exists(alive_key(holder)):
                    if streamed or req.attempts >= MAX_GIVE_BACKS:
                        ended = True
                        yield Event(done=failed(req, ItemStatus.FAILED, WORKER_LOST,
                                                "the worker running this request died; "
                                                "send it again"))
                        return
                    # Nothing reached the caller yet: another worker can run it from the start.
                    req.attempts += 1
                    holder = None
                    await r.lpush(queue_key(req.queue), req.dumps())
                continue
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    kind, data = fields[b"e"].decode(), fields[b"d"]
                    if kind == "taken":
                        holder = _json(data)["worker"]
                    elif kind == "delta":
                        streamed = True
                        delta = _json(data)
                        yield Event(item=delta["item"], choice=delta["choice"],
                                    text=delta["text"])
                    elif kind == "done":
                        ended = True
                        yield Event(done=Done.loads(data))
                        return
    finally:
        # A caller that went away (a closed stream, a disconnect) cancels the work; either way
        # nobody reads these events any more.
        if ended:
            _background(r.delete(key))
        else:
            abandon(r, req.id)


def _json(raw: bytes) -> Any:
    return json.loads(raw)
