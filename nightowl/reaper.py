"""The reaper: SQL is the source of truth and Redis a doorbell, so lost doorbells ring again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from nightowl import fleet
from nightowl.config import Settings
from nightowl.enums import TERMINAL_JOB_STATUSES, ChunkStatus, JobStatus, Queue, RunStatus
from nightowl.finetunes import enqueue, mark_cancelled
from nightowl.jobs import dispatch, stop_pending_chunks, try_finalize
from nightowl.models import Job, JobChunk, TrainingRun, utcnow

# A message sent this recently may still be in flight to a worker; only older ones count as lost.
SEND_GRACE = timedelta(seconds=15)


@dataclass
class ReapReport:
    leases_released: int = 0
    chunks_resent: int = 0
    jobs_expired: int = 0
    runs_resent: int = 0
    dead_workers: int = 0


def reap(
    session: Session, settings: Settings, *, queue_depth: Callable[[str], int | None]
) -> ReapReport:
    report = ReapReport()
    # First the leases of workers that stopped heartbeating, so their chunks are re-sent below.
    dead = fleet.release_dead(session, settings)
    report.dead_workers, report.leases_released = len(dead.workers), dead.chunks
    now = utcnow()
    released = session.execute(
        update(JobChunk)
        .where(JobChunk.status == ChunkStatus.RUNNING, JobChunk.lease_expires_at < now)
        .values(status=ChunkStatus.PENDING, lease_owner=None, enqueued_at=None)
        .execution_options(synchronize_session=False)
    )
    report.leases_released += int(released.rowcount)  # type: ignore[attr-defined]
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
        if (resent_job := session.get(Job, job_id)) is not None:
            report.chunks_resent += dispatch(session, resent_job, numbers)
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
    report.runs_resent = _resend_runs(session, now, stale, queue_depth)
    return report


def _resend_runs(session: Session, now: datetime, stale: datetime,
                 queue_depth: Callable[[str], int | None]) -> int:
    """A run whose worker died (lease lapsed) or whose message was lost is sent again; the
    next worker resumes it from its last checkpoint."""
    orphaned = session.scalars(
        select(TrainingRun.id).where(
            or_(
                and_(TrainingRun.status.in_([RunStatus.RUNNING, RunStatus.CANCELLING]),
                     TrainingRun.lease_expires_at < now),
                and_(TrainingRun.status == RunStatus.QUEUED,
                     TrainingRun.created_at < now - SEND_GRACE),
            )
        )
    ).all()
    if not orphaned:
        return 0
    depth = queue_depth(Queue.TRAIN.value)
    sent = 0
    for run_id in orphaned:
        run = session.get(TrainingRun, run_id)
        if run is None:
            continue
        if run.status == RunStatus.CANCELLING:
            mark_cancelled(session, run_id, -1)
            continue
        waiting = run.status == RunStatus.QUEUED and depth != 0 and run.created_at >= stale
        if depth is None or waiting:
            continue
        enqueue(run_id)
        sent += 1
    return sent
