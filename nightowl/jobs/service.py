"""The job service: submit, cancel, retry, finalize. CLI and API both call it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from pydantic import ModelWrapValidatorHandler, ValidationError, model_validator
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nightowl.common import values
from nightowl.common.config import Settings
from nightowl.common.enums import (
    ChunkStatus,
    ErrorCode,
    ItemStatus,
    JobOrigin,
    JobStatus,
    OnInvalid,
    Queue,
)
from nightowl.common.errors import Conflict, InvalidInput, NotFound
from nightowl.common.items import STOPS, item_texts
from nightowl.common.specs import JobRequest, check_params
from nightowl.common.values import check_json, invalid
from nightowl.jobs import quotas
from nightowl.jobs.dispatch import top_up
from nightowl.jobs.inputs import ParsedLine
from nightowl.platform import retention
from nightowl.platform.db import insert_ignoring_conflicts
from nightowl.platform.orm import Job, JobChunk, JobItem, ModelVersion, new_job_id, utcnow
from nightowl.registry import versions as registry

log = logging.getLogger(__name__)
INSERT_BATCH = 2000
MAX_LISTED_PROBLEMS = 1000


class JobSpec(JobRequest):
    """A job to store: the request every door fills (its fields, ranges and defaults are
    nightowl.common.specs.JobRequest's) and who submits it, from where, into which row.

    A bad value is refused when the spec is built, with the message the HTTP body gets.
    """

    # The doors offer cpu or gpu; the service runs any queue it is given (an operator's own
    # pool, a test's isolated one).
    queue: str = Queue.CPU.value  # type: ignore[assignment]
    tenant_id: str | None = None
    parent_job_id: str | None = None
    input_file_id: str | None = None
    origin: JobOrigin = JobOrigin.JOB
    # A batch row already committed as validating (its input checked in the background):
    # the checked items go into it instead of a new row.
    job_id: str | None = None
    # Seconds its results are kept once it finishes, when the request said (a batch's
    # output_expires_after); else the tenant's or the operator's retention.
    retain_seconds: int | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _refused(cls, data: Any, handler: ModelWrapValidatorHandler[JobSpec]) -> JobSpec:
        try:
            spec = handler(data)
        except ValidationError as e:
            raise invalid(e) from None
        values.deadline(spec.deadline_seconds)
        check_params(spec.kind, spec.params)
        return spec

    @property
    def deadline(self) -> timedelta | None:
        return values.deadline(self.deadline_seconds)

    def request(self) -> dict[str, Any]:
        """The spec as the HTTP body (nightowl.common.specs.JobRequest) carries it."""
        return self.model_dump(mode="json", include=set(JobRequest.model_fields))


def set_status(job: Job, status: JobStatus) -> None:
    now = utcnow()
    job.status = status
    setattr(job, f"{status.value}_at", now)
    if status.terminal:
        # Its results' lifetime runs from now (OpenAI anchors a batch output's expiry at the
        # output file's creation, which is this moment).
        job.expires_at = retention.expiry(now, job.retain_seconds)


def get_job(session: Session, job_id: str, *, tenant_id: str | None = None) -> Job:
    job = session.get(Job, job_id)
    # Another tenant's job answers exactly like a missing one.
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFound(f"no job {job_id!r}; list jobs with `nightowl jobs list`")
    return job


def list_jobs(
    session: Session,
    *,
    tenant_id: str | None = None,
    status: JobStatus | None = None,
    limit: int = 50,
    before: datetime | None = None,
) -> list[Job]:
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if before is not None:
        stmt = stmt.where(Job.created_at < before)
    return list(session.scalars(stmt))


def check_spec(settings: Settings, spec: JobSpec) -> None:
    """What the spec's own type cannot check: the operator's bound on metadata."""
    check_json("metadata", spec.metadata, max_bytes=settings.max_metadata_bytes)


def resolve_model(session: Session, spec: JobSpec) -> ModelVersion:
    """The version the job's model reference names now, which must serve the job's kind."""
    return _serving(registry.resolve(session, spec.model, tenant_id=spec.tenant_id), spec)


def _serving(version: ModelVersion, spec: JobSpec) -> ModelVersion:
    if version.kind != spec.kind:
        raise InvalidInput(
            f"model {version.ref} is {version.kind.article} model; "
            f"{spec.kind.article} job needs {spec.kind.article} model"
        )
    return version


def submit_job(
    *, session: Session, settings: Settings, spec: JobSpec, lines: Iterable[ParsedLine],
    version: ModelVersion | None = None,
) -> Job:
    """Validate and store every item, then let the dispatcher send the first chunks.

    `version` is the model already resolved for this submit (nightowl.jobs.intake), else it is
    resolved here. With on_invalid="reject" any bad line rolls everything back and raises
    InvalidInput listing each problem by line; with "skip" bad lines become failed items and
    the rest runs. Over a tenant's quota it raises QuotaExceeded, having stored nothing (the
    caller rolls back).
    """
    check_spec(settings, spec)
    admission = quotas.admit(session, spec.tenant_id, exclude_job=spec.job_id)
    version = resolve_model(session, spec) if version is None else _serving(version, spec)
    count_tokens = (quotas.token_counter(version, spec.kind, settings)
                    if admission.tokens_left is not None else None)
    chunk_size = spec.chunk_size or settings.chunk_size
    now = utcnow()
    job = Job(
        id=new_job_id(spec.origin.id_prefix),
        origin=spec.origin,
        tenant_id=spec.tenant_id,
        kind=spec.kind,
        model_ref=spec.model,
        model_version_id=version.id,
        params=spec.params,
        status=JobStatus.VALIDATING,
        validating_at=now,
        truncate=spec.truncate,
        chunk_size=chunk_size,
        queue=spec.queue,
        deadline_at=now + spec.deadline if spec.deadline else None,
        metadata_=spec.metadata,
        parent_job_id=spec.parent_job_id,
        input_file_id=spec.input_file_id,
        priority=spec.priority,
        retain_seconds=retention.resolve(session, settings, spec.tenant_id, spec.retain_seconds),
    )
    if spec.job_id is None:
        session.add(job)
    else:
        job = _adopt(session, spec.job_id, job)
    session.flush()
    problems: list[tuple[int, str]] = []
    total = failed = tokens = 0
    for batch in _batches(lines, INSERT_BATCH, settings.max_items_per_job):
        if count_tokens is not None:
            tokens += count_tokens(batch)
        quotas.check_streaming(session, admission, total + len(batch), tokens_so_far=tokens,
                               more_may_follow=len(batch) == INSERT_BATCH)
        for line_no, message in _store_batch(session, job.id, batch, total, now):
            failed += 1
            if len(problems) < MAX_LISTED_PROBLEMS:
                problems.append((line_no, message))
        total += len(batch)
    if total == 0:
        raise InvalidInput("the input is empty: no items to run")
    if failed and spec.on_invalid == OnInvalid.REJECT:
        raise InvalidInput(
            f"{failed} of {total} lines are invalid; nothing was queued "
            "(fix them, or pass --on-invalid skip to run the valid lines)",
            [(f"line {n}", m) for n, m in problems], of_lines=(failed, total),
        )
    job.total_items = total
    job.failed_items = failed
    job.total_tokens = tokens if count_tokens is not None else None
    job.errors = [{"line": n, "message": m} for n, m in problems]
    session.execute(insert(JobChunk), chunk_rows(job, total))
    set_status(job, JobStatus.QUEUED)
    quotas.confirm(session, spec.tenant_id, job_id=job.id, items=total - failed, tokens=tokens)
    session.commit()
    if failed == total:
        try_finalize(session, job.id)
        session.commit()
        return job
    top_up(session, settings, job.queue)
    return job


def chunk_rows(job: Job, total: int) -> list[dict[str, Any]]:
    """The job's chunk rows, pending, each with the keys dispatch orders the ready set by."""
    size = job.chunk_size
    return [
        {
            "job_id": job.id,
            "chunk_no": n,
            "start_idx": start,
            "end_idx": min(start + size, total),
            "status": ChunkStatus.PENDING,
            "attempts": 0,
            "queue": job.queue,
            "tenant_id": job.tenant_id,
            "priority": job.priority,
            "job_created_at": job.created_at,
        }
        for n, start in enumerate(range(0, total, size))
    ]


def _adopt(session: Session, job_id: str, fresh: Job) -> Job:
    """The validating row takes what the checks decided; its id, times and deadline stay."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.VALIDATING:
        raise Conflict(f"job {job_id} is no longer validating")
    for key in ("kind", "model_ref", "model_version_id", "params", "truncate", "chunk_size",
                "queue", "metadata_", "priority"):
        setattr(job, key, getattr(fresh, key))
    return job


def _batches(
    lines: Iterable[ParsedLine], size: int, limit: int
) -> Iterator[list[ParsedLine]]:
    """The lines in lists of `size`; more than `limit` lines in all is an error."""
    batch: list[ParsedLine] = []
    for n, line in enumerate(lines, start=1):
        if n > limit:
            raise InvalidInput(
                f"more than {limit} items in one job (NIGHTOWL_MAX_ITEMS_PER_JOB); split the file"
            )
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _store_batch(
    session: Session, job_id: str, lines: list[ParsedLine], start: int, now: datetime
) -> list[tuple[int, str]]:
    """Insert `lines` as the job's items from idx `start`; (line number, error) for each line
    stored as an error row, in line order.

    A custom_id used twice in the batch is caught here; one the job already holds, by the
    (job_id, custom_id) unique index as the rows go in. Nothing keeps every custom_id of a
    million-line file, so submit memory stays flat."""
    rows = [_item_row(job_id, start + n, line, line.error, now) for n, line in enumerate(lines)]
    first_on: dict[str, int] = {}
    dups: list[int] = []
    fresh: list[int] = []
    for n, line in enumerate(lines):
        if first_on.setdefault(line.custom_id, line.line_no) != line.line_no:
            dups.append(n)
        else:
            fresh.append(n)
    insert_ignoring_conflicts(session, JobItem, [rows[n] for n in fresh], ["job_id", "custom_id"])
    in_batch = (JobItem.job_id == job_id, JobItem.idx >= start, JobItem.idx < start + len(lines))
    inserted = session.scalar(select(func.count()).select_from(JobItem).where(*in_batch)) or 0
    if inserted < len(fresh):
        stored = set(session.scalars(select(JobItem.custom_id).where(*in_batch)))
        taken = {lines[n].custom_id for n in fresh} - stored
        first_on.update(_stored_lines(session, job_id, taken))
        dups += [n for n in fresh if lines[n].custom_id in taken]
    dups.sort()
    for n in dups:
        line = lines[n]
        message = (f"duplicate custom_id {line.custom_id!r} "
                   f"(first on line {first_on[line.custom_id]})")
        line.custom_id = f"{line.custom_id}#line{line.line_no}"
        rows[n] = _item_row(job_id, start + n, line, (ErrorCode.INVALID_INPUT, message), now)
    if dups:
        session.execute(insert(JobItem), [rows[n] for n in dups])
    return [(line.line_no, row["error_message"]) for row, line in zip(rows, lines, strict=True)
            if row["error_message"] is not None]


def _stored_lines(session: Session, job_id: str, custom_ids: set[str]) -> dict[str, int]:
    """custom_id -> line number, for those of `custom_ids` the job already holds."""
    rows = session.execute(
        select(JobItem.custom_id, JobItem.line_no)
        .where(JobItem.job_id == job_id, JobItem.custom_id.in_(custom_ids))
    ).tuples()
    return {custom_id: line_no or 0 for custom_id, line_no in rows}


def _item_row(
    job_id: str, idx: int, line: ParsedLine, error: tuple[ErrorCode, str] | None, now: datetime
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "idx": idx,
        "line_no": line.line_no,
        "custom_id": line.custom_id,
        "input": line.input,
        "status": ItemStatus.FAILED if error else ItemStatus.PENDING,
        "error_code": error[0].value if error else None,
        "error_message": error[1] if error else None,
        "finished_at": now if error else None,
        "attempts": 0,
    }


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back
# whole, so running it again is safe.
RETRYABLE = frozenset({"40P01", "40001"})
CANCEL_ATTEMPTS = 5


def cancel_job(session: Session, job_id: str, *, tenant_id: str | None = None) -> Job:
    """Cancel now what nobody holds; running chunks stop at their next micro-batch.

    Locks are taken in the workers' order (chunks, their items, then the job), so a cancel
    racing a chunk commit waits instead of deadlocking; should PostgreSQL still pick this
    transaction as a lock race's loser, it was rolled back whole and runs again, so the
    cancel always lands."""
    for attempt in range(1, CANCEL_ATTEMPTS + 1):
        try:
            return _cancel_once(session, job_id, tenant_id)
        except OperationalError as e:
            if getattr(e.orig, "sqlstate", None) not in RETRYABLE or attempt == CANCEL_ATTEMPTS:
                raise
            session.rollback()
            log.info("cancel of %s lost a lock race (%s); trying again", job_id, e.orig)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _cancel_once(session: Session, job_id: str, tenant_id: str | None) -> Job:
    job = get_job(session, job_id, tenant_id=tenant_id)
    if job.status.terminal:
        raise Conflict(f"job {job_id} is already {job.status.value}; nothing to cancel")
    with session.no_autoflush:  # the job row's update waits until the chunks are locked
        if job.status != JobStatus.CANCELLING:
            set_status(job, JobStatus.CANCELLING)
        stop_pending_chunks(session, job, ChunkStatus.CANCELLED)
    try_finalize(session, job.id)
    session.commit()
    session.refresh(job)
    return job


def stop_pending_chunks(session: Session, job: Job, status: ChunkStatus) -> None:
    item_status = ItemStatus.CANCELLED if status == ChunkStatus.CANCELLED else ItemStatus.EXPIRED
    code, message = STOPS[item_status]
    # Locked in chunk order, before the job row: the order a worker's commit takes them in.
    chunks = list(session.scalars(
        select(JobChunk).where(JobChunk.job_id == job.id, JobChunk.status == ChunkStatus.PENDING)
        .order_by(JobChunk.id).with_for_update()
    ))
    now = utcnow()
    for chunk in chunks:
        chunk.status = status
        chunk.finished_at = now
        session.execute(
            update(JobItem)
            .where(
                JobItem.job_id == job.id,
                JobItem.idx >= chunk.start_idx,
                JobItem.idx < chunk.end_idx,
                JobItem.status == ItemStatus.PENDING,
            )
            .values(status=item_status, error_code=code.value, error_message=message,
                    finished_at=now)
        )
    session.flush()


def try_finalize(session: Session, job_id: str) -> bool:
    """Finalize when no chunk is left; the last chunk to commit gets here with all others done."""
    # One probe of the (job_id, status) index, not a count of the job's chunks: this runs at
    # every chunk commit, and counting would make a job's cost grow with its chunks squared.
    open_chunk = session.scalar(
        select(JobChunk.id).where(
            JobChunk.job_id == job_id,
            JobChunk.status.in_([ChunkStatus.PENDING, ChunkStatus.RUNNING]),
        ).limit(1)
    )
    if open_chunk is not None:
        return False
    # populate_existing: a worker's session already holds this Job from its claim; without a
    # re-read, a cancel committed since then would be overwritten with "completed".
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()
                          .execution_options(populate_existing=True)).one()
    # A batch that was not cancelled stays finalizing while its output and error files are
    # written up (nightowl.openai.finalize finishes it); a plain job finishes here.
    writes_files = job.origin == JobOrigin.BATCH and job.cancelling_at is None
    if job.status.terminal or (writes_files and job.status == JobStatus.FINALIZING):
        return False
    set_status(job, JobStatus.FINALIZING)
    counts = dict(
        session.execute(
            select(JobItem.status, func.count()).where(JobItem.job_id == job_id)
            .group_by(JobItem.status)
        ).tuples().all()
    )
    job.succeeded_items = counts.get(ItemStatus.SUCCEEDED, 0)
    job.failed_items = counts.get(ItemStatus.FAILED, 0)
    job.cancelled_items = counts.get(ItemStatus.CANCELLED, 0)
    job.expired_items = counts.get(ItemStatus.EXPIRED, 0)
    if writes_files:
        session.flush()
        return True
    if job.cancelling_at is not None:
        final = JobStatus.CANCELLED
    elif job.expired_items:
        final = JobStatus.EXPIRED
    else:
        final = JobStatus.COMPLETED
    set_status(job, final)
    session.flush()
    return True


def retry_job(
    *, session: Session, settings: Settings, job_id: str, tenant_id: str | None = None
) -> Job:
    parent = get_job(session, job_id, tenant_id=tenant_id)
    # The parent's row lock makes two concurrent retries one: the second finds the first child.
    session.execute(select(Job.id).where(Job.id == job_id).with_for_update())
    child = session.scalars(select(Job).where(Job.parent_job_id == job_id)
                            .order_by(Job.created_at).limit(1)).first()
    if child is not None:
        return child
    if not parent.status.terminal:
        raise Conflict(f"job {job_id} is {parent.status.value}; retry it once it has finished")
    redo = [ItemStatus.FAILED, ItemStatus.CANCELLED, ItemStatus.EXPIRED]
    count = session.scalar(
        select(func.count()).select_from(JobItem)
        .where(JobItem.job_id == job_id, JobItem.status.in_(redo))
    )
    if not count:
        raise Conflict(f"job {job_id} has no failed, cancelled or expired items to retry")
    field = parent.kind.input_field

    def lines() -> Iterator[ParsedLine]:
        for item in iter_items(session, job_id, statuses=redo):
            # A line that was invalid at submit has no input to run again: it stays an error.
            error = None if item_texts(item.input, field) else (
                ErrorCode.INVALID_INPUT, item.error_message or "invalid input line")
            yield ParsedLine(item.line_no or item.idx + 1, item.custom_id, item.input, error)

    version = session.get(ModelVersion, parent.model_version_id)
    assert version is not None
    spec = JobSpec(
        kind=parent.kind,
        model=version.ref,
        params=parent.params,
        chunk_size=parent.chunk_size,
        metadata={**parent.metadata_, "retry_of": parent.id},
        on_invalid=OnInvalid.SKIP,
        truncate=parent.truncate,
        queue=parent.queue,
        tenant_id=parent.tenant_id,
        parent_job_id=parent.id,
        priority=parent.priority,
    )
    # The parent's pinned version, as it ran: a retry never follows an alias that moved since.
    return submit_job(session=session, settings=settings, spec=spec, lines=lines(),
                      version=version)


def iter_items(
    session: Session,
    job_id: str,
    *,
    statuses: list[ItemStatus] | None = None,
    after_idx: int = -1,
    batch: int = 1000,
    limit: int | None = None,
) -> Iterator[JobItem]:
    """Rows in input order, fetched by keyset pages so memory stays flat for any job size."""
    yielded = 0
    while True:
        stmt = (
            select(JobItem)
            .where(JobItem.job_id == job_id, JobItem.idx > after_idx)
            .order_by(JobItem.idx)
            .limit(batch if limit is None else min(batch, limit - yielded))
        )
        if statuses is not None:
            stmt = stmt.where(JobItem.status.in_(statuses))
        rows = list(session.scalars(stmt))
        yield from rows
        yielded += len(rows)
        if len(rows) < batch or (limit is not None and yielded >= limit):
            return
        after_idx = rows[-1].idx
