"""Three worker "hosts" with nothing on disk in common: each is its own process group with its
own NIGHTOWL_HOME, and they share only the database, the broker and an S3 server (moto's, on
127.0.0.1). The submitting home's model files are deleted once registered, so only the store
can serve them.

A fine-tune runs on host A; a job on the version it registered runs on B and C; B is SIGKILLed
mid-job and C finishes B's chunks once B's heartbeats stop (not at lease expiry): nothing lost,
nothing done twice, every result names B or C. A second fine-tune SIGKILLed on A resumes on B
from the checkpoint A put in the store, with no metric step written twice.

Needs PostgreSQL (CI's NIGHTOWL_TEST_DATABASE_URL): hosts sharing one SQLite file would be one
host. The item count is scaled down for the suite; the full-size acceptance run is
`NIGHTOWL_MANY_HOSTS_ITEMS=20000 pytest -s tests/artifacts/test_many_hosts.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from s3_server import CREDENTIALS
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from helpers import Worker, wait_for_job, wait_for_run, write_jsonl
from nightowl.cli import demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, JobStatus, RunStatus
from nightowl.platform.orm import JobChunk, JobItem, ModelVersion, TrainingEvent, TrainingMetric

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
from fault_helpers import Audit, install_audit, observer, remove_audit

pytestmark = [pytest.mark.integration]

ITEMS = int(os.environ.get("NIGHTOWL_MANY_HOSTS_ITEMS", "3000"))
DEAD_AFTER = 8
# Long leases: recovery must come from the heartbeats, never from a lease running out.
HOST_ENV = {"NIGHTOWL_WORKER_DEAD_AFTER": str(DEAD_AFTER), "NIGHTOWL_LEASE_SECONDS": "300",
            "NIGHTOWL_REAP_INTERVAL_SECONDS": "2", "NIGHTOWL_REQUEUE_AFTER_SECONDS": "300"}


@pytest.fixture
def fleet_env(migrated: Settings, stack_env: dict[str, str], bucket_url: str,
              s3_endpoint: str) -> dict[str, str]:
    if make_url(migrated.sqlalchemy_url).get_backend_name() != "postgresql":
        pytest.skip("hosts need a database they can all reach: set NIGHTOWL_TEST_DATABASE_URL "
                    "to PostgreSQL (CI does)")
    return {**stack_env, **CREDENTIALS, **HOST_ENV, "NIGHTOWL_ARTIFACT_URL": bucket_url,
            "NIGHTOWL_S3_ENDPOINT_URL": s3_endpoint}


def _cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "nightowl", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


class Hosts:
    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env, self.root, self.started = env, root, []  # type: ignore[var-annotated]

    def home(self, name: str) -> Path:
        return self.root / name

    def worker(self, name: str, queues: str) -> Worker:
        env = {**self.env, "NIGHTOWL_HOME": str(self.home(name))}
        w = Worker(env, ["-Q", queues, "-c", "1", "-n", f"host{name}@%h"],
                   self.root / f"worker-{name}-{len(self.started)}.log")
        self.started.append(w)
        return w

    def stop(self) -> None:
        for w in self.started:
            w.stop()


def _train_steps(s: Session, run_id: str) -> list[int]:
    return list(s.scalars(select(TrainingMetric.step).where(
        TrainingMetric.run_id == run_id, TrainingMetric.key == "train/loss")
        .order_by(TrainingMetric.step)))


def test_three_hosts_share_only_sql_redis_and_the_store(
        fleet_env: dict[str, str], models: Settings, settings: Settings, tmp_path: Path) -> None:
    hosts = Hosts(fleet_env, tmp_path)
    name = f"mh{os.urandom(3).hex()}"
    submitter = {**fleet_env, "NIGHTOWL_HOME": str(tmp_path / "submitter")}
    try:
        _run(hosts, submitter, name, settings, tmp_path)
    finally:
        hosts.stop()


def _run(hosts: Hosts, submitter: dict[str, str], name: str, settings: Settings,
         tmp_path: Path) -> None:
    factory = observer(settings)
    # -- register from the submitting home, then delete its copy -----------------------------
    _cli(submitter, "models", "add", name, "--kind", "sentiment", "--copy",
         "--source", str(settings.models_path / "tiny-sentiment"))
    shutil.rmtree(Path(submitter["NIGHTOWL_HOME"]) / "models")
    with factory() as s:
        base = s.scalars(select(ModelVersion).where(ModelVersion.name == name)).one()
    assert base.source.startswith(submitter["NIGHTOWL_ARTIFACT_URL"]) and base.sha256

    # -- a fine-tune on host A registers the version the job will use ------------------------
    train = write_jsonl(tmp_path / "train.jsonl",
                        list(demo_data.labelled_reviews(600, seed=3)))  # type: ignore[arg-type]
    a = hosts.worker("A", "train")
    # B and C start now, idle on `cpu` until the job: their start-up overlaps the fine-tune.
    b, c = hosts.worker("B", "cpu"), hosts.worker("C", "cpu")
    run1 = _cli(submitter, "finetune", "submit", "--kind", "sentiment", "--base", f"{name}@v1",
                "--train", str(train), "--max-steps", "6", "--batch-size", "16",
                "--checkpoint-every", "3", "--register-as", name)
    done = wait_for_run(run1, a, timeout=300, factory=factory)
    assert done.status == RunStatus.SUCCEEDED, done.error
    with factory() as s:
        tuned = s.get(ModelVersion, done.result_version_id)
        assert tuned is not None
        assert tuned.source.startswith(submitter["NIGHTOWL_ARTIFACT_URL"])
        assert tuned.ref == f"{name}@v2"

    # -- the job runs on B and C; B is SIGKILLed mid-job -------------------------------------
    with factory() as s:
        install_audit(s)
    try:
        _job_survives_a_dead_host(submitter, name, settings, tmp_path, b, c)
    finally:
        with factory() as s:
            remove_audit(s)

    # -- a fine-tune SIGKILLed on A resumes on B from its checkpoint in the store -------------
    _finetune_moves_hosts(hosts, submitter, name, settings, train, a)


def _job_survives_a_dead_host(submitter: dict[str, str], name: str, settings: Settings,
                              tmp_path: Path, b: Worker, c: Worker) -> None:
    factory = observer(settings)
    rows = list(demo_data.reviews(ITEMS, seed=11))
    f = write_jsonl(tmp_path / "reviews.jsonl", rows)  # type: ignore[arg-type]
    job_id = _cli(submitter, "submit", "sentiment", str(f), "--model", f"{name}@v2",
                  "--chunk-size", "250")

    def b_busy(_: object) -> bool:
        with factory() as s:
            held = s.scalar(select(func.count()).select_from(JobChunk).where(
                JobChunk.job_id == job_id, JobChunk.status == ChunkStatus.RUNNING,
                JobChunk.lease_owner.is_not(None)))
            by_b = s.scalar(select(func.count()).select_from(JobItem).where(
                JobItem.job_id == job_id, JobItem.worker.like("hostB@%")))
        return bool(held) and bool(by_b)

    wait_for_job(job_id, worker=b, timeout=300, until=b_busy)
    with factory() as s:
        # B's worker id is the prefix of its lease owners; the row names it by --hostname.
        held = s.execute(select(JobChunk.id, JobChunk.lease_expires_at).where(
            JobChunk.job_id == job_id, JobChunk.status == ChunkStatus.RUNNING,
            JobChunk.lease_owner.like("w_%/hostB@%"))).all()
    b.kill()
    killed = time.monotonic()
    orphans = {chunk_id: lease for chunk_id, lease in held}

    # Released: B is declared dead and its chunks are free (and sent again); retaken: C holds
    # or finished every one of them (after the chunks queued ahead of them, FIFO).
    released_s = retaken_s = None
    while retaken_s is None:
        with factory() as s:
            again = s.execute(select(JobChunk.lease_owner, JobChunk.status)
                              .where(JobChunk.id.in_(list(orphans)))).all()
        now = time.monotonic() - killed
        if released_s is None and all("/hostB@" not in (owner or "") for owner, _ in again):
            released_s = now
        if all(st == ChunkStatus.DONE or "/hostC@" in (owner or "") for owner, st in again):
            retaken_s = now
        assert now < 300, "B's chunks were never taken over"
        time.sleep(0.2)
    job = wait_for_job(job_id, worker=c, timeout=600)
    completed_s = time.monotonic() - killed
    assert job.status == JobStatus.COMPLETED
    lost, duplicated = Audit(settings).measure(job_id, ITEMS)
    with factory() as s:
        workers = set(s.scalars(select(JobItem.worker).where(JobItem.job_id == job_id)))
        retaken = s.execute(select(JobChunk.started_at).where(
            JobChunk.id.in_(list(orphans)))).scalars().all()
    print(f"\nMANY HOSTS items={ITEMS} lost={lost} duplicated={duplicated} "
          f"b_chunks_orphaned={len(orphans)} released_s={released_s:.1f} "
          f"retaken_s={retaken_s:.1f} "
          f"(dead_after={DEAD_AFTER}s, lease=300s) job_done_after_kill_s={completed_s:.1f}")
    assert (lost, duplicated) == (0, 0)
    assert {w.split("@")[0] for w in workers} <= {"hostB", "hostC"}
    assert any(w.startswith("hostB@") for w in workers)
    # Taken over long before B's leases would have lapsed: the heartbeats freed them.
    assert all(started < lease for started, lease in zip(retaken, orphans.values(),
                                                         strict=True))


def _finetune_moves_hosts(hosts: Hosts, submitter: dict[str, str], name: str,
                          settings: Settings, train: Path, a: Worker) -> None:
    factory = observer(settings)
    steps = 16
    run2 = _cli(submitter, "finetune", "submit", "--kind", "sentiment", "--base", f"{name}@v2",
                "--train", str(train), "--max-steps", str(steps), "--batch-size", "16",
                "--checkpoint-every", "4", "--register-as", name)
    wait_for_run(run2, a, timeout=300, factory=factory,
                 until=lambda s, _: len(_train_steps(s, run2)) >= 7)
    a.kill()
    with factory() as s:
        killed_at = max(_train_steps(s, run2))
    b_home = hosts.home("B")
    assert not (b_home / "artifacts" / "runs" / run2).exists()
    b = hosts.worker("B", "train")
    run = wait_for_run(run2, b, timeout=300, factory=factory)
    assert run.status == RunStatus.SUCCEEDED, run.error
    with factory() as s:
        started = s.scalars(select(TrainingEvent).where(
            TrainingEvent.run_id == run2, TrainingEvent.kind == "started")
            .order_by(TrainingEvent.id)).all()
        rows = s.scalar(select(func.count()).select_from(TrainingMetric)
                        .where(TrainingMetric.run_id == run2)) or 0
        distinct = len(set(s.execute(select(TrainingMetric.step, TrainingMetric.key)
                                     .where(TrainingMetric.run_id == run2)).tuples()))
        train_steps = _train_steps(s, run2)
        pulled = s.scalars(select(TrainingEvent).where(
            TrainingEvent.run_id == run2, TrainingEvent.kind == "checkpoint_pulled")).all()
    resumed_from = started[-1].details.get("resumed_from")
    print(f"MANY HOSTS fine-tune killed on A at step {killed_at}, resumed on B from step "
          f"{resumed_from} (the store's checkpoint), {steps} steps, metric rows {rows} "
          f"distinct {distinct}")
    assert len(started) == 2 and resumed_from is not None and 4 <= resumed_from <= killed_at
    assert train_steps == list(range(1, steps + 1)) and rows == distinct
    # B had no copy of its own: the checkpoint it resumed from came down from the store.
    assert [e.details["step"] for e in pulled] == [resumed_from]
    assert pulled[0].details["host"] == "hostB"

