"""OpenAI-compatible batches, stored as nightowl jobs (ids batch_...).

The OpenAI side of a batch (endpoint, completion_window, the caller's metadata, the model name
as written) lives in `Job.metadata_["openai"]`. A batch whose lines are bad is still created,
with status "failed" and line-numbered errors, as OpenAI does; a bad create request raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.common import chat
from nightowl.common.config import Settings
from nightowl.common.enums import ErrorCode, JobOrigin, JobStatus, OnInvalid, Queue, TaskKind
from nightowl.common.errors import Conflict, InvalidInput, NightowlError, NotFound
from nightowl.common.values import metadata_problem
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, cancel_job, get_job, submit_job
from nightowl.openai.fields import OpenAIFields, read_openai, write_openai
from nightowl.openai.item_input import request_input
from nightowl.openai.lines import ENDPOINTS, BatchLine, read_lines
from nightowl.openai.problems import LineProblem
from nightowl.platform import retention
from nightowl.platform.orm import File, Job, JobItem, ModelVersion, new_job_id, utcnow
from nightowl.platform.paging import keyset_page
from nightowl.registry import versions as registry
from nightowl.storage.files import get_file, local_path

# What a batch's id starts with (OpenAI's clients expect it); its output files are named after
# the rest. Never read back to tell a batch from a job: jobs.origin says that.
ID_PREFIX = JobOrigin.BATCH.id_prefix
COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
MAX_LISTED_ERRORS = 1000
# Our own metadata key that picks the worker queue (OpenAI has no such notion).
QUEUE_KEY = "nightowl_queue"
OUTPUT, ERRORS = "output", "errors"


@dataclass
class _Validation:
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    model: str | None = None
    version: ModelVersion | None = None
    template: chat.ChatTemplate | None = None
    lines: int = 0
    first_line: dict[str, int] = field(default_factory=dict)  # custom_id -> its line
    resolved: dict[str, ModelVersion | str] = field(default_factory=dict)  # or why not
    tenant_id: str | None = None  # whose models the lines may name

    def add(self, error: dict[str, Any]) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(error)


def check_request(endpoint: str, completion_window: str,
                  metadata: dict[str, Any] | None) -> None:
    """A create request that cannot become a batch at all: a 400, not a failed batch."""
    if endpoint not in ENDPOINTS:
        raise InvalidInput(f"endpoint {endpoint!r} is not supported; use one of "
                           f"{', '.join(ENDPOINTS)}", param="endpoint")
    if completion_window not in COMPLETION_WINDOWS:
        raise InvalidInput(f"completion_window {completion_window!r} is not supported; use "
                           f"{', '.join(map(repr, COMPLETION_WINDOWS))}", param="completion_window")
    if metadata is None:
        return
    if (problem := metadata_problem(metadata)) is not None:
        raise InvalidInput(problem, param="metadata")
    if QUEUE_KEY in metadata and metadata[QUEUE_KEY] not in (Queue.CPU.value, Queue.GPU.value):
        raise InvalidInput(f"metadata[{QUEUE_KEY!r}] must be cpu or gpu", param="metadata")


def input_file(session: Session, input_file_id: str, *, tenant_id: str | None) -> File:
    row = get_file(session, input_file_id, tenant_id=tenant_id)
    if row.purpose != "batch":
        raise InvalidInput(f"file {input_file_id} was uploaded with purpose {row.purpose!r}; "
                           "a batch input file needs purpose 'batch'", param="input_file_id")
    return row


def check_and_submit(
    *, session: Session, settings: Settings, tenant_id: str | None, row: File, endpoint: str,
    completion_window: str, metadata: dict[str, Any] | None, job_id: str | None = None,
    output_expires_after: int | None = None,
) -> Job:
    """Read the file's lines and store them as the batch's items; `job_id` is a batch row
    already shown as validating (checked in the background), else a new row is made."""
    input_file_id = row.id
    kind = ENDPOINTS[endpoint]
    check = _Validation(tenant_id=tenant_id)
    with open(local_path(row, settings), "rb") as fh:
        for parsed in read_lines(fh, endpoint=endpoint, max_line_bytes=settings.max_line_bytes):
            _check_line(session, check, parsed, kind)
    if check.lines == 0 and not check.error_count:
        check.add({"code": "empty_file", "message": f"file {input_file_id} has no requests",
                   "line": None, "param": "input_file_id"})
    openai = OpenAIFields(endpoint=endpoint, completion_window=completion_window,
                          metadata=metadata or None, model=check.model)
    if check.error_count:
        return _failed_batch(session, settings, check, kind, tenant_id, input_file_id, openai,
                             job_id=job_id, output_expires_after=output_expires_after)
    model = check.model
    if check.version is None:
        # Every line was refused on its own: the batch still "runs" (to nothing) and its error
        # file answers each line, so the job row needs some model of the kind.
        check.version = placeholder_version(session, kind)
        model = check.version.ref
        openai.model = next(iter(check.resolved), model)

    def lines() -> Iterator[ParsedLine]:
        with open(local_path(row, settings), "rb") as fh:
            for parsed in read_lines(fh, endpoint=endpoint,
                                     max_line_bytes=settings.max_line_bytes):
                assert isinstance(parsed, BatchLine)  # the first pass found no bad envelope
                yield _parsed_line(parsed, check, kind)

    spec = JobSpec(
        kind=kind, model=model or check.version.ref,
        deadline_seconds=COMPLETION_WINDOWS[completion_window].total_seconds(),
        metadata=openai.as_metadata(), on_invalid=OnInvalid.SKIP, tenant_id=tenant_id,
        input_file_id=input_file_id, origin=JobOrigin.BATCH,
        queue=(metadata or {}).get(QUEUE_KEY, Queue.CPU.value), job_id=job_id,
        retain_seconds=output_expires_after,
    )
    return submit_job(session=session, settings=settings, spec=spec, lines=lines(),
                      version=check.version)


def _check_line(session: Session, check: _Validation, parsed: BatchLine | dict[str, Any],
                kind: TaskKind) -> None:
    """Batch-level problems only: a refused body or an unknown model fails just its line."""
    if isinstance(parsed, dict):
        check.add(parsed)
        return
    check.lines += 1
    first = check.first_line.setdefault(parsed.custom_id, parsed.line_no)
    if first != parsed.line_no:
        check.add(_line_error(parsed, "duplicate_custom_id", f"custom_id {parsed.custom_id!r} "
                              f"is already used on line {first}; each must be unique",
                              "custom_id"))
        return
    if parsed.request is None or _model_problem(session, check, parsed.model, kind):
        return
    version = check.resolved[parsed.model]
    assert isinstance(version, ModelVersion)
    if check.version is None:
        check.model, check.version = parsed.model, version
        check.template = chat.load_template(version.source)
    elif version.id != check.version.id:
        check.add(_line_error(parsed, "mismatched_model",
                              f"model {parsed.model!r} differs from {check.model!r} on an earlier "
                              "line; all requests in a batch must name the same model",
                              "body.model"))


def _model_problem(session: Session, check: _Validation, model: str,
                   kind: TaskKind) -> str | None:
    """Why the model cannot serve this endpoint, or None; each name is looked up once."""
    if model not in check.resolved:
        try:
            version: ModelVersion | str = registry.resolve(session, model,
                                                           tenant_id=check.tenant_id)
        except NightowlError as e:
            version = str(e)
        if isinstance(version, ModelVersion) and version.kind != kind:
            version = (f"model {model!r} is {version.kind.article} model; this endpoint needs "
                       f"{kind.article} model (see GET /v1/models)")
        check.resolved[model] = version
    found = check.resolved[model]
    return found if isinstance(found, str) else None


def _line_error(line: BatchLine, code: str, message: str, param: str) -> dict[str, Any]:
    return {"code": code, "message": message, "line": line.line_no, "param": param}


def _parsed_line(line: BatchLine, check: _Validation, kind: TaskKind) -> ParsedLine:
    """The line as a job item: to run, or failed with the OpenAI error its response carries."""
    try:
        if line.problem is not None:
            raise line.problem
        assert line.request is not None
        problem = check.resolved.get(line.model)
        if isinstance(problem, str):
            raise LineProblem(ErrorCode.MODEL_NOT_FOUND.value, problem, "model")
        assert check.version is not None
        data = request_input(line.request, kind, check.version, check.template)
    except LineProblem as p:
        return ParsedLine(line.line_no, line.custom_id, {"error_param": p.param},
                          (ErrorCode(p.code), p.message))
    return ParsedLine(line.line_no, line.custom_id, data)


def _failed_batch(session: Session, settings: Settings, check: _Validation, kind: TaskKind,
                  tenant_id: str | None, input_file_id: str, openai: OpenAIFields, *,
                  job_id: str | None = None, output_expires_after: int | None = None) -> Job:
    # A job row needs a model version even when none could be resolved; it never runs, so any
    # version does, and the batch object reports the model name the lines gave.
    if job_id is not None:
        return fail_validating(session, job_id, check.errors, openai=openai)
    version = check.version or placeholder_version(session, kind)
    now = utcnow()
    retain = retention.resolve(session, settings, tenant_id, output_expires_after)
    job = Job(
        id=new_job_id(JobOrigin.BATCH.id_prefix), origin=JobOrigin.BATCH, tenant_id=tenant_id,
        kind=kind, model_ref=check.model or "",
        model_version_id=version.id, params={}, status=JobStatus.FAILED, validating_at=now,
        failed_at=now, chunk_size=settings.chunk_size, queue=Queue.CPU.value,
        metadata_=openai.as_metadata(), input_file_id=input_file_id, errors=check.errors,
        total_items=0, retain_seconds=retain, expires_at=retention.expiry(now, retain),
    )
    session.add(job)
    session.commit()
    return job


def fail_validating(session: Session, job_id: str, errors: list[dict[str, Any]], *,
                    openai: OpenAIFields | None = None) -> Job:
    """A batch shown as validating that cannot run: failed, its errors naming the lines."""
    job = session.get(Job, job_id)
    assert job is not None  # the caller holds the row
    job.status, job.failed_at, job.errors = JobStatus.FAILED, utcnow(), errors
    job.expires_at = retention.expiry(job.failed_at, job.retain_seconds)
    if openai is not None:
        write_openai(job, **openai.model_dump(exclude_unset=True))
    session.commit()
    return job


def placeholder_version(session: Session, kind: TaskKind) -> ModelVersion:
    version = session.scalars(
        select(ModelVersion).order_by((ModelVersion.kind == kind).desc(), ModelVersion.id)
        .limit(1)
    ).first()
    if version is None:
        raise InvalidInput("no models are registered, so no batch can run; register one with "
                           "`nightowl models add` or `nightowl models bootstrap`")
    return version


def get_batch(session: Session, batch_id: str, *, tenant_id: str | None) -> Job:
    try:
        job = get_job(session, batch_id, tenant_id=tenant_id)
    except NotFound:
        raise NotFound(f"no batch {batch_id!r}") from None
    if job.origin != JobOrigin.BATCH:
        raise NotFound(f"no batch {batch_id!r}")
    return job


def list_batches(session: Session, *, tenant_id: str | None, after: str | None = None,
                 limit: int = 20) -> tuple[list[Job], bool]:
    """Newest first; `after` is the last id of the previous page. Returns (page, has_more)."""
    stmt = select(Job).where(Job.origin == JobOrigin.BATCH)
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    anchor = None
    if after is not None:
        try:
            anchor = get_batch(session, after, tenant_id=tenant_id)
        except NotFound:
            raise InvalidInput(f"after={after!r} is not a batch id of yours",
                               param="after") from None
    return keyset_page(session, stmt, Job.created_at, Job.id, anchor, limit)


def cancel_batch(session: Session, batch_id: str, *, tenant_id: str | None) -> Job:
    job = get_batch(session, batch_id, tenant_id=tenant_id)
    if job.status == JobStatus.FINALIZING:
        raise Conflict(f"batch {batch_id} has finished running and its output files are being "
                       "written; nothing is left to cancel")
    return cancel_job(session, batch_id, tenant_id=tenant_id)


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def file_ids(job: Job) -> dict[str, str | None]:
    """The stable ids of a batch's output and error files, once it has finished."""
    finished = job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.EXPIRED)
    failed = job.failed_items + job.cancelled_items + job.expired_items
    return {
        OUTPUT: batch_file_id(job.id, OUTPUT) if finished and job.succeeded_items else None,
        ERRORS: batch_file_id(job.id, ERRORS) if finished and failed else None,
    }


# A batch's files are named like uploads (file-...), their batch's id inside: file-<id>out, the
# id being what follows "batch_" (a time mark "t" and hex, or hex alone in older batches).
_FILE_SUFFIX = {OUTPUT: "out", ERRORS: "err"}
_BATCH_FILE = re.compile(r"^file-(t?[0-9a-f]+)(out|err)$")


def batch_file_id(job_id: str, which: str) -> str:
    return f"file-{job_id.removeprefix(ID_PREFIX + '_')}{_FILE_SUFFIX[which]}"


def parse_batch_file_id(file_id: str) -> tuple[str, str] | None:
    """(batch id, OUTPUT or ERRORS) of a batch file's id, in today's form (file-<hex>out) or
    the older one (batch_<hex>_output), which stored references may still hold."""
    if (m := _BATCH_FILE.match(file_id)) is not None:
        which = OUTPUT if m.group(2) == "out" else ERRORS
        return f"{ID_PREFIX}_{m.group(1)}", which
    if file_id.startswith(ID_PREFIX + "_"):
        batch_id, _, which = file_id.rpartition("_")
        if which in (OUTPUT, ERRORS):
            return batch_id, which
    return None


def usage(session: Session, job: Job) -> dict[str, Any] | None:
    """Tokens of the batch's requests that ran, summed from their rows; a finished batch's
    sum is kept on the row when its files are written (see finalize), so it is read once."""
    kept = read_openai(job).usage
    if kept is not None:
        return dict(kept)
    tokens_in, tokens_out = session.execute(
        select(func.sum(JobItem.tokens_in), func.sum(JobItem.tokens_out))
        .where(JobItem.job_id == job.id)).one()
    if tokens_in is None and tokens_out is None:
        return None
    return usage_object(int(tokens_in or 0), int(tokens_out or 0))


def usage_object(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out}


def as_created(shown: dict[str, Any]) -> dict[str, Any]:
    """The create call's answer: "validating", as OpenAI answers every create, even when a
    small file was checked before the answer (a retrieve then shows where it went)."""
    later = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
             "cancelling_at", "cancelled_at", "output_file_id", "error_file_id")
    return {**shown, "status": "validating", "errors": None, **dict.fromkeys(later)}


def batch_object(job: Job, session: Session | None = None) -> dict[str, Any]:
    """The batch as OpenAI's API shows it (with its token usage when given a session)."""
    meta = read_openai(job)
    # A queued job has passed validation and waits for a worker: OpenAI calls that in_progress.
    status = "in_progress" if job.status == JobStatus.QUEUED else job.status.value
    ids = file_ids(job)
    errors = None
    if job.status == JobStatus.FAILED and job.errors:
        errors = {"object": "list", "data": [
            {k: e.get(k) for k in ("code", "message", "line", "param")} for e in job.errors
        ]}
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": meta.endpoint,
        "model": meta.model or job.model_ref,
        "errors": errors,
        "input_file_id": job.input_file_id or "",
        "completion_window": meta.completion_window,
        "status": status,
        "output_file_id": ids[OUTPUT],
        "error_file_id": ids[ERRORS],
        "created_at": _ts(job.created_at),
        "in_progress_at": _ts(job.in_progress_at or job.queued_at),
        "expires_at": _ts(job.deadline_at),
        # A cancelled batch stops rather than finalizes (OpenAI shows no finalizing for it).
        "finalizing_at": None if job.cancelling_at else _ts(job.finalizing_at),
        "completed_at": _ts(job.completed_at),
        "failed_at": _ts(job.failed_at),
        "expired_at": _ts(job.expired_at),
        "cancelling_at": _ts(job.cancelling_at),
        "cancelled_at": _ts(job.cancelled_at),
        # OpenAI's three counts, plus the requests a cancel or the deadline stopped before
        # they ran (Anthropic's split), so "failed" means only requests that went wrong.
        "request_counts": {
            "total": job.total_items,
            "completed": job.succeeded_items,
            "failed": job.failed_items,
            "cancelled": job.cancelled_items,
            "expired": job.expired_items,
        },
        "metadata": meta.metadata,
        "usage": usage(session, job) if session is not None else None,
    }

