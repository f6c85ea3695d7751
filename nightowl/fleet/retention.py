"""The purge: finished jobs whose results expired, and files past their expires_at, go.

A job's expiry is fixed when it finishes (nightowl.platform.retention), a file's when it is
uploaded; a job still running, or one kept forever, has none and is never touched, and a file
a live job still reads waits for that job. What goes:

- its items: on PostgreSQL a whole time-window partition of job_items is dropped once every job
  in the window has expired (no row-by-row DELETE, no bloat); items of expired jobs in windows
  that are not all expired, and on SQLite, are deleted by job;
- the job row with its chunks (a batch's output and error files are rendered from the items,
  so they go with it); schedule runs and retries that named it keep their rows, unlinked;
- an expired file's bytes, from this host and the artifact store, then its row once no job
  names it as input.

Run by the maintenance pass (nightowl.fleet.reaper) and by `nightowl jobs purge`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import TERMINAL_JOB_STATUSES
from nightowl.platform import partitions
from nightowl.platform.orm import File, Job, JobItem, ScheduleRun, utcnow
from nightowl.storage.files import remove_bytes

log = logging.getLogger(__name__)

# Jobs per transaction: short transactions, and a pass that cannot run for ever.
BATCH = 500
MAX_BATCHES = 20
# A window is closed this long after its end (or one window length, if shorter): ids come from
# each host's clock. A host running late past it only costs speed: its items land in the
# default partition and go by row.
CLOCK_GRACE = timedelta(minutes=5)


@dataclass
class PurgeReport:
    jobs: int = 0
    items: int = 0
    partitions_dropped: list[str] = field(default_factory=list)
    files: int = 0
    file_bytes: int = 0
    job_ids: list[str] = field(default_factory=list)
    file_ids: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        return not (self.jobs or self.partitions_dropped or self.files)


def purge(session: Session, settings: Settings, *, now: datetime | None = None,
          dry_run: bool = False) -> PurgeReport:
    """Purge what expired by `now` (default: now). `dry_run` reports without changing."""
    now = now or utcnow()
    report = PurgeReport()
    partitioned = partitions.is_partitioned(session)
    if partitioned and not dry_run:
        partitions.ensure(session, window_seconds=settings.partition_seconds)
    if partitioned:
        grace = min(CLOCK_GRACE, timedelta(seconds=settings.partition_seconds))
        _drop_windows(session, now, grace, report, dry_run)
    _purge_jobs(session, now, report, dry_run)
    _purge_files(session, settings, now, report, dry_run)
    if not report.nothing:
        log.info("purged %d job(s) (%d items, %d partition(s) dropped) and %d file(s)%s",
                 report.jobs, report.items, len(report.partitions_dropped), report.files,
                 " (dry run)" if dry_run else "")
    return report


def _expired(now: datetime) -> list[ColumnElement[bool]]:
    return [Job.expires_at.is_not(None), Job.expires_at <= now,
            Job.status.in_(TERMINAL_JOB_STATUSES)]


def _drop_windows(session: Session, now: datetime, grace: timedelta, report: PurgeReport,
                  dry_run: bool) -> None:
    # A window is over by the real clock too: a `now` in the future (a test, an operator's
    # what-if) must never drop the window that today's jobs are being written to.
    closed_by = int((min(now, utcnow()) - grace).timestamp() * 1000)
    for window in partitions.windows(session):
        if window.hi_ms > closed_by:
            continue
        in_window: tuple[ColumnElement[bool], ...] = (Job.id >= window.lo, Job.id < window.hi)
        kept = session.scalar(select(exists().where(
            *in_window, ~(Job.expires_at.is_not(None) & (Job.expires_at <= now)))))
        if kept:
            continue
        ids, items = _jobs_in(session, in_window)
        if dry_run:
            report.partitions_dropped.append(window.name)
            report.items += items
            report.jobs += len(ids)
            report.job_ids += ids
            continue
        try:
            partitions.drop(session, window)
        except OperationalError as e:  # lock_timeout: a long reader holds the table
            session.rollback()
            log.warning("partition %s not dropped this pass: %s", window.name, e.orig)
            continue
        report.partitions_dropped.append(window.name)
        report.items += items
        _delete_jobs(session, ids, report)
        session.commit()


def _jobs_in(session: Session, where: tuple[ColumnElement[bool], ...]) -> tuple[list[str], int]:
    rows = session.execute(select(Job.id, Job.total_items).where(*where)).all()
    return [r[0] for r in rows], sum(r[1] or 0 for r in rows)


def _purge_jobs(session: Session, now: datetime, report: PurgeReport, dry_run: bool) -> None:
    seen: set[str] = set(report.job_ids)
    for _ in range(MAX_BATCHES):
        stmt = select(Job.id).where(*_expired(now)).order_by(Job.expires_at).limit(BATCH)
        if dry_run:
            stmt = stmt.where(Job.id.not_in(seen)) if seen else stmt
        ids = list(session.scalars(stmt))
        if not ids:
            return
        if dry_run:
            seen.update(ids)
            report.items += int(session.scalar(
                select(func.count()).select_from(JobItem).where(JobItem.job_id.in_(ids))) or 0)
            report.jobs += len(ids)
            report.job_ids += ids
            continue
        gone = session.execute(delete(JobItem).where(JobItem.job_id.in_(ids))
                               .execution_options(synchronize_session=False))
        report.items += int(gone.rowcount)  # type: ignore[attr-defined]
        _delete_jobs(session, ids, report)
        session.commit()


def _delete_jobs(session: Session, ids: list[str], report: PurgeReport) -> None:
    """The job rows (their chunks cascade); rows that name them are kept, unlinked."""
    for start in range(0, len(ids), BATCH):
        part = ids[start:start + BATCH]
        session.execute(update(ScheduleRun).where(ScheduleRun.job_id.in_(part))
                        .values(job_id=None).execution_options(synchronize_session=False))
        session.execute(update(Job).where(Job.parent_job_id.in_(part))
                        .values(parent_job_id=None).execution_options(synchronize_session=False))
        session.execute(delete(Job).where(Job.id.in_(part))
                        .execution_options(synchronize_session=False))
    report.jobs += len(ids)
    report.job_ids += ids


def _purge_files(session: Session, settings: Settings, now: datetime, report: PurgeReport,
                 dry_run: bool) -> None:
    # A job that has not finished may still read its input (a batch checked in the
    # background reads it after creation): its file waits for it.
    in_use = exists().where(Job.input_file_id == File.id,
                            Job.status.not_in(TERMINAL_JOB_STATUSES))
    rows = session.execute(
        select(File.id, File.path, File.bytes)
        .where(File.expires_at.is_not(None), File.expires_at <= now, File.deleted_at.is_(None),
               ~in_use)
        .limit(BATCH * MAX_BATCHES)
    ).all()
    if not rows:
        return
    ids = [r[0] for r in rows]
    report.files += len(rows)
    report.file_bytes += sum(r[2] for r in rows)
    report.file_ids += ids
    if dry_run:
        return
    # The rows say "deleted" before the bytes go: a reader in between gets a 404, never a
    # live row whose bytes are missing.
    session.execute(update(File).where(File.id.in_(ids)).values(deleted_at=utcnow())
                    .execution_options(synchronize_session=False))
    session.commit()
    for file_id, path, _ in rows:
        remove_bytes(file_id, path, settings)
    named = exists().where(Job.input_file_id == File.id)
    session.execute(delete(File).where(File.id.in_(ids), ~named)
                    .execution_options(synchronize_session=False))
    session.commit()
