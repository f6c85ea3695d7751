"""A batch's finalizing step: "finalizing" while its output and error files are written up.

When a batch's last chunk commits, `jobs.try_finalize` leaves it "finalizing" (a plain job
finishes there). The worker that committed it then finishes it here: each file is rendered
once, streamed from job_items in keyset pages (memory stays flat however big the batch), and
its size kept on the row, so the files API never renders a whole file to answer files.list or
files.retrieve. The files themselves stay in SQL, which every API host reads; copying them into
the artifact store too would only double the bytes kept and add a failure that could hold a
batch in finalizing. Then the batch is "completed" (or "expired") with its file ids.

Idempotent and crash-safe: a row is finished in one transaction that starts by claiming it
(only a finalizing row matches), and the reaper finishes any batch a crash left finalizing.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nightowl.common.enums import JobOrigin, JobStatus
from nightowl.jobs.service import set_status
from nightowl.openai import batches
from nightowl.openai.batches import ERRORS, OUTPUT
from nightowl.openai.fields import write_openai
from nightowl.openai.output import BatchFile, iter_lines
from nightowl.platform.orm import Job

log = logging.getLogger(__name__)


def finish(session: Session, job_id: str, *, origin: JobOrigin | None = None) -> bool:
    """Write up a finalizing batch and complete it; False if it is not finalizing (a plain
    job, not yet done, or already finished by another process). A caller that knows the job's
    `origin` (a worker after its chunk) spares a plain job any SQL here."""
    if origin is not None and origin != JobOrigin.BATCH:
        return False
    # The claim takes the row lock (PostgreSQL) or the write lock (SQLite) first, so a second
    # finisher waits here and then matches nothing.
    claimed = session.execute(
        update(Job).where(Job.id == job_id, Job.origin == JobOrigin.BATCH,
                          Job.status == JobStatus.FINALIZING)
        .values(status=JobStatus.FINALIZING).execution_options(synchronize_session=False))
    if not claimed.rowcount:  # type: ignore[attr-defined]
        session.rollback()
        return False
    # The caller's session may hold this batch's items from before their results were
    # written (a worker's own chunk): render what SQL holds now.
    session.expire_all()
    job = session.scalars(select(Job).where(Job.id == job_id)).one()
    failed = job.failed_items + job.cancelled_items + job.expired_items
    sizes = {which: _bytes(session, BatchFile(job, which))
             for which, count in ((OUTPUT, job.succeeded_items), (ERRORS, failed)) if count}
    write_openai(job, file_bytes=sizes, usage=batches.usage(session, job))
    set_status(job, JobStatus.EXPIRED if job.expired_items else JobStatus.COMPLETED)
    session.commit()
    return True


def finish_all(session: Session) -> int:
    """Every batch left finalizing (its worker died between the last chunk and the files)."""
    session.commit()  # the caller's work is its own
    ids = session.scalars(select(Job.id).where(
        Job.status == JobStatus.FINALIZING,
        Job.origin == JobOrigin.BATCH)).all()
    session.rollback()
    return sum(finish(session, job_id) for job_id in ids)


def _bytes(session: Session, bf: BatchFile) -> int:
    return sum(len(line.encode("utf-8")) for line in iter_lines(session, bf))
