"""The reaper: SQL is the source of truth and Redis only a doorbell, so lost doorbells are rung again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from nightowl.config import Settings
from nightowl.enums import TERMINAL_JOB_STATUSES, ChunkStatus, JobStatus
from nightowl.jobs import dispatch, stop_pending_chunks, try_finalize
from nightowl.models import Job, JobChunk, utcnow

# A message sent this recently may still be in flight to a worker; only older ones count as lost.
SEND_GRACE = timedelta(seconds=15)


@dataclass
class ReapReport:
    leases_released: int = 0
    chunks_resent: int = 0
    jobs_expired: int = 0


def reap(
    session: Session, settings: Settings, *, queue_depth: Callable[[str], int | None]
) -> ReapReport:
    report = ReapReport()
    now = utcnow()
    released = session.execute(
        update(JobChunk)
        .where(JobChunk.status == ChunkStatus.RUNNING, JobChunk.lease_expires_at < now)
        .values(status=ChunkStatus.PENDING, lease_owner=None, enqueued_at=None)
        .execution_options(synchronize_session=False)
    )
    report.leases_released = int(released.rowcount)  # type: ignore[attr-defined]
    session.commit()

    overdue = session.scalars(
        select(Job).where(Job.deadline_at <= now, Job.status.not_in(TERMINAL_JOB_STATUSES))
    ).all()
    for job in overdue:
        stop_pending_chunks(session, job, ChunkStatus.EXPIRED)
        if try_finalize(session, job.id):
            report.jobs_expired += 1
        session.commit()

    live = select(Job.id).where(Job.status.not_in(TERMINAL_JOB_STATUSES))
    depth_cache: dict[str, int | None] = {}
    stale = now - timedelta(seconds=settings.requeue_after_seconds)
    rows = session.execute(
        select(JobChunk.job_id, JobChunk.chunk_no, JobChunk.enqueued_at, Job.queue)
        .join(Job, Job.id == JobChunk.job_id)
        .where(
            JobChunk.status == ChunkStatus.PENDING,
            JobChunk.job_id.in_(live),
            or_(JobChunk.enqueued_at.is_(None), and_(JobChunk.enqueued_at < now - SEND_GRACE)),
        )
    ).all()
    resend: dict[str, list[int]] = {}
    for job_id, chunk_no, enqueued_at, queue in rows:
        if queue not in depth_cache:
            depth_cache[queue] = queue_depth(queue)
        depth = depth_cache[queue]
        if depth is None:
            continue  # broker down: nothing can be sent now anyway
        # An empty queue means a pending chunk's message is gone (a broker restart drops them);
        # with messages still waiting, only a chunk untouched for a long time is presumed lost.
        if enqueued_at is None or depth == 0 or enqueued_at < stale:
            resend.setdefault(job_id, []).append(chunk_no)
    for job_id, numbers in resend.items():
        job = session.get(Job, job_id)
        if job is not None:
            report.chunks_resent += dispatch(session, job, numbers)
    # Jobs whose chunks all finished but whose finalizing commit was lost (a crash in between).
    for job_id in session.scalars(
        select(Job.id).where(
            Job.status.not_in([*TERMINAL_JOB_STATUSES, JobStatus.VALIDATING]),
            ~select(JobChunk.id).where(
                JobChunk.job_id == Job.id,
                JobChunk.status.in_([ChunkStatus.PENDING, ChunkStatus.RUNNING]),
            ).exists(),
        )
    ).all():
        try_finalize(session, job_id)
        session.commit()
    return report
