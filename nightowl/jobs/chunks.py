"""Worker-side SQL for a chunk: claim under a lease, heartbeat, commit results with its mark."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from nightowl.common.enums import ChunkStatus, ErrorCode, ItemStatus, JobStatus
from nightowl.common.items import ItemOutcome
from nightowl.jobs.service import stop_pending_chunks, try_finalize
from nightowl.platform.orm import Job, JobChunk, JobItem, ModelVersion, utcnow

__all__ = ["ClaimedChunk", "ItemOutcome", "claim", "complete", "heartbeat", "job_state"]

# A chunk whose worker stopped it ends with the stop's status.
_STOPPED_CHUNK = {ItemStatus.CANCELLED: ChunkStatus.CANCELLED,
                  ItemStatus.EXPIRED: ChunkStatus.EXPIRED}


@dataclass
class ClaimedChunk:
    job: Job
    chunk: JobChunk
    version: ModelVersion
    items: list[JobItem]


def claim(
    session: Session, job_id: str, chunk_no: int, *, owner: str, lease_seconds: int
) -> ClaimedChunk | None:
    """Take the chunk if it is pending or its lease ran out; None if someone else has it or it
    is finished (a redelivered or duplicate message is then a no-op)."""
    now = utcnow()
    job = session.get(Job, job_id)
    if job is None:
        return None
    if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED) or (
        job.deadline_at is not None and job.deadline_at <= now
    ):
        stopped = ChunkStatus.CANCELLED if job.cancelling_at else ChunkStatus.EXPIRED
        _release_expired_lease(session, job_id, chunk_no, now)
        stop_pending_chunks(session, job, stopped)
        try_finalize(session, job_id)
        session.commit()
        return None
    result = session.execute(
        update(JobChunk)
        .where(
            JobChunk.job_id == job_id,
            JobChunk.chunk_no == chunk_no,
            or_(
                JobChunk.status == ChunkStatus.PENDING,
                and_(JobChunk.status == ChunkStatus.RUNNING, JobChunk.lease_expires_at < now),
            ),
        )
        .values(
            status=ChunkStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=JobChunk.attempts + 1,
            started_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    if job.status == JobStatus.QUEUED:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.IN_PROGRESS, in_progress_at=now)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    chunk = session.scalars(
        select(JobChunk).where(JobChunk.job_id == job_id, JobChunk.chunk_no == chunk_no)
    ).one()
    session.refresh(job)
    version = session.get(ModelVersion, job.model_version_id)
    assert version is not None
    items = list(session.scalars(
        select(JobItem).where(
            JobItem.job_id == job_id,
            JobItem.idx >= chunk.start_idx,
            JobItem.idx < chunk.end_idx,
            JobItem.status == ItemStatus.PENDING,
        ).order_by(JobItem.idx)
    ))
    # End the read transaction before the model loads and runs: on SQLite it holds the write
    # lock (BEGIN IMMEDIATE), which would stall every other worker for the whole chunk.
    session.commit()
    return ClaimedChunk(job=job, chunk=chunk, version=version, items=items)


def _release_expired_lease(session: Session, job_id: str, chunk_no: int, now: datetime) -> None:
    session.execute(
        update(JobChunk)
        .where(
            JobChunk.job_id == job_id,
            JobChunk.chunk_no == chunk_no,
            JobChunk.status == ChunkStatus.RUNNING,
            JobChunk.lease_expires_at < now,
        )
        .values(status=ChunkStatus.PENDING, lease_owner=None)
        .execution_options(synchronize_session=False)
    )


def heartbeat(session: Session, chunk_id: int, *, owner: str, lease_seconds: int) -> bool:
    result = session.execute(
        update(JobChunk)
        .where(JobChunk.id == chunk_id, JobChunk.lease_owner == owner,
               JobChunk.status == ChunkStatus.RUNNING)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def job_state(session: Session, job_id: str) -> tuple[JobStatus, datetime | None]:
    row = session.execute(
        select(Job.status, Job.deadline_at).where(Job.id == job_id)
    ).one()
    return row[0], row[1]


def complete(
    session: Session,
    claimed: ClaimedChunk,
    outcomes: list[ItemOutcome],
    *,
    owner: str,
    worker: str,
    device: str,
    batches: int,
    device_seconds: float,
) -> bool:
    """Write every item's row and the chunk's mark in one transaction. Returns False (and writes
    nothing) if the lease was lost to another worker, whose results then stand.

    A chunk with stopped items (a cancel or a deadline seen between micro-batches) ends
    cancelled or expired, else done."""
    now = utcnow()
    chunk = claimed.chunk
    final_status = next((_STOPPED_CHUNK[o.status] for o in outcomes if o.status in _STOPPED_CHUNK),
                        ChunkStatus.DONE)
    marked = session.execute(
        update(JobChunk)
        .where(JobChunk.id == chunk.id, JobChunk.lease_owner == owner,
               JobChunk.status == ChunkStatus.RUNNING)
        .values(status=final_status, finished_at=now, batches=batches,
                device_seconds=device_seconds, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if marked.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    if outcomes:
        session.execute(
            update(JobItem).execution_options(synchronize_session=False),
            [
                {
                    # Both halves of the key: PostgreSQL prunes the update to one partition.
                    "id": o.key,
                    "job_id": claimed.job.id,
                    "status": o.status,
                    "output": o.output,
                    # A str enum, or its value from callers that wrote it as text.
                    "error_code": ErrorCode(o.error_code).value if o.error_code else None,
                    "error_message": o.error_message,
                    "tokens_in": o.tokens_in,
                    "tokens_out": o.tokens_out,
                    "attempts": chunk.attempts,
                    "worker": worker,
                    "device": device,
                    "started_at": o.started_at,
                    "finished_at": o.finished_at or now,
                }
                for o in outcomes
            ],
        )
    counts = {s: 0 for s in ItemStatus}
    for o in outcomes:
        counts[o.status] += 1
    # Locking the job row here serialises this job's chunk commits, so the count of open chunks
    # in try_finalize sees every other committed chunk: exactly one commit finalizes.
    session.execute(
        update(Job)
        .where(Job.id == claimed.job.id)
        .values(
            succeeded_items=Job.succeeded_items + counts[ItemStatus.SUCCEEDED],
            failed_items=Job.failed_items + counts[ItemStatus.FAILED],
            cancelled_items=Job.cancelled_items + counts[ItemStatus.CANCELLED],
            expired_items=Job.expired_items + counts[ItemStatus.EXPIRED],
        )
        .execution_options(synchronize_session=False)
    )
    try_finalize(session, claimed.job.id)
    session.commit()
    return True
