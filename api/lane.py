"""Direct requests through the serving lane, and the SSE relay every streamed endpoint shares.

`serve_in_lane` checks a request (SQL: the key, the model, a quota when the tenant has one),
pushes it to the workers through Redis, and answers from the request's event stream. `relay`
is the streaming half on its own: lane events in, server-sent events out, with the request
cancelled if the client goes away; an endpoint with its own event shapes (another API's
stream) passes its own formatting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from nightowl.common.config import Settings
from nightowl.common.enums import ErrorCode, ItemStatus
from nightowl.jobs import lane_follow, quotas
from nightowl.jobs.lane import Done, LaneRequest, failed
from nightowl.jobs.lane_follow import Event
from nightowl.jobs.lane_record import Recorder
from nightowl.openai import direct, direct_lane, responses
from nightowl.openai.streaming import ChunkWriter
from nightowl.platform.db import session_factory
from nightowl_api.errors import error_response, line_error_response

log = logging.getLogger(__name__)


_recorders: dict[str, Recorder] = {}


def recorder(settings: Settings) -> Recorder:
    """One writer thread per database for the lane's records in this API process."""
    found = _recorders.get(settings.sqlalchemy_url)
    if found is None:
        found = _recorders[settings.sqlalchemy_url] = Recorder(session_factory(settings))
    return found


async def relay(events: AsyncIterator[Event], *,
                on_delta: Callable[[Event], Iterable[str]],
                on_done: Callable[[Done], Iterable[str]],
                on_close: Callable[[Done | None], None]) -> AsyncIterator[str]:
    """Server-sent events from a lane request's events: `on_delta` formats each text delta,
    `on_done` the end. `on_close` gets the outcome, or None when the client went away first
    (then the request is cancelled: `follow` cancels it when it is closed early)."""
    done: Done | None = None
    try:
        async for event in events:
            if event.done is None:
                for line in on_delta(event):
                    yield line
            else:
                done = event.done
                for line in on_done(done):
                    yield line
    finally:
        on_close(done)


def _lane_error(done: Done) -> JSONResponse | None:
    """The lane's own failures (timed out, worker lost) as the HTTP errors they were before."""
    codes = {o.error_code for o in done.outcomes}
    if ErrorCode.TIMEOUT.value in codes:
        message = next(o.error_message for o in done.outcomes if o.error_message)
        return error_response(504, message, code="timeout")
    if lane_follow.WORKER_LOST in codes:
        return error_response(503, "the worker running this request died; send it again",
                              code=lane_follow.WORKER_LOST)
    return None


async def serve_in_lane(endpoint: str, body: dict[str, Any], request: Request,
                        settings: Settings, tenant: str, *, unrecorded: int) -> Any:
    created = datetime.now(UTC)
    factory = session_factory(settings)

    def check() -> direct.Checked:
        with factory() as session:
            checked = direct.check(session=session, tenant_id=tenant, endpoint=endpoint,
                                   body=body)
            quotas.admit_direct(session, tenant, unrecorded=unrecorded)
            return checked

    checked = await run_in_threadpool(check)
    req = direct_lane.to_lane(checked, settings)
    writes = recorder(settings)
    r = lane_follow.client(settings)

    def close(done: Done | None) -> None:
        if done is None:  # the caller went away: stop the work, record it cancelled
            lane_follow.abandon(r, req.id)
            done = failed(req, ItemStatus.CANCELLED, ErrorCode.CANCELLED.value,
                                      "the caller went away")
        writes.add(direct_lane.record(checked, req, done, created))

    await lane_follow.push(r, req)
    events = lane_follow.follow(r, req, gone=request.is_disconnected)
    if not req.stream:
        return await _whole(checked, req, events, close, created)
    # Wait for the first event: a request that fails before any text is an HTTP error still.
    first = await anext(events, None)
    if first is None:
        close(None)
        return None
    if first.done is not None:
        return await _whole(checked, req, _one(first), close, created)
    writer = ChunkWriter(endpoint=checked.direct.endpoint,
                         response_id=direct_lane.stream_id(checked, req),
                         created=int(created.timestamp()), model=checked.direct.model,
                         include_usage=checked.direct.include_usage)

    def on_done(done: Done) -> Iterable[str]:
        line = direct_lane.answer_line(checked, req, done)
        failed = direct.error_of(line)
        if failed is not None:
            return writer.error(failed[1])
        return writer.finish(line["response"]["body"])

    stream: AsyncIterator[str] = relay(
        _chain(first, events), on_delta=lambda e: writer.delta(e.choice, e.text),
        on_done=on_done, on_close=close)
    return StreamingResponse(_responses_or_chat(stream, checked, req, created),
                             media_type="text/event-stream")


async def _whole(checked: direct.Checked, req: LaneRequest, events: AsyncIterator[Event],
                 close: Callable[[Done | None], None], created: datetime) -> Any:
    """A request answered whole: its outcome, as a JSON body (or an SSE stream at once)."""
    done: Done | None = None
    async for event in events:
        done = event.done or done
    close(done)
    if done is None:  # the client went away
        return None
    failed = _lane_error(done)
    if failed is not None:
        return failed
    line = direct_lane.answer_line(checked, req, done)
    error = line_error_response(line)
    if error is not None:
        return error
    answer = line["response"]["body"]
    if checked.direct.stream:
        return StreamingResponse(_responses_or_chat(direct.sse_events(answer, checked.direct),
                                                    checked, req, created),
                                 media_type="text/event-stream")
    return answer


def _responses_or_chat(chat_sse: Iterable[str] | AsyncIterator[str], checked: direct.Checked,
                      req: LaneRequest, created: datetime) -> Iterable[str] | AsyncIterator[str]:
    """A streamed Responses request runs as chat: its chat chunks become Responses events."""
    head = direct.with_response_id(checked.direct, req.id, created)
    if head is None:
        return chat_sse
    return responses.stream_events(responses.chat_chunks(chat_sse), **head)


async def _one(event: Event) -> AsyncIterator[Event]:
    yield event


async def _chain(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for event in rest:
        yield event
