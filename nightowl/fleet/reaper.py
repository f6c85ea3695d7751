"""The reaper: SQL is the source of truth and Redis a doorbell, so lost doorbells ring again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import TERMINAL_JOB_STATUSES, ChunkStatus, JobStatus, Queue, RunStatus
from nightowl.finetune.service import enqueue, mark_cancelled
from nightowl.fleet import heartbeats as fleet
from nightowl.fleet import retention
from nightowl.jobs import dispatch
from nightowl.jobs.service import stop_pending_chunks, try_finalize
from nightowl.openai import finalize as batch_finalize
from nightowl.openai import validation as batch_async
from nightowl.platform.orm import Job, JobChunk, TrainingRun, utcnow

# A message sent this recently may still be in flight to a worker; only older ones count as lost.
SEND_GRACE = timedelta(seconds=15)


@dataclass
class ReapReport:
    leases_released: int = 0
    chunks_resent: int = 0
    jobs_expired: int = 0
    runs_resent: int = 0
    dead_workers: int = 0
    batches_resent: int = 0
    batches_finalized: int = 0
    jobs_purged: int = 0
    partitions_dropped: int = 0
    files_purged: int = 0


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

    stale = now - timedelta(seconds=settings.requeue_after_seconds)
    report.chunks_resent = dispatch.resend_lost(
        session, now=now, grace=SEND_GRACE, stale=stale, queue_depth=queue_depth)
    # Chunks whose lease was released above, or that nobody topped up, join the window.
    report.chunks_resent += dispatch.top_up_all(session, settings)
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
    # Batches whose worker died after their last chunk, before their files were written up.
    report.batches_finalized = batch_finalize.finish_all(session)
    report.runs_resent = _resend_runs(session, now, stale, queue_depth)
    # Batches left validating by a lost message or a worker that died while checking them.
    report.batches_resent = batch_async.resend_stuck(
        session, now=now, grace=SEND_GRACE, stale=stale, queue_depth=queue_depth)
    # Last: what expired goes, and job_items' next time windows are made ahead.
    purged = retention.purge(session, settings)
    report.jobs_purged, report.files_purged = purged.jobs, purged.files
    report.partitions_dropped = len(purged.partitions_dropped)
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
        ).order_by(TrainingRun.priority.desc(), TrainingRun.created_at)
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
