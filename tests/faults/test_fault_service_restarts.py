"""Faults (b) and (c): the broker and the database restart while a job runs.

(b) Redis keeps nothing on disk, so a restart drops every queued message: the job must still
complete, because SQL holds the work and the reaper rings the doorbell again.
(c) PostgreSQL goes down for a few seconds: workers retry their SQL with backoff, and the job
completes with every item done once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from fault_helpers import (
    FAST_RECOVERY,
    Audit,
    BrokerRestarter,
    DatabaseRestarter,
    Figures,
    observer,
    report,
)
from sqlalchemy import func, select

from helpers import Worker, wait_for_job, write_jsonl
from nightowl.cli import cli, demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, JobStatus
from nightowl.platform import broker
from nightowl.platform.orm import JobChunk

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ITEMS, CHUNK = 160, 4
# On an idle machine the tiny generator commits a 4-item chunk every few tens of milliseconds:
# the database fault needs a job that is still running seconds after the stop is asked for.
DB_ITEMS = 1200


def _submit(tmp_path: Path, seed: int, items: int = ITEMS) -> str:
    f = write_jsonl(tmp_path / "p.jsonl", list(demo_data.prompts(items, seed=seed)))  # type: ignore[arg-type]
    result = CliRunner().invoke(cli, [
        "submit", "generate", str(f), "--model", "tiny-generator", "--chunk-size", str(CHUNK),
        "--param", "max_new_tokens=16", "--param", "seed=1"])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def _done_chunks(settings: Settings, job_id: str) -> int:
    with observer(settings)() as s:
        return s.scalar(select(func.count()).select_from(JobChunk).where(
            JobChunk.job_id == job_id, JobChunk.status == ChunkStatus.DONE)) or 0


def _wait_done_chunks(settings: Settings, job_id: str, n: int, worker: Worker) -> int:
    deadline = time.monotonic() + 120
    while (done := _done_chunks(settings, job_id)) < n:
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.05)
    return done


def _first_progress_after(settings: Settings, job_id: str, done: int, t0: float,
                          timeout: float = 120) -> float:
    """Seconds from t0 until one more chunk than `done` has committed."""
    deadline = time.monotonic() + timeout
    while _done_chunks(settings, job_id) <= done:
        assert time.monotonic() < deadline, "no chunk committed after the fault"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_broker_restart_mid_job_loses_its_queue_but_not_the_job(
    start_worker: Callable[..., Worker], audit: Audit, restart_broker: BrokerRestarter,
    settings: Settings, tmp_path: Path
) -> None:
    if reason := restart_broker.skip_reason():
        pytest.skip(reason)
    job_id = _submit(tmp_path, seed=21)
    worker = start_worker("-Q", "cpu", "-c", "1", "--beat", env=FAST_RECOVERY)
    _wait_done_chunks(settings, job_id, 4, worker)
    queued = broker.queue_depth(settings, "cpu") or 0
    down_s = restart_broker.restart()
    t0 = time.monotonic()
    assert not restart_broker.kept_data(), "the restarted broker kept its data"
    done = _done_chunks(settings, job_id)
    resumed = _first_progress_after(settings, job_id, done, t0)
    job = wait_for_job(job_id, worker=worker, timeout=180)
    recovery = time.monotonic() - t0
    assert job.status == JobStatus.COMPLETED, worker.output()[-3000:]

    lost, duplicated = audit.measure(job_id, ITEMS)
    report(Figures("b. broker restart mid-job", ITEMS, lost, duplicated, recovery,
                   {"messages_dropped": queued, "broker_down_s": round(down_s, 1),
                    "progress_resumed_s": round(resumed, 1)}))
    assert queued > 0, "nothing was queued when the broker went down: the fault tested nothing"
    assert (lost, duplicated) == (0, 0)
    assert job.succeeded_items == ITEMS


def test_database_restart_mid_job_is_ridden_out_with_retries(
    start_worker: Callable[..., Worker], restart_database: DatabaseRestarter, audit: Audit,
    settings: Settings, tmp_path: Path
) -> None:
    job_id = _submit(tmp_path, seed=22, items=DB_ITEMS)
    worker = start_worker("-Q", "cpu", "-c", "1", "--beat", env=FAST_RECOVERY)
    _wait_done_chunks(settings, job_id, 2, worker)
    down_s = restart_database.restart(down_for=3.0)
    t0 = time.monotonic()
    done = _done_chunks(settings, job_id)
    assert done < DB_ITEMS // CHUNK, (
        "the job finished before the database went down: the fault tested nothing")
    resumed = _first_progress_after(settings, job_id, done, t0)
    job = wait_for_job(job_id, worker=worker, timeout=420)
    recovery = time.monotonic() - t0
    assert job.status == JobStatus.COMPLETED, worker.output()[-3000:]

    lost, duplicated = audit.measure(job_id, DB_ITEMS)
    retries = worker.output().count("database unavailable")
    report(Figures("c. PostgreSQL restart mid-job", DB_ITEMS, lost, duplicated, recovery,
                   {"db_down_s": round(down_s, 1), "worker_retries": retries,
                    "progress_resumed_s": round(resumed, 1)}))
    assert (lost, duplicated) == (0, 0)
    assert job.succeeded_items == DB_ITEMS
