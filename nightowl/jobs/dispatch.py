"""Dispatch from SQL: a small window of chunks in the broker, the next picked when one is taken.

Redis serves a queue first in, first out: had every chunk gone to the broker at submit, a small
job would wait behind all of a big one. So only `dispatch_window` chunks per queue wait in the
broker; the rest wait in SQL, and each time a worker takes or finishes a chunk it tops the
window up, choosing by priority (higher first), then fair share (the tenant with the fewest
chunks running or waiting in the broker), then age. `enqueued_at` on a pending chunk means
"in the window"; the reaper re-sends those the broker lost and fills the window if nobody did.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, JobStatus, TaskName
from nightowl.platform.celery_app import send
from nightowl.platform.orm import Job, JobChunk, utcnow

log = logging.getLogger(__name__)

# Only these jobs have chunks a worker may still claim.
LIVE = (JobStatus.QUEUED, JobStatus.IN_PROGRESS)


@dataclass(order=True)
class _Candidate:
    """A tenant's best job with chunks to send. Sort key first: higher priority, then the less
    loaded tenant, then the older job. Within one tenant the load is the same for every job,
    so its best job is the one that sorts first: one candidate per tenant decides the pick."""

    neg_priority: int
    load: int
    created_at: datetime
    job_id: str
    tenant_id: str | None = field(compare=False)
    next_chunks: list[int] | None = field(default=None, compare=False)


def top_up(session: Session, settings: Settings, queue: str) -> int:
    """Send chunks until `queue` has `dispatch_window` waiting in the broker; returns how many.

    Commits the session. Safe to call from any number of workers at once: the pick runs under
    a per-queue lock (a PostgreSQL advisory lock; SQLite's single writer does it there)."""
    picked = _pick(session, queue, settings.dispatch_window)
    session.commit()
    return _send(session, queue, picked)


def top_up_all(session: Session, settings: Settings) -> int:
    queues = session.scalars(select(Job.queue).where(Job.status.in_(LIVE)).distinct()).all()
    session.commit()
    return sum(top_up(session, settings, q) for q in queues)


def resend_lost(
    session: Session,
    *,
    now: datetime,
    grace: timedelta,
    stale: datetime,
    queue_depth: Callable[[str], int | None],
) -> int:
    """Send again the window's chunks the broker no longer holds (a broker restart drops its
    queues). A chunk still waiting is only sent twice when its queue is empty or it is stale;
    a duplicate message is harmless anyway, the claim in SQL lets only one worker run it."""
    rows = session.execute(
        select(JobChunk.job_id, JobChunk.chunk_no, JobChunk.enqueued_at, Job.queue)
        .join(Job, Job.id == JobChunk.job_id)
        .where(Job.status.in_(LIVE), JobChunk.status == ChunkStatus.PENDING,
               JobChunk.enqueued_at < now - grace)
        .order_by(Job.priority.desc(), JobChunk.enqueued_at)
    ).all()
    depths: dict[str, int | None] = {}
    lost: dict[str, list[tuple[str, int]]] = {}
    for job_id, chunk_no, enqueued_at, queue in rows:
        if queue not in depths:
            depths[queue] = queue_depth(queue)
        depth = depths[queue]
        if depth is not None and (depth == 0 or (enqueued_at is not None and enqueued_at < stale)):
            lost.setdefault(queue, []).append((job_id, chunk_no))
    return sum(_send(session, queue, chunks, stamp=True) for queue, chunks in lost.items())


def _pick(session: Session, queue: str, window: int) -> list[tuple[str, int]]:
    """Choose the chunks to send and mark them in the window (uncommitted).

    Reads only the chunks in flight (at most the window plus one per worker), one entry of the
    ready index per tenant with work waiting, and the chunks it picks: the cost does not grow
    with the number of live jobs."""
    if _waiting(session, queue) >= window:
        return []  # the window is full: no need to queue for the lock
    _lock(session, queue)
    loads, waiting = _loads(session, queue)
    room = window - waiting
    if room <= 0:
        return []
    candidates = _candidates(session, queue, loads)
    picked: list[tuple[str, int]] = []
    while room > 0 and candidates:
        best = min(candidates)
        if best.next_chunks is None:
            best.next_chunks = list(session.scalars(
                select(JobChunk.chunk_no)
                .where(JobChunk.job_id == best.job_id, *_READY)
                .order_by(JobChunk.chunk_no).limit(room)
            ))
        if not best.next_chunks:
            candidates.remove(best)
            after = _best(session, queue, best.tenant_id, best.load, after=best)
            if after is not None:
                candidates.append(after)
            continue
        picked.append((best.job_id, best.next_chunks.pop(0)))
        room -= 1
        # The tenant's load grows with what it was just given; its next pick waits its turn.
        best.load += 1
    _mark(session, picked, utcnow())
    return picked


# A chunk in SQL's queue, not yet in the broker (the ready index's condition).
_READY = (JobChunk.status == ChunkStatus.PENDING, JobChunk.enqueued_at.is_(None))
# The same, as SQL text over job_chunks aliased `c`; the ready index's WHERE says the same.
_READY_SQL = f"c.status = '{ChunkStatus.PENDING.value}' AND c.enqueued_at IS NULL"
_IN_WINDOW = (JobChunk.status == ChunkStatus.PENDING, JobChunk.enqueued_at.is_not(None))


def _waiting(session: Session, queue: str) -> int:
    return session.scalar(
        select(func.count()).select_from(JobChunk).where(JobChunk.queue == queue, *_IN_WINDOW)
    ) or 0


def _loads(session: Session, queue: str) -> tuple[dict[str | None, int], int]:
    """Each tenant's chunks running or waiting in the broker, and how many of them wait."""
    loads: dict[str | None, int] = {}
    waiting = 0
    in_flight = or_(JobChunk.status == ChunkStatus.RUNNING, and_(*_IN_WINDOW))
    for tenant, status, n in session.execute(
        select(JobChunk.tenant_id, JobChunk.status, func.count())
        .join(Job, Job.id == JobChunk.job_id)
        .where(JobChunk.queue == queue, in_flight, Job.status.in_(LIVE))
        .group_by(JobChunk.tenant_id, JobChunk.status)
    ).tuples():
        loads[tenant] = loads.get(tenant, 0) + n
        if status == ChunkStatus.PENDING:
            waiting += n
    return loads, waiting


def _candidates(session: Session, queue: str, loads: dict[str | None, int]) -> list[_Candidate]:
    """Each tenant's best live job with chunks in SQL's queue. The tenants come from a skip
    scan of the ready index (a recursive query: one probe per tenant, in one round trip), each
    one's best job from one more probe; then one read of those jobs' rows."""
    best_of = (
        "SELECT c.job_id FROM job_chunks c WHERE c.queue = :queue AND {tenant} AND "
        f"{_READY_SQL} ORDER BY c.priority DESC, c.job_created_at, c.job_id LIMIT 1")
    rows = session.execute(text(
        "WITH RECURSIVE t(tenant_id) AS ("
        f" SELECT min(c.tenant_id) FROM job_chunks c WHERE c.queue = :queue AND {_READY_SQL}"
        " UNION ALL"
        " SELECT (SELECT min(c.tenant_id) FROM job_chunks c"
        f" WHERE c.queue = :queue AND {_READY_SQL} AND c.tenant_id > t.tenant_id)"
        " FROM t WHERE t.tenant_id IS NOT NULL)"
        f" SELECT t.tenant_id, ({best_of.format(tenant='c.tenant_id = t.tenant_id')})"
        " FROM t WHERE t.tenant_id IS NOT NULL"
        f" UNION ALL SELECT NULL, ({best_of.format(tenant='c.tenant_id IS NULL')})"
    ), {"queue": queue}).tuples().all()
    best = {job_id: tenant for tenant, job_id in rows if job_id is not None}
    jobs = session.execute(
        select(Job.id, Job.priority, Job.created_at, Job.status).where(Job.id.in_(best))
    ).tuples().all()
    candidates = []
    for job_id, priority, created_at, status in jobs:
        tenant = best[job_id]
        candidate: _Candidate | None = _Candidate(-priority, loads.get(tenant, 0), created_at,
                                                  job_id, tenant)
        if status not in LIVE:
            candidate = _best(session, queue, tenant, loads.get(tenant, 0), after=candidate)
        if candidate is not None:
            candidates.append(candidate)
    return candidates


def _best(session: Session, queue: str, tenant: str | None, load: int,
          after: _Candidate | None = None) -> _Candidate | None:
    """The tenant's first live job in dispatch order with a chunk in SQL's queue (after
    `after`, the job just used up), as a candidate; None if it has none."""
    order = (JobChunk.priority.desc(), JobChunk.job_created_at, JobChunk.job_id)
    # A job that left the live states keeps no chunk to send for long (a cancel stops them in
    # its own transaction); the join passes over it meanwhile, in the same probe.
    stmt = (select(JobChunk.job_id, JobChunk.priority, JobChunk.job_created_at)
            .join(Job, Job.id == JobChunk.job_id)
            .where(JobChunk.queue == queue, *_READY, Job.status.in_(LIVE),
                   JobChunk.tenant_id.is_(None) if tenant is None
                   else JobChunk.tenant_id == tenant)
            .order_by(*order).limit(1))
    if after is not None:
        priority = -after.neg_priority
        stmt = stmt.where(or_(
            JobChunk.priority < priority,
            and_(JobChunk.priority == priority, or_(
                JobChunk.job_created_at > after.created_at,
                and_(JobChunk.job_created_at == after.created_at,
                     JobChunk.job_id > after.job_id)))))
    row = session.execute(stmt).first()
    if row is None:
        return None
    job_id, priority, created_at = row
    # Every chunk to run has its job's age (chunk_rows, and the migration for older ones).
    return _Candidate(-priority, load, created_at or utcnow(), job_id, tenant)


def _lock(session: Session, queue: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"nightowl.jobs.dispatch:{queue}".encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    # SQLite needs nothing: every transaction begins IMMEDIATE (nightowl.db), one writer at a time.


def _send(session: Session, queue: str, chunks: list[tuple[str, int]], *, stamp: bool = False
          ) -> int:
    """Ring the doorbell for chunks already marked in the window. Marked before sent, so a crash
    in between leaves a chunk the reaper sees as lost and sends again: nothing is lost. `stamp`
    restarts a re-sent chunk's clock for the reaper."""
    sent = 0
    try:
        for job_id, chunk_no in chunks:
            send(TaskName.RUN_CHUNK, [job_id, chunk_no], queue=queue)
            sent += 1
    except Exception as e:  # any broker failure: SQL keeps the work
        log.warning("broker unavailable, %d chunks on %s wait in SQL: %s",
                    len(chunks) - sent, queue, e)
        _unmark(session, chunks[sent:])
    if sent and stamp:
        _touch(session, chunks[:sent])
    return sent


def _unmark(session: Session, chunks: list[tuple[str, int]]) -> None:
    try:
        _set_enqueued(session, chunks, None)
    except Exception as e:  # the reaper re-sends them once the broker answers
        session.rollback()
        log.warning("could not return %d unsent chunks to SQL's queue: %s", len(chunks), e)


def _touch(session: Session, chunks: list[tuple[str, int]]) -> None:
    try:
        _set_enqueued(session, chunks, utcnow())
    except Exception as e:  # the pick's own mark stands; at worst a resend comes earlier
        session.rollback()
        log.warning("could not stamp %d sent chunks: %s", len(chunks), e)


def _set_enqueued(session: Session, chunks: list[tuple[str, int]], when: datetime | None
                  ) -> None:
    _mark(session, chunks, when)
    session.commit()


def _mark(session: Session, chunks: list[tuple[str, int]], when: datetime | None) -> None:
    """Set `enqueued_at` (in the window since `when`; None: back in SQL's queue), uncommitted."""
    by_job: dict[str, list[int]] = {}
    for job_id, chunk_no in chunks:
        by_job.setdefault(job_id, []).append(chunk_no)
    for job_id, numbers in by_job.items():
        session.execute(
            update(JobChunk)
            .where(JobChunk.job_id == job_id, JobChunk.chunk_no.in_(numbers),
                   JobChunk.status == ChunkStatus.PENDING)
            .values(enqueued_at=when)
            .execution_options(synchronize_session=False)
        )
