"""The serving lane: direct requests and their answers travel through Redis, keyed by request id.

A batch wants SQL as the truth for every chunk; an interactive request wants milliseconds. So a
direct request skips the job tables on its way: the API pushes it onto its queue's lane list,
a worker process's lane loop takes every request waiting there at each step and runs them
together through the same runners and engine as batch items, and publishes what it produces on
the request's own event stream. SQL records the request afterwards, in bulk
(nightowl.jobs.lane_record).

Keys (redis, the broker's database):
  nightowl:lane:q:{queue}      list of waiting requests (JSON); the API pushes at the tail,
                               workers pop from the head, a request given back goes to the head
  nightowl:lane:ev:{id}        stream of the request's events: taken (by which worker), delta
                               (text as it is generated), done (every item's outcome)
  nightowl:lane:cancel:{id}    set when the caller went away: the worker skips or stops it
  nightowl:lane:alive:{worker} a worker's liveness, refreshed every second while it lives: when
                               the worker that took a request dies, the API sees this key go
                               and gives the request back (or answers with an error)
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from nightowl.common.enums import ItemStatus

PREFIX = "nightowl:lane"
# How long a worker's liveness key outlives its last refresh: a SIGKILLed worker's requests
# are noticed this many seconds after it died.
ALIVE_S = 3
ALIVE_EVERY_S = 1.0
# Deltas kept per request stream: far more than any answer has tokens; only a bound.
STREAM_MAXLEN = 10_000
# Event streams and cancel marks outlive the request's deadline by this much, then expire.
KEEP_S = 60


def queue_key(queue: str) -> str:
    return f"{PREFIX}:q:{queue}"


def events_key(request_id: str) -> str:
    return f"{PREFIX}:ev:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"{PREFIX}:cancel:{request_id}"


def alive_key(worker: str) -> str:
    return f"{PREFIX}:alive:{worker}"


@dataclass
class LaneItem:
    text: str
    params: dict[str, Any]


@dataclass
class LaneRequest:
    """What a worker needs to run a direct request without reading SQL."""

    id: str
    kind: str
    version_id: int
    source: str
    sha256: str | None
    revision: str | None
    items: list[LaneItem]
    # Epoch seconds after which nobody waits for the answer.
    deadline: float
    queue: str
    # Whether the worker publishes the text as it is generated.
    stream: bool = False
    # Times it went back to the lane because the worker holding it died.
    attempts: int = 0
    enqueued: float = field(default_factory=time.time)

    def dumps(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str | bytes) -> LaneRequest:
        data = json.loads(raw)
        data["items"] = [LaneItem(**item) for item in data["items"]]
        return cls(**data)


@dataclass
class Outcome:
    """One item's result as the worker hands it back (the fields of a job_items row)."""

    status: str
    output: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class Done:
    outcomes: list[Outcome]
    worker: str | None = None
    device: str | None = None
    seconds: float = 0.0

    def dumps(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str | bytes) -> Done:
        data = json.loads(raw)
        data["outcomes"] = [Outcome(**o) for o in data["outcomes"]]
        return cls(**data)


def new_worker_id() -> str:
    return uuid.uuid4().hex[:16]


# --- the worker's side (synchronous: the lane loop runs on a thread of a pool process) --------


def take(r: redis.Redis, queues: list[str], *, most: int, block_s: float) -> list[LaneRequest]:
    """Every request waiting on these queues' lanes, up to `most`, blocking up to `block_s`
    for the first."""
    keys = [queue_key(q) for q in queues]
    first = r.blpop(keys, timeout=block_s)
    if first is None:
        return []
    raws: list[Any] = [first[1]]
    for key in keys:
        if len(raws) >= most:
            break
        more = r.lpop(key, most - len(raws))
        raws += list(more or [])
    return [LaneRequest.loads(raw) for raw in raws]


def mark_taken(r: redis.Redis, requests: list[LaneRequest], worker: str) -> set[str]:
    """Say who runs each request (the API watches that worker's liveness); returns the ids
    whose caller has already gone."""
    pipe = r.pipeline(transaction=False)
    for req in requests:
        _xadd(pipe, req, "taken", {"worker": worker})
    for req in requests:
        pipe.exists(cancel_key(req.id))
    replies = pipe.execute()
    gone = replies[len(requests) * 2:]
    return {req.id for req, flag in zip(requests, gone, strict=True) if flag}


def cancelled(r: redis.Redis, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    pipe = r.pipeline(transaction=False)
    for request_id in ids:
        pipe.exists(cancel_key(request_id))
    return {i for i, flag in zip(ids, pipe.execute(), strict=True) if flag}


def publish_deltas(r: redis.Redis, deltas: list[tuple[LaneRequest, int, int, str]]) -> None:
    """Text of one generation step, for every streamed request of it, in one round trip."""
    if not deltas:
        return
    pipe = r.pipeline(transaction=False)
    for req, item, choice, text in deltas:
        _xadd(pipe, req, "delta", {"item": item, "choice": choice, "text": text})
    pipe.execute()


def failed(req: LaneRequest, status: ItemStatus, code: str, message: str, *,
           started: bool = False) -> Done:
    """The outcome of a request that did not run to its end, one row per item (`started`: a
    worker had taken it)."""
    now = time.time()
    return Done([Outcome(status=status.value, error_code=code, error_message=message,
                         started_at=now if started else None, finished_at=now)
                 for _ in req.items])


def publish_dones(r: redis.Redis, answers: list[tuple[LaneRequest, Done]]) -> None:
    """Requests' outcomes, in one round trip."""
    if not answers:
        return
    pipe = r.pipeline(transaction=False)
    for req, done in answers:
        _xadd(pipe, req, "done", done.dumps())
    pipe.execute()


def refresh_alive(r: redis.Redis, worker: str) -> None:
    r.set(alive_key(worker), "1", ex=ALIVE_S)


def _xadd(pipe: Any, req: LaneRequest, event: str, data: dict[str, Any] | str) -> None:
    key = events_key(req.id)
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    pipe.xadd(key, {"e": event, "d": body}, maxlen=STREAM_MAXLEN, approximate=True)
    pipe.expire(key, max(KEEP_S, int(req.deadline - time.time()) + KEEP_S))
