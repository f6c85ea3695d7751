"""/v1/chat/completions, /v1/completions, /v1/embeddings: one request, answered directly.

Each request goes through the serving lane (nightowl.jobs.lane): checked here, pushed to the
workers through Redis, batched there with other concurrent requests, answered (streamed text
relayed as it is generated) and recorded in SQL afterwards. With NIGHTOWL_DIRECT_LANE=false
each is a one-item job on the bulk path instead, whose row the handler polls. Either way the
handler holds no thread while it waits, and a caller that hangs up stops the work.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from nightowl.common.config import Settings
from nightowl.common.errors import RateLimited
from nightowl.openai import direct, responses
from nightowl.platform.db import session_factory
from nightowl_api.deps import SettingsDep, TenantDep, quota_headers
from nightowl_api.errors import error_response, line_error_response
from nightowl_api.lane import serve_in_lane

router = APIRouter(tags=["openai"], dependencies=[quota_headers])
# Requests each tenant has running in this API process (the limit is per process).
_in_flight: Counter[str] = Counter()
_POLL_S = 0.05


async def _serve(endpoint: str, body: dict[str, Any], request: Request, settings: Settings,
                 tenant: str) -> Any:
    if _in_flight[tenant] >= settings.max_direct_in_flight:
        raise RateLimited(f"{_in_flight[tenant]} requests of yours are already running "
                          f"(NIGHTOWL_MAX_DIRECT_IN_FLIGHT={settings.max_direct_in_flight}); "
                          "retry shortly, or send bulk work as a batch", retry_after=1)
    _in_flight[tenant] += 1
    try:
        return await _run(endpoint, body, request, settings, tenant)
    finally:
        _in_flight[tenant] -= 1


async def _run(endpoint: str, body: dict[str, Any], request: Request, settings: Settings,
               tenant: str) -> Any:
    if settings.direct_lane:
        return await serve_in_lane(endpoint, body, request, settings, tenant,
                                   unrecorded=_in_flight[tenant] - 1)
    factory = session_factory(settings)

    def submit() -> direct.Direct:
        with factory() as session:
            return direct.submit(session=session, settings=settings, tenant_id=tenant,
                                 endpoint=endpoint, body=body)

    def poll(d: direct.Direct) -> dict[str, Any] | None:
        with factory() as session:
            return direct.poll(session, d)

    def abandon(d: direct.Direct) -> None:
        with factory() as session:
            direct.abandon(session, d)

    queued = await run_in_threadpool(submit)
    deadline = asyncio.get_running_loop().time() + settings.direct_timeout_seconds
    while (line := await run_in_threadpool(poll, queued)) is None:
        if await request.is_disconnected() or asyncio.get_running_loop().time() > deadline:
            await run_in_threadpool(abandon, queued)
            return error_response(504, f"request {queued.job_id} did not finish in "
                                  f"{settings.direct_timeout_seconds:g} s; is a worker running?",
                                  code="timeout")
        await asyncio.sleep(_POLL_S)
    failed = line_error_response(line)
    if failed is not None:
        return failed
    answer = line["response"]["body"]
    if queued.stream:
        events: Any = direct.sse_events(answer, queued)
        if queued.responses_head is not None:
            events = responses.stream_events(responses.chat_chunks(events),
                                             **queued.responses_head)
        return StreamingResponse(events, media_type="text/event-stream")
    return answer


_BODY = Body(..., description="The OpenAI request body")


def _route(path: str, name: str, doc: str, endpoint: str | None = None) -> None:
    """One POST route whose whole work is `_serve` for its endpoint (by default /v1 + path)."""
    served = endpoint or "/v1" + path

    async def route(request: Request, settings: SettingsDep, tenant: TenantDep,
                    body: dict[str, Any] = _BODY) -> Any:
        return await _serve(served, body, request, settings, tenant)

    route.__name__ = route.__qualname__ = name
    route.__doc__ = doc
    router.add_api_route(path, route, methods=["POST"], name=name)


_route("/chat/completions", "chat_completions",
       "OpenAI chat completion (stream=true answers as server-sent events).")
_route("/completions", "completions",
       "OpenAI (legacy) text completion (stream=true answers as server-sent events).")
_route("/embeddings", "embeddings",
       "OpenAI embeddings: mean-pooled, normalised vectors from an embed model.")
_route("/responses", "create_response",
       """OpenAI Responses: text in (a string or messages, plus instructions), a response out
    (stream=true answers as Responses stream events).""", endpoint=responses.RESPONSES)
