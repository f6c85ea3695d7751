"""Direct OpenAI requests (/v1/chat/completions, /v1/completions, /v1/embeddings) as one-item
jobs: the same intake, the same workers and the same result rows as a batch of one line.

The caller submits, then waits on the job's row; the answer is the batch output line's body,
so a direct response and a batch response for the same request are shaped identically.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import ErrorCode, JobOrigin, JobStatus, Queue
from nightowl.common.errors import ModelNotFound, NightowlError, RequestRefused
from nightowl.common.values import PRIORITY_INTERACTIVE
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, cancel_job, submit_job
from nightowl.openai import chat
from nightowl.openai.batches import request_input
from nightowl.openai.fields import OpenAIFields
from nightowl.openai.lines import EMBEDDINGS, ENDPOINTS, LineProblem, Request, parse_body
from nightowl.openai.output import output_line
from nightowl.platform.orm import Job, JobItem
from nightowl.registry import versions as registry

# OpenAI's own cap on inputs in one embeddings request.
MAX_EMBEDDING_INPUTS = 2048


@dataclass
class Direct:
    job_id: str
    endpoint: str
    model: str
    stream: bool
    include_usage: bool = False


def submit(*, session: Session, settings: Settings, tenant_id: str | None, endpoint: str,
           body: dict[str, Any]) -> Direct:
    """Check the body as OpenAI would and queue it as one job (one item per input)."""
    kind = ENDPOINTS[endpoint]
    texts = body.get("input")
    several = endpoint == EMBEDDINGS and isinstance(texts, list) and len(texts) > 1
    try:
        request = parse_body({**body, "input": texts[0]} if several and texts else body, endpoint)
    except LineProblem as p:
        raise RequestRefused(p.message, code=p.code, param=p.param) from None
    try:
        version = registry.resolve(session, request.model, tenant_id=tenant_id)
    except NightowlError as e:
        raise ModelNotFound(f"{e} (see GET /v1/models)") from None
    if version.kind != kind:
        raise ModelNotFound(f"model {request.model!r} is a {version.kind.value} model; "
                            f"{endpoint} needs a {kind.value} model (see GET /v1/models)")
    template = chat.load_template(version.source) if request.messages is not None else None
    lines = []
    for n, one in enumerate(_each_input(body, endpoint, request)):
        try:
            data = request_input(one, kind, version, template)
        except LineProblem as p:
            param = f"input[{n}]" if p.param == "input" and several else p.param
            raise RequestRefused(p.message, code=p.code, param=param) from None
        lines.append(ParsedLine(n + 1, str(n), data))
    spec = JobSpec(kind=kind, model=request.model, tenant_id=tenant_id, origin=JobOrigin.DIRECT,
                   metadata=OpenAIFields(endpoint=endpoint, model=request.model,
                                         direct=True).as_metadata(),
                   queue=Queue.CPU.value)
    job = submit_one(session=session, settings=settings, spec=spec, lines=lines)
    options = body.get("stream_options")
    usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return Direct(job.id, endpoint, request.model, bool(body.get("stream")), usage)


def _each_input(body: dict[str, Any], endpoint: str, request: Request) -> list[Request]:
    """One request per text: an embeddings request may carry a list of inputs, as OpenAI's
    does; each becomes an item of the same job."""
    texts = body.get("input")
    if endpoint != EMBEDDINGS or not isinstance(texts, list) or len(texts) < 2:
        return [request]
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise RequestRefused(f"input has {len(texts)} texts; at most {MAX_EMBEDDING_INPUTS} per "
                             "request (send more as a batch)", code="invalid_request",
                             param="input")
    out = []
    for n, text in enumerate(texts):
        try:
            out.append(parse_body({**body, "input": text}, endpoint))
        except LineProblem as p:
            raise RequestRefused(p.message, code=p.code, param=f"input[{n}]") from None
    return out


def submit_one(*, session: Session, settings: Settings, spec: JobSpec,
               lines: list[ParsedLine]) -> Job:
    """The one place a direct request becomes work. Interactive requests must not wait behind
    bulk chunks, so they go ahead of the default priority (see nightowl.jobs.dispatch)."""
    spec = spec.model_copy(update={"priority": max(spec.priority, PRIORITY_INTERACTIVE)})
    return submit_job(session=session, settings=settings, spec=spec, lines=lines)


def poll(session: Session, direct: Direct) -> dict[str, Any] | None:
    """The finished request's output line (OpenAI's batch line shape), or None while it runs.
    Several embedding inputs come back as one response listing each vector."""
    session.expire_all()
    job = session.get(Job, direct.job_id)
    if job is None or not job.status.terminal:
        return None
    items = session.scalars(select(JobItem).where(JobItem.job_id == job.id)
                            .order_by(JobItem.idx)).all()
    lines = [output_line(job.id, item, direct.endpoint, direct.model) for item in items]
    if len(lines) == 1 or any(error_of(line) for line in lines):
        return next((line for line in lines if error_of(line)), lines[0])
    first = lines[0]
    body = first["response"]["body"]
    data = [{**line["response"]["body"]["data"][0], "index": n} for n, line in enumerate(lines)]
    tokens = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in lines)
    merged = {**body, "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return {**first, "response": {**first["response"], "body": merged}}


def abandon(session: Session, direct: Direct) -> None:
    """The caller went away: stop the request's work if it has not finished."""
    job = session.get(Job, direct.job_id)
    if job is not None and not job.status.terminal and job.status != JobStatus.CANCELLING:
        cancel_job(session, job.id)


def error_of(line: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(HTTP status, OpenAI error object) when the request failed, else None."""
    response = line.get("response")
    if response is None:  # cancelled or expired before it ran
        error = line.get("error") or {}
        return 503, {"message": error.get("message", "the request was not run"),
                     "type": "server_error", "param": None, "code": error.get("code")}
    if response["status_code"] == 200:
        return None
    error = response["body"]["error"]
    status = 404 if error.get("code") == ErrorCode.MODEL_NOT_FOUND.value else int(
        response["status_code"])
    return status, error


def sse_events(body: dict[str, Any], direct: Direct) -> Iterator[str]:
    """A finished completion as OpenAI's stream: chunks, then [DONE]. Each choice's text comes
    in one delta, because the worker hands back whole results."""
    chat_endpoint = direct.endpoint == "/v1/chat/completions"
    base = {"id": body["id"], "created": body["created"], "model": body["model"],
            "object": "chat.completion.chunk" if chat_endpoint else "text_completion"}
    for choice in body["choices"]:
        i = choice["index"]
        if chat_endpoint:
            deltas: list[dict[str, Any]] = [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                 "finish_reason": None},
                {"index": i, "delta": {"content": choice["message"]["content"]},
                 "logprobs": choice["logprobs"], "finish_reason": None},
                {"index": i, "delta": {}, "logprobs": None,
                 "finish_reason": choice["finish_reason"]},
            ]
        else:
            deltas = [{"index": i, "text": choice["text"], "logprobs": choice["logprobs"],
                       "finish_reason": choice["finish_reason"]}]
        for delta in deltas:
            yield f"data: {json.dumps({**base, 'choices': [delta]}, ensure_ascii=False)}\n\n"
    if direct.include_usage:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': body['usage']})}\n\n"
    yield "data: [DONE]\n\n"
