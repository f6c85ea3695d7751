"""The reaper and the dispatch window: SQL is the source of truth, Redis a doorbell. A lease
that lapsed, a message the broker lost, a worker that died, a broker that restarted empty: the
work is sent again from SQL and nothing is lost or done twice."""

from __future__ import annotations

from core_support import Core
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nightowl.common.enums import ChunkStatus, ItemStatus, JobStatus, WorkerStatus
from nightowl.fleet import heartbeats as fleet
from nightowl.fleet.views import WorkerInfo
from nightowl.platform import broker
from nightowl.platform.db import session_scope
from nightowl.platform.orm import Job, JobChunk, JobItem, Worker


def _done(session: Session, job_id: str) -> tuple[JobStatus, int, list[int]]:
    """(status, succeeded items, attempts per chunk)."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    attempts = session.scalars(select(JobChunk.attempts).where(JobChunk.job_id == job_id)
                               .order_by(JobChunk.chunk_no)).all()
    return job.status, job.succeeded_items, list(attempts)


def _chunk_status(session: Session, job_id: str, chunk_no: int) -> ChunkStatus:
    return session.scalars(select(JobChunk.status).where(
        JobChunk.job_id == job_id, JobChunk.chunk_no == chunk_no)).one()


def test_an_expired_lease_is_released_and_its_chunk_sent_again(
    core: Core, session: Session
) -> None:
    job_id = core.submit(2, chunk_size=2)
    message = core.take()
    assert message == (job_id, 0)
    assert core.claim(*message, owner="w1") is not None  # ... and w1 hangs
    core.reap()
    assert _chunk_status(session, job_id, 0) is ChunkStatus.RUNNING, "a live lease stands"
    assert core.messages() == []

    core.expire_leases(job_id)
    report = core.reap()
    assert report.leases_released >= 1
    assert core.messages() == [(job_id, 0)]
    assert core.run_all(owner="w2") == [(job_id, 0)]
    assert _done(session, job_id) == (JobStatus.COMPLETED, 2, [2])


def test_a_lost_message_is_sent_again_and_the_duplicate_does_nothing(
    core: Core, session: Session
) -> None:
    job_id = core.submit(2)
    assert core.messages() == [(job_id, 0), (job_id, 1)]
    assert core.take() == (job_id, 0)  # lost between the broker and any worker
    core.reap()
    assert core.messages() == [(job_id, 1)], "a message this young may still be in flight"

    # Past NIGHTOWL_REQUEUE_AFTER_SECONDS every chunk still in the window is sent again, the
    # one still waiting included: a duplicate costs one claim that finds nothing to do.
    core.age_window(job_id, core.settings.requeue_after_seconds + 5)
    core.reap()
    assert sorted(core.messages()) == [(job_id, 0), (job_id, 1), (job_id, 1)]
    assert sorted(core.run_all()) == [(job_id, 0), (job_id, 1)]
    assert _done(session, job_id) == (JobStatus.COMPLETED, 2, [1, 1])


def test_a_dead_workers_chunk_is_freed_by_the_fleet_heartbeat_not_at_lease_expiry(
    core: Core, session: Session
) -> None:
    settings = core.settings.model_copy(update={"worker_dead_after": 5.0, "lease_seconds": 600})
    core.settings = settings
    job_id = core.submit(2)
    dead, live = "w_dead0001", "w_live0001"
    with session_scope(settings) as s:
        for worker_id in (dead, live):
            fleet.register(s, WorkerInfo(id=worker_id, name="host", host="host", pid=1,
                                         queues=core.queue, device="cpu", concurrency=1))
    a, b = core.take(), core.take()
    assert a is not None and b is not None
    assert core.claim(*a, owner=f"{dead}/host:4242:x", lease_seconds=600) is not None
    assert core.claim(*b, owner=f"{live}/host:4343:x", lease_seconds=600) is not None

    # A pool process of a live worker died: the worker's own heartbeat frees its chunk.
    with session_scope(settings) as s:
        assert fleet.heartbeat(s, live, items_done=0, items_per_s=0.0,
                               lease_seconds=600, pid_alive=lambda pid: pid != 4343)
    assert _chunk_status(session, job_id, b[1]) is ChunkStatus.PENDING
    # A whole worker went quiet: the next maintenance pass declares it dead and frees its chunk.
    with session_scope(settings) as s:
        s.execute(update(Worker).where(Worker.id == dead)
                  .values(last_seen_at=core.ago(settings.worker_dead_after + 1)))
    report = core.reap()
    assert report.dead_workers >= 1
    assert session.scalar(select(Worker.status).where(Worker.id == dead)) == WorkerStatus.DEAD
    assert _chunk_status(session, job_id, a[1]) is ChunkStatus.PENDING
    assert sorted(core.messages()) == [a, b]
    assert sorted(core.run_all()) == [(job_id, 0), (job_id, 1)]
    assert _done(session, job_id) == (JobStatus.COMPLETED, 2, [2, 2])


def test_after_a_broker_restart_the_work_is_sent_again_from_sql(
    core: Core, session: Session
) -> None:
    job_id = core.submit(10)
    assert core.depth() == core.settings.dispatch_window == 4
    first = core.take()
    assert first is not None
    claimed = core.claim(*first)
    assert claimed is not None and core.complete(claimed)
    assert core.depth() == 4, "topped up as the chunk was taken"

    broker.redis_client(core.settings).delete(core.queue)  # the broker restarts empty
    assert core.run_all() == []
    core.age_window(job_id, 60)
    core.reap()
    assert core.depth() == 4
    ran = core.run_all()
    assert sorted([*ran, first]) == [(job_id, n) for n in range(10)]
    assert _done(session, job_id) == (JobStatus.COMPLETED, 10, [1] * 10)
    assert session.scalar(select(func.count()).select_from(JobItem).where(
        JobItem.job_id == job_id, JobItem.status == ItemStatus.SUCCEEDED)) == 10


def test_the_window_holds_the_next_chunk_by_priority_then_fair_share_then_age(
    core: Core, session: Session
) -> None:
    core.settings = core.settings.model_copy(update={"dispatch_window": 2})
    a, b = core.tenant("team-a"), core.tenant("team-b")
    jobs = {"A": core.submit(5, tenant=a)}
    jobs["B"] = core.submit(2, tenant=b)
    jobs["H"] = core.submit(1, tenant=a, priority=50)
    jobs["A2"] = core.submit(1, tenant=a)
    names = {job_id: name for name, job_id in jobs.items()}
    # Only the window reached the broker; the rest waits in SQL.
    assert [names[j] for j, _ in core.messages()] == ["A", "A"]
    ran = [f"{names[j]}#{n}" for j, n in core.run_all()]
    # H#0: the newest job, but the highest priority. B#0: tenant b had nothing in flight while
    # a had two. Where the tenants' loads are even, the oldest job goes first (A#2, A#3 before
    # B#1 and A2); B#1 as soon as a has more in flight than b.
    assert ran == ["A#0", "A#1", "H#0", "B#0", "A#2", "A#3", "B#1", "A#4", "A2#0"]
    for job_id in jobs.values():
        assert _done(session, job_id)[0] is JobStatus.COMPLETED
