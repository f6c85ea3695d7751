"""The dispatch window on the real database and broker, with no worker: what is in the broker,
and which chunk is sent next when a worker takes one (priority, then fair share, then age)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.jobs import chunks, dispatch
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, cancel_job, submit_job
from nightowl.platform import auth, broker
from nightowl.platform.db import session_scope
from nightowl.platform.orm import JobChunk


@pytest.fixture
def queue(models: Settings) -> Iterator[str]:
    """A queue of this test's own: no worker reads it, and no other test's job is on it."""
    name = f"fair-{uuid.uuid4().hex[:8]}"
    yield name
    broker.redis_client(models).delete(name)


def _tenant(settings: Settings, name: str) -> str:
    with session_scope(settings) as s:
        return auth.get_or_create_tenant(s, f"{name}-{uuid.uuid4().hex[:6]}").id


def _submit(settings: Settings, queue: str, tenant: str | None, items: int, *,
            priority: int = 0) -> str:
    lines = (ParsedLine(n + 1, f"c{n}", {"text": f"review {n} was wonderful"}, None)
             for n in range(items))
    spec = JobSpec(kind="sentiment", model="tiny-sentiment", chunk_size=1,  # type: ignore[arg-type]
                   queue=queue, tenant_id=tenant, priority=priority)
    with session_scope(settings) as s:
        return submit_job(session=s, settings=settings, spec=spec, lines=lines).id


def _in_window(session: Session, job_ids: dict[str, str]) -> set[str]:
    """Chunks marked as sent, as NAME#chunk_no."""
    names = {v: k for k, v in job_ids.items()}
    rows = session.execute(select(JobChunk.job_id, JobChunk.chunk_no).where(
        JobChunk.job_id.in_(job_ids.values()), JobChunk.enqueued_at.is_not(None))).tuples()
    return {f"{names[j]}#{n}" for j, n in rows}


def _take(settings: Settings, job_id: str, chunk_no: int) -> None:
    """What a worker does with a message: claim the chunk, then top the window up."""
    with session_scope(settings) as s:
        claimed = chunks.claim(s, job_id, chunk_no, owner="test", lease_seconds=300)
        assert claimed is not None
        dispatch.top_up(s, settings, claimed.job.queue)


def test_next_chunk_goes_by_priority_then_least_loaded_tenant_then_age(
    models: Settings, session: Session, queue: str
) -> None:
    settings = models.model_copy(update={"dispatch_window": 2})
    a, b = _tenant(settings, "team-a"), _tenant(settings, "team-b")
    jobs = {"A": _submit(settings, queue, a, 10)}
    # Only the window reaches the broker; the other eight chunks wait in SQL.
    assert _in_window(session, jobs) == {"A#0", "A#1"}
    assert broker.queue_depth(settings, queue) == 2
    jobs["B"] = _submit(settings, queue, b, 2)
    jobs["H"] = _submit(settings, queue, a, 1, priority=50)
    jobs["A2"] = _submit(settings, queue, a, 1)
    assert _in_window(session, jobs) == {"A#0", "A#1"}, "a full window takes nothing new"

    sent: list[str] = []
    for name, chunk_no in [("A", 0), ("A", 1), ("H", 0), ("B", 0), ("B", 1), ("A", 2)]:
        before = _in_window(session, jobs)
        _take(settings, jobs[name], chunk_no)
        sent += sorted(_in_window(session, jobs) - before)
    # H: the newest job, but the highest priority. Then B (tenant b runs nothing, a runs two)
    # ahead of the older A and A2. Once b has as much in flight as a, age decides: A before A2.
    assert sent == ["H#0", "B#0", "B#1", "A#2", "A#3", "A#4"]
    assert broker.queue_depth(settings, queue) == 2 + len(sent)  # nothing sent twice

    with session_scope(settings) as s:
        for job_id in jobs.values():
            cancel_job(s, job_id)


def test_jobs_of_no_tenant_share_with_a_tenant_and_its_next_job_follows_its_first(
    models: Settings, session: Session, queue: str
) -> None:
    settings = models.model_copy(update={"dispatch_window": 4})
    a = _tenant(settings, "team-a")
    jobs = {"A1": _submit(settings, queue, a, 1), "A2": _submit(settings, queue, a, 2),
            "N": _submit(settings, queue, None, 3)}
    with session_scope(settings) as s:  # the window empty, as if the broker lost it all
        s.execute(update(JobChunk).where(JobChunk.job_id.in_(jobs.values()))
                  .values(enqueued_at=None))
    broker.redis_client(settings).delete(queue)
    with session_scope(settings) as s:
        assert dispatch.top_up(s, settings, queue) == 4
    # One pick: a's oldest job, then the jobs of no tenant (nothing in flight yet), then a's
    # next job once its first has nothing left, turn about; not a's three chunks first by age.
    assert _in_window(session, jobs) == {"A1#0", "N#0", "A2#0", "N#1"}
    with session_scope(settings) as s:
        for job_id in jobs.values():
            cancel_job(s, job_id)


def test_concurrent_top_ups_never_overfill_the_window_or_send_a_chunk_twice(
    models: Settings, session: Session, queue: str
) -> None:
    settings = models.model_copy(update={"dispatch_window": 5})
    job_id = _submit(settings, queue, None, 40)
    with session_scope(settings) as s:  # empty the window, as if the broker lost it all
        s.execute(update(JobChunk).where(JobChunk.job_id == job_id).values(enqueued_at=None))
    broker.redis_client(settings).delete(queue)

    results: list[int] = []
    errors: list[BaseException] = []

    def top_up() -> None:
        try:
            with session_scope(settings) as s:
                results.append(dispatch.top_up(s, settings, queue))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=top_up) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(results) == 5
    assert broker.queue_depth(settings, queue) == 5
    assert len(_in_window(session, {"J": job_id})) == 5
    with session_scope(settings) as s:
        cancel_job(s, job_id)


def test_priority_outside_its_range_is_refused_with_the_range(models: Settings,
                                                              queue: str) -> None:
    from nightowl.common.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"priority: Input should be less than or equal to 100"):
        _submit(models, queue, None, 1, priority=101)


def test_cli_priority_is_checked_against_the_same_range(migrated: Settings,
                                                        tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "fine"}\n')
    for args in (["submit", "sentiment", str(f), "--model", "tiny-sentiment", "--priority", "101"],
                 ["finetune", "submit", "--kind", "sentiment", "--base", "tiny-sentiment",
                  "--train", str(f), "--priority", "-101"]):
        result = CliRunner().invoke(cli, args)
        # The request spec's own check, worded as over HTTP; nothing is stored.
        assert result.exit_code == 1, result.output
        assert "priority: Input should be" in result.output, result.output
