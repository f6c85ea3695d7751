"""Claim, lease, complete and finalize: one chunk's life in SQL, and the races around it."""

from __future__ import annotations

import pytest
from core_support import Core
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.common.enums import ChunkStatus, ErrorCode, ItemStatus, JobStatus
from nightowl.jobs import chunks
from nightowl.jobs.chunks import ClaimedChunk, ItemOutcome
from nightowl.jobs.service import cancel_job, try_finalize
from nightowl.platform.db import session_scope
from nightowl.platform.orm import Job, JobChunk, JobItem


def _job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    return job


def _chunk(session: Session, job_id: str, chunk_no: int) -> JobChunk:
    return session.scalars(select(JobChunk).where(JobChunk.job_id == job_id,
                                                  JobChunk.chunk_no == chunk_no)
                           .execution_options(populate_existing=True)).one()


def _items(session: Session, job_id: str) -> dict[ItemStatus, int]:
    return dict(session.execute(select(JobItem.status, func.count())
                                .where(JobItem.job_id == job_id)
                                .group_by(JobItem.status)).tuples().all())


def _cancel_while_first_chunk_runs(core: Core, items: int, *, chunk_size: int
                                   ) -> tuple[str, ClaimedChunk, JobStatus]:
    """A job whose chunk 0 a worker holds when the job is cancelled: (job id, that chunk,
    the status cancel_job answered)."""
    job_id = core.submit(items, chunk_size=chunk_size)
    running = core.claim(job_id, 0)
    assert running is not None
    with session_scope(core.settings) as s:
        status = cancel_job(s, job_id).status
    return job_id, running, status


def test_a_claimed_chunk_is_held_by_its_owner_alone(core: Core, session: Session) -> None:
    job_id = core.submit(4, chunk_size=2)
    claimed = core.claim(job_id, 0, owner="w1")
    assert claimed is not None
    assert [item.idx for item in claimed.items] == [0, 1]
    assert _job(session, job_id).status is JobStatus.IN_PROGRESS
    chunk = _chunk(session, job_id, 0)
    assert (chunk.status, chunk.lease_owner, chunk.attempts) == (ChunkStatus.RUNNING, "w1", 1)
    # A duplicate message for the same chunk finds it taken.
    assert core.claim(job_id, 0, owner="w2") is None
    assert _chunk(session, job_id, 0).lease_owner == "w1"


def test_a_renewed_lease_holds_and_an_expired_one_passes_to_the_next_owner(
    core: Core, session: Session
) -> None:
    job_id = core.submit(2, chunk_size=2)
    old = core.claim(job_id, 0, owner="w1", lease_seconds=60)
    assert old is not None
    before = _chunk(session, job_id, 0).lease_expires_at
    with session_scope(core.settings) as s:
        assert chunks.heartbeat(s, old.chunk.id, owner="w1", lease_seconds=600)
    renewed = _chunk(session, job_id, 0).lease_expires_at
    assert before is not None and renewed is not None and renewed > before
    assert core.claim(job_id, 0, owner="w2") is None, "a live lease is not taken"

    core.expire_leases(job_id)
    new = core.claim(job_id, 0, owner="w2")
    assert new is not None and _chunk(session, job_id, 0).attempts == 2
    # The old owner learns it lost the chunk: its renewal and its results are refused.
    with session_scope(core.settings) as s:
        assert not chunks.heartbeat(s, old.chunk.id, owner="w1", lease_seconds=600)
    failing = [ItemOutcome(i.id, ItemStatus.FAILED, error_code="model_error",
                           error_message="from the old owner") for i in old.items]
    assert not core.complete(old, owner="w1", outcomes=failing)
    assert _items(session, job_id) == {ItemStatus.PENDING: 2}

    assert core.complete(new, owner="w2")
    assert _items(session, job_id) == {ItemStatus.SUCCEEDED: 2}
    job = _job(session, job_id)
    assert (job.status, job.succeeded_items, job.failed_items) == (JobStatus.COMPLETED, 2, 0)


def test_a_redelivered_chunk_writes_nothing_twice(core: Core, session: Session) -> None:
    job_id = core.submit(6, chunk_size=3)
    claimed = core.claim(job_id, 0)
    assert claimed is not None
    assert core.complete(claimed)
    # The same message again (acks_late after a crash before the ack): nothing to claim, and a
    # second commit of the same chunk is refused.
    assert core.claim(job_id, 0) is None
    assert not core.complete(claimed)
    job = _job(session, job_id)
    assert job.succeeded_items == 3
    assert session.scalar(select(func.count()).select_from(JobItem)
                          .where(JobItem.job_id == job_id)) == 6
    assert _items(session, job_id) == {ItemStatus.SUCCEEDED: 3, ItemStatus.PENDING: 3}


def test_the_last_chunk_finalizes_with_counts_from_sql(core: Core, session: Session) -> None:
    job_id = core.submit(5, chunk_size=2)  # chunks of 2, 2 and 1
    first, second = core.claim(job_id, 0), core.claim(job_id, 1)
    assert first is not None and second is not None
    # One item fails in the worker: an error row, not a failed chunk.
    outcomes = [ItemOutcome(first.items[0].id, ItemStatus.SUCCEEDED, output={"label": "x"}),
                ItemOutcome(first.items[1].id, ItemStatus.FAILED, error_code="too_long",
                            error_message="text is 300 tokens, the model accepts 256")]
    assert core.complete(first, outcomes=outcomes)
    assert core.complete(second)
    assert _job(session, job_id).status is JobStatus.IN_PROGRESS, "a chunk is still pending"
    with session_scope(core.settings) as s:
        assert not try_finalize(s, job_id)
    last = core.claim(job_id, 2)
    assert last is not None
    assert core.complete(last)
    job = _job(session, job_id)
    assert job.status is JobStatus.COMPLETED and job.completed_at is not None
    assert (job.succeeded_items, job.failed_items) == (4, 1)
    assert _items(session, job_id) == {ItemStatus.SUCCEEDED: 4, ItemStatus.FAILED: 1}
    with session_scope(core.settings) as s:
        assert not try_finalize(s, job_id), "finalized once only"


def test_a_chunk_whose_counters_land_after_another_finalized_the_job_counts_once(
        core: Core, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk commits its results, then its counters in a second transaction. If the other
    chunk's worker finalizes the job in between (recounting from the items), the late counters
    must not be added on top: 4 items, not 6."""
    job_id = core.submit(4, chunk_size=2)
    first, second = core.claim(job_id, 0), core.claim(job_id, 1)
    assert first is not None and second is not None
    late: list[dict[ItemStatus, int]] = []
    count_and_finalize = chunks._count_and_finalize
    monkeypatch.setattr(chunks, "_count_and_finalize",
                        lambda s, job, counts: late.append(counts))
    assert core.complete(first)  # results and mark committed; its counters held back
    monkeypatch.setattr(chunks, "_count_and_finalize", count_and_finalize)
    assert core.complete(second)  # sees no open chunk: finalizes with counts from the items
    assert _job(session, job_id).status is JobStatus.COMPLETED
    with session_scope(core.settings) as s:
        count_and_finalize(s, job_id, late[0])  # the first chunk's counters, arriving late
    job = _job(session, job_id)
    assert (job.status, job.succeeded_items) == (JobStatus.COMPLETED, 4)


def test_cancel_between_claim_and_complete_ends_cancelled_with_honest_counts(
    core: Core, session: Session
) -> None:
    job_id, running, status = _cancel_while_first_chunk_runs(core, 6, chunk_size=2)
    assert status is JobStatus.CANCELLING
    # The chunks nobody held stop at once; the running one's items wait for its worker.
    assert _items(session, job_id) == {ItemStatus.PENDING: 2, ItemStatus.CANCELLED: 4}
    assert core.claim(job_id, 1) is None, "a cancelled job's chunk is not claimed"

    # The worker had finished its items before it saw the cancel: they stand.
    assert core.complete(running)
    job = _job(session, job_id)
    assert job.status is JobStatus.CANCELLED
    assert (job.succeeded_items, job.cancelled_items, job.failed_items) == (2, 4, 0)
    assert _items(session, job_id) == {ItemStatus.SUCCEEDED: 2, ItemStatus.CANCELLED: 4}
    cancelled = session.scalars(select(JobItem).where(
        JobItem.job_id == job_id, JobItem.status == ItemStatus.CANCELLED)).all()
    assert {(i.error_code, i.error_message) for i in cancelled} == {
        (ErrorCode.CANCELLED.value, "job cancelled before this item ran")}


def test_a_worker_that_sees_the_cancel_midway_reports_the_rest_cancelled(
    core: Core, session: Session
) -> None:
    job_id, running, _ = _cancel_while_first_chunk_runs(core, 4, chunk_size=4)
    done = [ItemOutcome(running.items[0].id, ItemStatus.SUCCEEDED, output={"label": "x"})]
    rest = [ItemOutcome.stopped(item.id, ItemStatus.CANCELLED) for item in running.items[1:]]
    assert core.complete(running, outcomes=done + rest)
    job = _job(session, job_id)
    assert (job.status, job.succeeded_items, job.cancelled_items) == (JobStatus.CANCELLED, 1, 3)
    assert _chunk(session, job_id, 0).status is ChunkStatus.CANCELLED
