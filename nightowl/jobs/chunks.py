"""Worker-side SQL for a chunk: claim under a lease, heartbeat, commit results with its mark."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nightowl.common.enums import ChunkStatus, ErrorCode, ItemStatus, JobStatus
from nightowl.common.items import ItemOutcome
from nightowl.jobs.service import stop_pending_chunks, try_finalize
from nightowl.platform.orm import Job, JobChunk, JobItem, ModelVersion, utcnow

log = logging.getLogger(__name__)
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


_COUNTED = [s for s in JobStatus if s.terminal or s == JobStatus.FINALIZING]


def _count_and_finalize(session: Session, job_id: str, counts: dict[ItemStatus, int]) -> None:
    """Add the chunk's outcomes to the job's counters, and finalize the job if no chunk is
    left, in a short transaction of its own.

    Exactly one commit finalizes: each worker asks after its own chunk committed, so the
    worker of the last chunk sees every other chunk finished, and try_finalize locks the row.
    The counters are progress for readers (finalize recounts them from the items), so where
    this does not finalize it need not wait for its commit to reach the disk: the job's row
    lock is held for microseconds, not for a flush."""
    session.execute(
        update(Job)
        # Once a job is finalizing its counters are recounted from its items: another chunk's
        # finalize may have committed between this chunk's two transactions, and adding this
        # chunk's outcomes on top would count them twice.
        .where(Job.id == job_id, Job.status.not_in(_COUNTED))
        .values(
            succeeded_items=Job.succeeded_items + counts[ItemStatus.SUCCEEDED],
            failed_items=Job.failed_items + counts[ItemStatus.FAILED],
            cancelled_items=Job.cancelled_items + counts[ItemStatus.CANCELLED],
            expired_items=Job.expired_items + counts[ItemStatus.EXPIRED],
        )
        .execution_options(synchronize_session=False)
    )
    if not try_finalize(session, job_id) and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = off"))
    session.commit()


def write_items(session: Session, outcomes: list[ItemOutcome], *, job_id: str, attempts: int,
                worker: str, device: str, now: datetime) -> None:
    """Write each item's result row (uncommitted). On PostgreSQL one UPDATE ... FROM unnest of
    arrays, a single statement whatever the chunk's size (bench/control_plane.py measures it
    against an executemany and a COPY); elsewhere an executemany."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_UNNEST_UPDATE, {
            "ids": [o.key for o in outcomes],
            "statuses": [ItemStatus(o.status).value for o in outcomes],
            "outputs": [None if o.output is None else json.dumps(o.output) for o in outcomes],
            "codes": [_code(o) for o in outcomes],
            "messages": [o.error_message for o in outcomes],
            "tokens_in": [o.tokens_in for o in outcomes],
            "tokens_out": [o.tokens_out for o in outcomes],
            "started": [o.started_at for o in outcomes],
            "finished": [o.finished_at or now for o in outcomes],
            "attempts": attempts, "worker": worker, "device": device, "job_id": job_id,
        })
        return
    session.execute(
        update(JobItem).execution_options(synchronize_session=False),
        [
            {
                # Both halves of the key: on PostgreSQL job_items is partitioned by job_id.
                "id": o.key,
                "job_id": job_id,
                "status": o.status,
                "output": o.output,
                "error_code": _code(o),
                "error_message": o.error_message,
                "tokens_in": o.tokens_in,
                "tokens_out": o.tokens_out,
                "attempts": attempts,
                "worker": worker,
                "device": device,
                "started_at": o.started_at,
                "finished_at": o.finished_at or now,
            }
            for o in outcomes
        ],
    )


def _code(o: ItemOutcome) -> str | None:
    # A str enum, or its value from callers that wrote it as text.
    return ErrorCode(o.error_code).value if o.error_code else None


_UNNEST_UPDATE = text(
    "UPDATE job_items AS i SET status = u.status, output = CAST(u.output AS json), "
    "error_code = u.error_code, error_message = u.error_message, tokens_in = u.tokens_in, "
    "tokens_out = u.tokens_out, attempts = :attempts, worker = :worker, device = :device, "
    "started_at = u.started_at, finished_at = u.finished_at "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:outputs AS text[]), "
    "CAST(:codes AS text[]), CAST(:messages AS text[]), CAST(:tokens_in AS integer[]), "
    "CAST(:tokens_out AS integer[]), CAST(:started AS timestamptz[]), "
    "CAST(:finished AS timestamptz[])) "
    "AS u(id, status, output, error_code, error_message, tokens_in, tokens_out, started_at, "
    "finished_at) WHERE i.job_id = :job_id AND i.id = u.id"
)


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
    """Write every item's row and the chunk's mark in one transaction, then the job's counters
    (and its finalize, for the last chunk) in a short one. Returns False (and writes nothing)
    if the lease was lost to another worker, whose results then stand.

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
        write_items(session, outcomes, job_id=claimed.job.id, attempts=chunk.attempts,
                    worker=worker, device=device, now=now)
    # The results and the chunk's mark are the truth, committed before the job row is touched:
    # several workers on one job do not queue on its row while their rows are written.
    session.commit()
    counts = {s: 0 for s in ItemStatus}
    for o in outcomes:
        counts[o.status] += 1
    for attempt in range(3):
        try:
            _count_and_finalize(session, claimed.job.id, counts)
            break
        except OperationalError:  # a deadlock, a restart: the chunk's results already stand
            session.rollback()
            if attempt == 2:
                # The maintenance pass finalizes a job whose chunks all finished.
                log.exception("updating job %s after its chunk committed failed",
                              claimed.job.id)
    return True
