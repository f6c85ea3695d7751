"""Batches whose input is checked in the background, as OpenAI does it.

POST /v1/batches reads a small input file before it answers (a bad batch is "failed" at once).
A file over `batch_inline_check_bytes` is not read there: the batch is stored as "validating",
a cpu worker reads and checks it (task nightowl.validate_batch), and the batch then runs
("in_progress") or fails with the same line-numbered errors the inline path gives.

SQL holds the truth. The message is only a doorbell: a lost message, a broker that was down
at create, or a worker that died mid-check leaves the row "validating", and the reaper rings
again. A check runs in one transaction that starts by claiming the row (an UPDATE that only a
validating row matches), so a second message for the same batch waits for the first to commit
and then finds nothing to do; a crash rolls everything back and the row is still validating.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import JobOrigin, JobStatus, Queue, TaskName
from nightowl.common.errors import ArtifactError, Conflict, NightowlError, NotFound, QuotaExceeded
from nightowl.jobs import quotas
from nightowl.openai import batches
from nightowl.openai import finalize as batch_finalize
from nightowl.openai.fields import OpenAIFields, read_openai
from nightowl.openai.lines import ENDPOINTS
from nightowl.platform import retention
from nightowl.platform.celery_app import send
from nightowl.platform.orm import Job, new_job_id, utcnow
from nightowl.storage.files import get_file

log = logging.getLogger(__name__)


def create_batch(
    *, session: Session, settings: Settings, tenant_id: str | None, input_file_id: str,
    endpoint: str, completion_window: str, metadata: dict[str, Any] | None = None,
    output_expires_after: int | None = None,
) -> Job:
    """A batch: checked now when its file is small, else stored as validating and checked by
    a worker. Either way a bad request (endpoint, window, metadata, file) raises here."""
    batches.check_request(endpoint, completion_window, metadata)
    row = batches.input_file(session, input_file_id, tenant_id=tenant_id)
    if row.bytes <= settings.batch_inline_check_bytes:
        job = batches.check_and_submit(
            session=session, settings=settings, tenant_id=tenant_id, row=row, endpoint=endpoint,
            completion_window=completion_window, metadata=metadata,
            output_expires_after=output_expires_after)
        return _finished_if_all_refused(session, job)
    # A tenant already at a limit is told now (429); one whose file turns out to hold more
    # items than its quota allows learns it from the failed batch's errors.
    quotas.admit(session, tenant_id)
    kind = ENDPOINTS[endpoint]
    now = utcnow()
    job = Job(
        id=new_job_id(JobOrigin.BATCH.id_prefix), origin=JobOrigin.BATCH, tenant_id=tenant_id,
        kind=kind, model_ref="",
        # Replaced by the model the lines name once they are read.
        model_version_id=batches.placeholder_version(session, kind).id, params={},
        status=JobStatus.VALIDATING, validating_at=now, chunk_size=settings.chunk_size,
        queue=(metadata or {}).get(batches.QUEUE_KEY, Queue.CPU.value),
        deadline_at=now + batches.COMPLETION_WINDOWS[completion_window],
        metadata_=OpenAIFields(endpoint=endpoint, completion_window=completion_window,
                               metadata=metadata or None, model=None).as_metadata(),
        input_file_id=row.id, total_items=0,
        retain_seconds=retention.resolve(session, settings, tenant_id, output_expires_after),
    )
    session.add(job)
    session.commit()
    ring(job.id)
    return job


def ring(job_id: str) -> bool:
    """Ask a cpu worker to check the batch; a broker that does not answer leaves it to the
    reaper (the row says validating, which is all it needs)."""
    try:
        send(TaskName.VALIDATE_BATCH, [job_id], queue=Queue.CPU.value)
    except Exception as e:  # any broker failure: SQL keeps the batch
        log.warning("broker unavailable; batch %s waits for the reaper to be checked: %s",
                    job_id, e)
        return False
    return True


def validate(session: Session, settings: Settings, job_id: str) -> str:
    """Check a validating batch and store its items; what happened, in a word."""
    claimed = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.VALIDATING)
        .values(validating_at=utcnow()).execution_options(synchronize_session=False))
    if not claimed.rowcount:  # type: ignore[attr-defined]
        session.rollback()
        return "not validating"  # cancelled, already checked, or a duplicate message
    job = session.scalars(select(Job).where(Job.id == job_id)
                          .execution_options(populate_existing=True)).one()
    meta = read_openai(job)
    try:
        assert job.input_file_id is not None
        row = get_file(session, job.input_file_id)
        job = batches.check_and_submit(
            session=session, settings=settings, tenant_id=job.tenant_id, row=row,
            endpoint=meta.endpoint, completion_window=meta.completion_window,
            metadata=meta.metadata, job_id=job_id)
    except ArtifactError:
        raise  # the store is unreachable: the row stays validating and the reaper retries
    except Conflict:
        session.rollback()
        return "not validating"
    except NightowlError as e:
        session.rollback()
        return _fail(session, job_id, e)
    return _finished_if_all_refused(session, job).status.value


def _finished_if_all_refused(session: Session, job: Job) -> Job:
    """Every line refused on its own: nothing runs, so the files are written up right here."""
    if job.status == JobStatus.FINALIZING:
        batch_finalize.finish(session, job.id)
        session.refresh(job)
    return job


def _fail(session: Session, job_id: str, e: NightowlError) -> str:
    code = ("quota_exceeded" if isinstance(e, QuotaExceeded)
            else "file_not_found" if isinstance(e, NotFound) else "invalid_input")
    still = session.scalars(select(Job).where(Job.id == job_id, Job.status
                                              == JobStatus.VALIDATING).with_for_update()).first()
    if still is None:
        session.rollback()
        return "not validating"
    batches.fail_validating(session, job_id, [
        {"code": code, "message": str(e), "line": None, "param": "input_file_id"}])
    return JobStatus.FAILED.value


def resend_stuck(session: Session, *, now: datetime, grace: timedelta, stale: datetime,
                 queue_depth: Callable[[str], int | None]) -> int:
    """Ring again for batches left validating: their message was lost (the cpu queue is empty
    yet they wait) or is very old. A batch a worker is checking right now holds its row lock:
    PostgreSQL skips it here (SKIP LOCKED); on SQLite the stamp below waits for that check to
    commit and then matches nothing. Idempotent: a duplicate message finds nothing to do."""
    session.commit()  # the caller's work is its own: only the probe below is rolled back
    ids = session.scalars(
        select(Job.id).where(Job.status == JobStatus.VALIDATING,
                             Job.origin == JobOrigin.BATCH,
                             Job.validating_at < now - grace)
        .order_by(Job.validating_at).with_for_update(skip_locked=True)
    ).all()
    session.rollback()  # the locks were only a probe for rows being checked
    if not ids:
        return 0
    depth = queue_depth(Queue.CPU.value)
    if depth is None:  # broker down: nothing can be sent anyway
        return 0
    sent = 0
    for job_id in ids:
        stamp = update(Job).where(Job.id == job_id, Job.status == JobStatus.VALIDATING)
        if depth:  # messages are waiting: only a stale one counts as lost
            stamp = stamp.where(Job.validating_at < stale)
        touched = session.execute(stamp.values(validating_at=now)
                                  .execution_options(synchronize_session=False))
        session.commit()
        if touched.rowcount and ring(job_id):  # type: ignore[attr-defined]
            sent += 1
    return sent
