"""Fault (a): SIGKILL workers mid-chunk, again and again across one job, then let a fresh worker
finish it. Every item must end with exactly one result, written exactly once."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from fault_helpers import FAST_RECOVERY, Audit, Figures, observer, owner_group, report
from sqlalchemy import func, select

from helpers import Worker, wait_for_job, write_jsonl
from nightowl.cli import cli, demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, JobStatus
from nightowl.platform.orm import Job, JobChunk

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KILLS = 20
# Every worker now frees a killed pool process's chunk at its next heartbeat, so the job keeps
# moving during the kills: enough chunks that it usually outlasts them (and at least
# MIN_KILLS must land mid-chunk if it does not).
ITEMS, CHUNK, MIN_KILLS = 2000, 4, 5


def _owned(settings: Settings, job_id: str, status: ChunkStatus) -> dict[int, tuple[str, int]]:
    """{chunk id: (lease owner, pid of the owning process)} for the job's chunks in `status`."""
    with observer(settings)() as s:
        rows = s.execute(select(JobChunk.id, JobChunk.lease_owner).where(
            JobChunk.job_id == job_id, JobChunk.status == status)).tuples().all()
    return {cid: (owner, int(owner.split(":")[1])) for cid, owner in rows if owner}


def test_twenty_sigkills_mid_chunk_then_a_fresh_worker_leave_one_result_per_item(
    start_worker: Callable[..., Worker], audit: Audit, settings: Settings, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "p.jsonl", list(demo_data.prompts(ITEMS, seed=11)))  # type: ignore[arg-type]
    result = CliRunner().invoke(cli, [
        "submit", "generate", str(f), "--model", "tiny-generator", "--chunk-size", str(CHUNK),
        "--param", "max_new_tokens=16", "--param", "seed=1"])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip().splitlines()[-1]

    rng = random.Random(20)
    factory = observer(settings)
    # Two workers of two pool processes: while some load the model, others are warm, so a
    # process in the phase the next kill wants is usually at hand.
    pool = ("-Q", "cpu", "-c", "2")
    live = [start_worker(*pool, env=FAST_RECOVERY), start_worker(*pool, env=FAST_RECOVERY)]
    killed_chunks: set[int] = set()
    dead: set[int] = set()
    kills = mid_chunk = 0
    counts = {"in_load": 0, "in_run": 0, "pool_process_kills": 0, "whole_worker_kills": 0}
    deadline = time.monotonic() + 300
    while mid_chunk < KILLS:
        assert time.monotonic() < deadline, f"only {mid_chunk} mid-chunk kills in 300 s"
        with factory() as s:
            job = s.get(Job, job_id)
            assert job is not None
            if job.status.terminal:
                assert mid_chunk >= MIN_KILLS, (
                    f"the job finished after {mid_chunk} kills; give it more chunks")
                break
        # Kills land at a random moment while a process loads the model for its first chunk,
        # or (every third) while a warm one runs micro-batches or commits. Each kill of a warm
        # process costs a full model load before another is warm, hence the 2:1.
        phase = "run" if mid_chunk % 3 == 1 else "load"
        groups = {w.proc.pid: w for w in live}
        warm = {pid for _, pid in _owned(settings, job_id, ChunkStatus.DONE).values()}
        # A chunk whose owner was killed stays "running" until its lease ends, and a killed
        # process lingers as a zombie a moment: neither is a target again.
        target = next((pid for _, pid in _owned(settings, job_id, ChunkStatus.RUNNING).values()
                       if pid not in dead and owner_group(pid) in groups
                       and (pid in warm) == (phase == "run")), None)
        if target is None:
            time.sleep(0.05)
            continue
        time.sleep(rng.uniform(0, 1.5) if phase == "load" else rng.uniform(0, 0.3))
        held: dict[int, str] = {}
        wait_until = time.monotonic() + 3
        while not held and time.monotonic() < wait_until:  # between two of its chunks
            held = {cid: owner for cid, (owner, pid) in
                    _owned(settings, job_id, ChunkStatus.RUNNING).items() if pid == target}
            if not held:
                time.sleep(0.02)
        group = owner_group(target)
        # Mostly the pool process that runs the chunk (Celery forks a new one: the lost task
        # is rejected back to the queue); every sixth kill takes the whole worker, as a
        # crashed machine would (its message stays unacknowledged in Redis).
        if kills % 6 == 5 and group in groups:
            dead.update(pid for _, pid in _owned(settings, job_id, ChunkStatus.RUNNING).values()
                        if owner_group(pid) == group)
            dead.update(pid for _, pid in _owned(settings, job_id, ChunkStatus.DONE).values()
                        if owner_group(pid) == group)
            groups[group].kill()
            live.remove(groups[group])
            live.append(start_worker(*pool, env=FAST_RECOVERY))
            counts["whole_worker_kills"] += 1
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
            counts["pool_process_kills"] += 1
        dead.add(target)
        kills += 1
        time.sleep(0.05)
        with factory() as s:  # still held by the dead owner: it died before committing
            still = s.scalar(select(func.count()).select_from(JobChunk).where(
                JobChunk.id.in_(held), JobChunk.status == ChunkStatus.RUNNING,
                JobChunk.lease_owner.in_(held.values()))) or 0
        if still:
            mid_chunk += 1
            counts[f"in_{phase}"] += 1
            killed_chunks.update(held)
    for w in live:  # whatever is left dies too: only the fresh worker finishes the job
        w.kill()
    last_kill = time.monotonic()
    with factory() as s:
        left = s.scalar(select(func.count()).select_from(JobChunk).where(
            JobChunk.job_id == job_id, JobChunk.status != ChunkStatus.DONE)) or 0

    fresh = start_worker("-Q", "cpu", "-c", "2", "--beat", env=FAST_RECOVERY)
    job = wait_for_job(job_id, worker=fresh, timeout=180)
    recovery = time.monotonic() - last_kill
    assert job.status == JobStatus.COMPLETED, fresh.output()[-3000:]

    lost, duplicated = audit.measure(job_id, ITEMS)
    with factory() as s:
        rerun = s.scalar(select(func.count()).select_from(JobChunk).where(
            JobChunk.job_id == job_id, JobChunk.attempts > 1)) or 0
    report(Figures("a. 20 SIGKILLs mid-chunk", ITEMS, lost, duplicated, recovery,
                   {"kills": kills, "mid_chunk": mid_chunk, **counts, "chunks_rerun": rerun,
                    "chunks_left_for_fresh_worker": left}))
    assert (lost, duplicated) == (0, 0)
    assert job.succeeded_items == ITEMS
    # Each chunk a process died holding (some twice) ran again, from the start, elsewhere.
    assert rerun >= len(killed_chunks) > 0
