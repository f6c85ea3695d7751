"""The fleet: workers heartbeat into SQL, and any worker's maintenance pass frees the leases
of one that stopped beating, so nothing waits on a single reaper or on lease expiry.

Lease owners start with the worker's id (`w_.../host:pid:tag`), so a dead worker's chunks and
runs are found by prefix. Every step is an idempotent UPDATE; on PostgreSQL a lease row
(fleet_locks) also keeps concurrent passes from doing the same work twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, RunStatus, WorkerStatus
from nightowl.fleet.views import WorkerInfo, WorkerView
from nightowl.platform.db import insert_ignoring_conflicts
from nightowl.platform.orm import FleetLock, Job, JobChunk, TrainingRun, Worker, utcnow

log = logging.getLogger(__name__)

MAINTENANCE = "maintenance"


def owner_prefix(worker_id: str) -> str:
    return f"{worker_id}/"


def register(session: Session, info: WorkerInfo) -> None:
    now = utcnow()
    row = session.get(Worker, info.id)
    if row is None:
        row = Worker(id=info.id, started_at=now, items_done=0, items_per_s=0.0, current={})
        session.add(row)
    row.name, row.host, row.pid, row.queues = info.name, info.host, info.pid, info.queues
    row.device, row.concurrency = info.device, info.concurrency
    row.status, row.last_seen_at = WorkerStatus.ALIVE, now
    session.commit()


# A live worker's beat renews the leases its processes hold, so a lease no longer lapses
# while a child loads a model; past this many lease lengths since the claim only the child's
# own renewals count, so a hung child still loses its chunk at lease expiry.
RENEW_FOR_LEASES = 10


def owner_pid(lease_owner: str | None) -> int | None:
    """The process in a lease owner `w_id/name:pid:tag`."""
    if lease_owner is None:
        return None
    try:
        return int(lease_owner.rsplit(":", 2)[-2])
    except (ValueError, IndexError):
        return None


def heartbeat(session: Session, worker_id: str, *, items_done: int, items_per_s: float,
              lease_seconds: int, pid_alive: Callable[[int], bool]) -> bool:
    """Record that this worker is alive, with what it is doing, and look after its leases:
    renewed while the process holding one lives, released at once when it has died (a pool
    process killed under a live worker). False if the fleet had declared this worker dead
    meanwhile (a long pause): its leases went to others."""
    prefix = owner_prefix(worker_id) + "%"
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds)
    young = now - timedelta(seconds=lease_seconds * RENEW_FOR_LEASES)
    chunks = session.execute(
        select(JobChunk.id, JobChunk.job_id, JobChunk.chunk_no, JobChunk.lease_owner,
               JobChunk.started_at)
        .where(JobChunk.status == ChunkStatus.RUNNING, JobChunk.lease_owner.like(prefix))
    ).all()
    runs = session.execute(
        select(TrainingRun.id, TrainingRun.lease_owner, TrainingRun.started_at)
        .where(TrainingRun.status == RunStatus.RUNNING, TrainingRun.lease_owner.like(prefix))
    ).all()
    current: dict[str, Any] = {"chunks": [], "runs": []}
    for chunk_id, job_id, chunk_no, owner, started in chunks:
        pid = owner_pid(owner)
        guarded = JobChunk.id == chunk_id, JobChunk.lease_owner == owner
        if pid is not None and not pid_alive(pid):
            session.execute(update(JobChunk).where(*guarded)
                            .values(status=ChunkStatus.PENDING, lease_owner=None,
                                    enqueued_at=None)
                            .execution_options(synchronize_session=False))
            continue
        current["chunks"].append(f"{job_id}#{chunk_no}")
        if started is not None and started >= young:
            session.execute(update(JobChunk).where(*guarded).values(lease_expires_at=until)
                            .execution_options(synchronize_session=False))
    for run_id, owner, started in runs:
        pid = owner_pid(owner)
        guarded_run = TrainingRun.id == run_id, TrainingRun.lease_owner == owner
        if pid is not None and not pid_alive(pid):
            session.execute(update(TrainingRun).where(*guarded_run)
                            .values(lease_expires_at=now - timedelta(seconds=1))
                            .execution_options(synchronize_session=False))
            continue
        current["runs"].append(run_id)
        if started is not None and started >= young:
            session.execute(update(TrainingRun).where(*guarded_run)
                            .values(lease_expires_at=until)
                            .execution_options(synchronize_session=False))
    was = session.scalar(select(Worker.status).where(Worker.id == worker_id))
    session.execute(
        update(Worker).where(Worker.id == worker_id)
        .values(last_seen_at=now, status=WorkerStatus.ALIVE, current=current,
                items_done=items_done, items_per_s=items_per_s)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return was != WorkerStatus.DEAD


def mark_stopped(session: Session, worker_id: str, *, items_done: int | None = None) -> None:
    final = {} if items_done is None else {"items_done": items_done}
    session.execute(update(Worker).where(Worker.id == worker_id)
                    .values(status=WorkerStatus.STOPPED, current={}, items_per_s=0.0,
                            **final)
                    .execution_options(synchronize_session=False))
    session.commit()


@dataclass
class Released:
    workers: list[str]
    chunks: int = 0
    runs: int = 0


def release_dead(session: Session, settings: Settings, now: datetime | None = None) -> Released:
    """Declare workers unseen for NIGHTOWL_WORKER_DEAD_AFTER dead and free their leases."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.worker_dead_after)
    # Alive ones that went quiet, and dead or stopped ones that still hold a lease (a chunk
    # claimed in the instant before the worker was declared dead).
    candidates = session.scalars(
        select(Worker.id).where(Worker.status == WorkerStatus.ALIVE, Worker.last_seen_at < cutoff)
    ).all()
    out = Released(workers=list(candidates))
    if candidates:
        session.execute(update(Worker).where(Worker.id.in_(candidates),
                                             Worker.last_seen_at < cutoff)
                        .values(status=WorkerStatus.DEAD, items_per_s=0.0)
                        .execution_options(synchronize_session=False))
        session.commit()
    # Only workers seen within a lease can still hold one: nobody renewed theirs since.
    gone = select(Worker.id).where(
        Worker.status.in_([WorkerStatus.DEAD, WorkerStatus.STOPPED]),
        Worker.last_seen_at >= now - timedelta(seconds=settings.lease_seconds))
    for worker_id in session.scalars(gone).all():
        prefix = owner_prefix(worker_id) + "%"
        chunks = session.execute(
            update(JobChunk)
            .where(JobChunk.status == ChunkStatus.RUNNING, JobChunk.lease_owner.like(prefix))
            .values(status=ChunkStatus.PENDING, lease_owner=None, enqueued_at=None)
            .execution_options(synchronize_session=False)
        )
        # A run's lease is made to lapse now: the reaper sends it again and the next worker
        # resumes it from its last checkpoint, as after lease expiry, only sooner.
        runs = session.execute(
            update(TrainingRun)
            .where(TrainingRun.status.in_([RunStatus.RUNNING, RunStatus.CANCELLING]),
                   TrainingRun.lease_owner.like(prefix), TrainingRun.lease_expires_at >= now)
            .values(lease_expires_at=now - timedelta(seconds=1))
            .execution_options(synchronize_session=False)
        )
        out.chunks += int(chunks.rowcount)  # type: ignore[attr-defined]
        out.runs += int(runs.rowcount)  # type: ignore[attr-defined]
        session.commit()
    if out.workers or out.chunks or out.runs:
        log.warning("workers %s declared dead; released %d chunk(s) and %d run(s)",
                    out.workers, out.chunks, out.runs)
    return out


@contextmanager
def maintenance_lock(session: Session, lease: timedelta, holder: str | None = None,
                     name: str = MAINTENANCE) -> Iterator[bool]:
    """True if this process may run the pass now. PostgreSQL: one pass at a time across the
    fleet (the others skip theirs), held as a lease row so that it works through PgBouncer's
    transaction pooling. A holder that dies mid-pass frees it after `lease` (the fleet's
    dead-after: recovery waits on it no longer than on the dead worker itself); a pass that
    outlasts it may overlap the next, which its idempotent steps allow. SQLite: always, its
    updates being idempotent and its writers one at a time anyway."""
    if session.get_bind().dialect.name != "postgresql":
        yield True
        return
    me = holder or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    now = utcnow()
    insert_ignoring_conflicts(session, FleetLock, [{"name": name}], ["name"])
    got = bool(session.execute(
        update(FleetLock)
        .where(FleetLock.name == name,
               or_(FleetLock.expires_at.is_(None), FleetLock.expires_at < now,
                   FleetLock.holder == me))
        .values(holder=me, expires_at=now + lease)
        .execution_options(synchronize_session=False)
    ).rowcount)  # type: ignore[attr-defined]
    session.commit()
    try:
        yield got
    except BaseException:
        session.rollback()  # a pass that failed mid-transaction must not block the release
        raise
    finally:
        if got:
            session.commit()
            session.execute(update(FleetLock)
                            .where(FleetLock.name == name, FleetLock.holder == me)
                            .values(holder=None, expires_at=None)
                            .execution_options(synchronize_session=False))
            session.commit()


def maintenance_pass(session: Session, settings: Settings, reap: Callable[[Session], Any],
                     *, full: bool) -> Released | None:
    """Free dead workers' leases; run the full reaper pass (which re-sends what was freed)
    when `full`, or when a worker was just found dead. None if another pass holds the lock."""
    with maintenance_lock(session, timedelta(seconds=settings.worker_dead_after)) as got:
        if not got:
            return None
        released = release_dead(session, settings)
        if full or released.chunks or released.runs:
            reap(session)
        return released


def list_workers(session: Session, *, include_gone_for: timedelta = timedelta(days=1)
                 ) -> list[Worker]:
    """Live workers, and those that stopped or died within `include_gone_for`."""
    since = utcnow() - include_gone_for
    return list(session.scalars(
        select(Worker).where((Worker.status == WorkerStatus.ALIVE) | (Worker.last_seen_at >= since))
        .order_by(Worker.status, Worker.host, Worker.started_at)
    ))


def describe(session: Session, settings: Settings, *, tenant_id: str | None
             ) -> list[WorkerView]:
    """Each worker as the CLI, the API and the dashboard show it. A worker past its
    dead-after whose death no pass has recorded yet already shows as dead.

    The fleet is shared, the work on it is not: a tenant sees only its own jobs, chunks and
    runs among what a worker holds (None, the operator, sees all)."""
    now = utcnow()
    out = []
    workers = list_workers(session)
    mine = _own_work(session, workers, tenant_id) if tenant_id is not None else None
    for w in workers:
        age = (now - w.last_seen_at).total_seconds()
        status = (WorkerStatus.DEAD if w.status == WorkerStatus.ALIVE
                  and age > settings.worker_dead_after else WorkerStatus(w.status))
        chunks = list(w.current.get("chunks", [])) if status == WorkerStatus.ALIVE else []
        runs = list(w.current.get("runs", [])) if status == WorkerStatus.ALIVE else []
        if mine is not None:
            chunks = [c for c in chunks if c.split("#")[0] in mine]
            runs = [r for r in runs if r in mine]
        out.append(WorkerView(
            id=w.id, name=w.name, host=w.host, pid=w.pid, queues=w.queues,
            device=w.device, concurrency=w.concurrency, status=status,
            current_jobs=sorted({c.split("#")[0] for c in chunks}), current_chunks=chunks,
            current_runs=runs, items_done=w.items_done,
            items_per_s=round(w.items_per_s, 2) if status == WorkerStatus.ALIVE else 0.0,
            started_at=w.started_at.isoformat(), last_seen_at=w.last_seen_at.isoformat(),
            last_seen_s_ago=round(age, 1),
        ))
    return out


def _own_work(session: Session, workers: list[Worker], tenant_id: str) -> set[str]:
    """The ids of jobs and runs, among those the workers hold, that `tenant_id` owns."""
    held = {str(c).split("#")[0] for w in workers for c in w.current.get("chunks", [])}
    runs = {str(r) for w in workers for r in w.current.get("runs", [])}
    own: set[str] = set()
    if held:
        own |= set(session.scalars(select(Job.id).where(Job.id.in_(held),
                                                       Job.tenant_id == tenant_id)))
    if runs:
        own |= set(session.scalars(select(TrainingRun.id).where(
            TrainingRun.id.in_(runs), TrainingRun.tenant_id == tenant_id)))
    return own
