"""Direct OpenAI requests (/v1/chat/completions, /v1/completions, /v1/embeddings) as one-item
jobs: the same intake, the same workers and the same result rows as a batch of one line.

The caller submits, then waits on the job's row; the answer is the batch output line's body,
so a direct response and a batch response for the same request are shaped identically.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nightowl.common import chat
from nightowl.common.config import Settings
from nightowl.common.enums import ErrorCode, JobOrigin, JobStatus, Queue
from nightowl.common.errors import ModelNotFound, NightowlError, RequestRefused
from nightowl.common.values import PRIORITY_INTERACTIVE
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, cancel_job, submit_job
from nightowl.openai import responses
from nightowl.openai.fields import OpenAIFields
from nightowl.openai.item_input import request_input
from nightowl.openai.lines import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    ENDPOINTS,
    MAX_INPUTS,
    Request,
    parse_body,
    token_ids,
)
from nightowl.openai.output import output_line
from nightowl.openai.problems import LineProblem
from nightowl.openai.streaming import ChunkWriter
from nightowl.platform.orm import Job, JobItem, ModelVersion
from nightowl.registry import versions as registry

# The field that may list several inputs, each its own item of the request's job.
LIST_FIELDS = {EMBEDDINGS: "input", COMPLETIONS: "prompt"}


@dataclass
class Direct:
    job_id: str
    endpoint: str
    model: str
    stream: bool
    include_usage: bool = False
    # A /v1/responses request streamed: it runs and streams as chat, and the route translates
    # the chat chunks into Responses events with this (id, model, created, echo).
    responses_head: dict[str, Any] | None = None


@dataclass
class Checked:
    """A direct request checked as OpenAI would, its model resolved, not yet queued."""

    direct: Direct
    spec: JobSpec
    lines: list[ParsedLine]
    version: ModelVersion


def submit(*, session: Session, settings: Settings, tenant_id: str | None, endpoint: str,
           body: dict[str, Any]) -> Direct:
    """Check the body as OpenAI would and queue it as one job (one item per input)."""
    checked = check(session=session, tenant_id=tenant_id, endpoint=endpoint, body=body)
    job = submit_job(session=session, settings=settings, spec=checked.spec, lines=checked.lines)
    return replace(checked.direct, job_id=job.id,
                   responses_head=with_response_id(checked.direct, job.id, job.created_at))


def check(*, session: Session, tenant_id: str | None, endpoint: str,
          body: dict[str, Any]) -> Checked:
    """The body checked as OpenAI would and its model resolved; nothing is stored."""
    kind = ENDPOINTS[endpoint]
    field = LIST_FIELDS.get(endpoint, "")
    texts = body.get(field)
    several = bool(field) and isinstance(texts, list) and len(texts) > 1 and (
        token_ids(texts) is None)
    try:
        request = parse_body({**body, field: texts[0]} if several and texts else body, endpoint)
    except LineProblem as p:
        raise RequestRefused(p.message, code=p.code, param=p.param) from None
    try:
        version = registry.resolve_recent(session, request.model, tenant_id=tenant_id)
    except NightowlError as e:
        raise ModelNotFound(f"{e} (see GET /v1/models)") from None
    if version.kind != kind:
        raise ModelNotFound(f"model {request.model!r} is {version.kind.article} model; "
                            f"{endpoint} needs {kind.article} model (see GET /v1/models)")
    template = chat.load_template(version.source) if request.messages is not None else None
    lines = []
    for n, one in enumerate(_each_input(body, endpoint, request)):
        try:
            data = request_input(one, kind, version, template)
        except LineProblem as p:
            param = f"{field}[{n}]" if p.param == field and several else p.param
            raise RequestRefused(p.message, code=p.code, param=param) from None
        lines.append(ParsedLine(n + 1, str(n), data))
    # Interactive: ahead of bulk chunks of the default priority (see nightowl.jobs.dispatch).
    spec = JobSpec(kind=kind, model=request.model, tenant_id=tenant_id, origin=JobOrigin.DIRECT,
                   metadata=OpenAIFields(endpoint=endpoint, model=request.model,
                                         direct=True).as_metadata(),
                   queue=Queue.CPU.value, priority=PRIORITY_INTERACTIVE)
    options = body.get("stream_options")
    usage = isinstance(options, dict) and bool(options.get("include_usage"))
    stream = bool(body.get("stream"))
    if endpoint == responses.RESPONSES and stream:
        # Streamed Responses run and stream as chat; the route translates the chat chunks into
        # Responses events with this head (its id and time are the stored request's).
        direct = Direct("", CHAT, request.model, stream, True,
                        {"model": request.model, "echo": request.echo or {}})
    else:
        direct = Direct("", endpoint, request.model, stream, usage)
    return Checked(direct, spec, lines, version)


def with_response_id(direct: Direct, job_id: str,
                     created: datetime) -> dict[str, Any] | None:
    """A streamed Responses request's head, completed with the id and time of its job."""
    if direct.responses_head is None:
        return None
    return {**direct.responses_head, "rid": responses.response_id(job_id, 0),
            "created": created.timestamp()}


def _each_input(body: dict[str, Any], endpoint: str, request: Request) -> list[Request]:
    """One request per text: an embeddings request may carry a list of inputs, and a
    completions request a list of prompts (texts or token-id lists), as OpenAI's do; each
    becomes an item of the same job."""
    field = LIST_FIELDS.get(endpoint, "")
    texts = body.get(field)
    if not isinstance(texts, list) or len(texts) < 2 or token_ids(texts) is not None:
        return [request]
    if len(texts) > MAX_INPUTS:
        raise RequestRefused(f"{field} has {len(texts)} entries; at most {MAX_INPUTS} per "
                             "request (send more as a batch)", code="invalid_request",
                             param=field)
    out = []
    for n, text in enumerate(texts):
        try:
            out.append(parse_body({**body, field: text}, endpoint))
        except LineProblem as p:
            raise RequestRefused(p.message, code=p.code, param=f"{field}[{n}]") from None
    return out


def poll(session: Session, direct: Direct) -> dict[str, Any] | None:
    """The finished request's output line (OpenAI's batch line shape), or None while it runs.
    Several inputs come back as one response: each vector, or each prompt's choices."""
    session.expire_all()
    job = session.get(Job, direct.job_id)
    if job is None or not job.status.terminal:
        return None
    items = session.scalars(select(JobItem).where(JobItem.job_id == job.id)
                            .order_by(JobItem.idx)).all()
    return answer(job.id, list(items), direct)


def answer(job_id: str, items: list[JobItem], direct: Direct) -> dict[str, Any]:
    """The output line of a request's finished items (rows, or rows not stored yet). Several
    embedding inputs come back as one response listing each vector."""
    lines = [output_line(job_id, item, direct.endpoint, direct.model) for item in items]
    if len(lines) == 1 or any(error_of(line) for line in lines):
        return next((line for line in lines if error_of(line)), lines[0])
    first = lines[0]
    bodies = [line["response"]["body"] for line in lines]
    if direct.endpoint == COMPLETIONS:
        merged = _merged_completions(bodies)
    else:
        data = [{**b["data"][0], "index": n} for n, b in enumerate(bodies)]
        tokens = sum(b["usage"]["prompt_tokens"] for b in bodies)
        merged = {**bodies[0], "data": data,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return {**first, "response": {**first["response"], "body": merged}}


def _merged_completions(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Several prompts' completions as one response: prompt i's choice j at index i*n+j, as
    OpenAI orders them, and the usage summed."""
    choices = [{**c, "index": n}
               for n, c in enumerate(c for b in bodies for c in b["choices"])]
    usage = {k: sum(b["usage"][k] for b in bodies)
             for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return {**bodies[0], "choices": choices, "usage": usage}


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
    """A finished completion as OpenAI's stream: chunks, then [DONE]."""
    writer = ChunkWriter(endpoint=direct.endpoint, response_id=body["id"],
                         created=body["created"], model=body["model"],
                         include_usage=direct.include_usage)
    yield from writer.finish(body)
