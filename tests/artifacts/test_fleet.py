"""Worker liveness on whatever stack the suite runs (SQLite + embedded Valkey by default):
`nightowl worker` processes only, no beat. A SIGKILLed worker is declared dead by the others'
maintenance pass and its chunk runs elsewhere long before its lease would lapse; the fleet is
visible in `nightowl workers`, GET /v1/workers and /metrics."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from helpers import Worker, wait_for_job, write_jsonl
from nightowl.cli import cli, demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, JobStatus
from nightowl.platform.orm import JobChunk, JobItem

pytestmark = [pytest.mark.integration]

# A lease far longer than the test: only the heartbeats can explain a quick takeover.
ENV = {"NIGHTOWL_WORKER_DEAD_AFTER": "4", "NIGHTOWL_LEASE_SECONDS": "600",
       "NIGHTOWL_REAP_INTERVAL_SECONDS": "1"}


def _fleet() -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["workers", "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _wait(check: Callable[[], bool], what: str, worker: Worker, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{worker.output()[-3000:]}"
        time.sleep(0.2)


def test_a_killed_workers_chunk_runs_elsewhere_without_beat_and_the_fleet_shows_it(
        start_worker: Callable[..., Worker], models: Settings, session: Session,
        client: Any, tmp_path: Path) -> None:
    tag = os.urandom(3).hex()  # names of this run's workers: a shared database keeps others'
    victim_name, survivor_name = f"victim{tag}", f"survivor{tag}"
    rows = list(demo_data.reviews(3000, seed=21))
    f = write_jsonl(tmp_path / "in.jsonl", rows)  # type: ignore[arg-type]
    result = CliRunner().invoke(cli, ["submit", "sentiment", str(f), "--model",
                                      "tiny-sentiment@prod", "--chunk-size", "300"])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip().splitlines()[-1]
    victim = start_worker("-Q", "cpu", "-c", "1", "-n", f"{victim_name}@%h", env=ENV)
    survivor = start_worker("-Q", "cpu", "-c", "1", "-n", f"{survivor_name}@%h", env=ENV)
    held: list[tuple[int, str]] = []

    def victim_holds() -> bool:
        held[:] = session.execute(select(JobChunk.id, JobChunk.lease_owner).where(
            JobChunk.job_id == job_id, JobChunk.status == ChunkStatus.RUNNING,
            JobChunk.lease_owner.like(f"%/{victim_name}@%"))).tuples().all()
        return bool(held)

    _wait(victim_holds, "the victim never claimed a chunk", victim)
    # The pool can claim before the first heartbeat lands: wait for the row, as a user would.
    def victim_alive() -> dict[str, Any] | None:
        return next((w for w in _fleet() if w["status"] == "alive"
                     and w["name"].startswith(f"{victim_name}@")), None)

    _wait(lambda: victim_alive() is not None, "the victim never showed as alive", victim)
    me = victim_alive()
    assert me is not None
    assert me["queues"] == "cpu" and me["host"] and me["pid"]
    _wait(lambda: any(job_id in w["current_jobs"] for w in _fleet()
                      if w["name"].startswith(f"{victim_name}@")),
          "the victim's heartbeat never named its job", victim)
    victim.kill()
    killed = time.monotonic()
    chunk_id = held[0][0]

    def taken_over() -> bool:
        session.expire_all()
        row = session.get(JobChunk, chunk_id)
        assert row is not None
        return row.status == ChunkStatus.DONE or f"/{survivor_name}@" in (row.lease_owner or "")

    _wait(taken_over, "the dead worker's chunk was never taken over", survivor)
    taken_s = time.monotonic() - killed
    job = wait_for_job(job_id, worker=survivor, timeout=300)
    assert job.status == JobStatus.COMPLETED and job.succeeded_items == 3000
    finished_by = session.scalar(select(JobItem.worker).where(
        JobItem.job_id == job_id, JobItem.idx == 300 * _chunk_no(session, chunk_id)))
    assert finished_by is not None and finished_by.startswith(f"{survivor_name}@")
    print(f"\nFLEET dead worker's chunk taken over {taken_s:.1f} s after SIGKILL, behind the "
          f"chunks queued ahead of it (dead-after 4 s, lease 600 s)")

    fleet = {w["name"].split("@")[0]: w for w in _fleet()}
    assert fleet[victim_name]["status"] == "dead" and fleet[victim_name]["current_jobs"] == []
    assert fleet[survivor_name]["status"] == "alive"
    _wait(lambda: next(w for w in _fleet() if w["name"].startswith(f"{survivor_name}@"))
          ["items_done"] > 0, "the survivor's heartbeat never counted its items", survivor)

    table = CliRunner().invoke(cli, ["workers"])
    assert table.exit_code == 0 and f"{victim_name}@" in table.output and "dead" in table.output
    over_http = {w["name"].split("@")[0]: w for w in client.get("/v1/workers").json()}
    assert over_http[victim_name]["status"] == "dead"
    assert over_http[survivor_name]["status"] == "alive"
    metrics = client.get("/metrics").text
    up = [line for line in metrics.splitlines() if line.startswith("nightowl_worker_up{")]
    assert any(f'worker="{survivor_name}@' in line and line.endswith(" 1.0") for line in up)
    assert any(f'worker="{victim_name}@' in line and line.endswith(" 0.0") for line in up)
    survivor.stop()
    stopped = {w["name"].split("@")[0]: w["status"] for w in _fleet()}
    assert stopped[survivor_name] == "stopped"


def _chunk_no(session: Session, chunk_id: int) -> int:
    row = session.get(JobChunk, chunk_id)
    assert row is not None
    return row.chunk_no
