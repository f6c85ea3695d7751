"""What a new user sees from the CLI on the README path: exports that are what their name says,
a watch that says why nothing moves and what Ctrl-C leaves running, honest counts, and errors
that name what is wrong."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from query_support import TEST_QUEUE, register_model, run_chunk, run_job, submit, unique
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.common.enums import JobStatus
from nightowl.jobs import service as job_service
from nightowl.platform.db import session_factory

TEXTS = ["terrible, I want a refund", "lovely product", "broken on arrival", "fine thing"]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def finished_job(migrated: Settings, session: Session) -> dict[str, Any]:
    name = unique("sentiment")
    register_model(session, name)
    job = submit(migrated, model=f"{name}@prod", texts=TEXTS * 5, chunk_size=10)
    run_job(migrated, job)
    return {"id": job, "ref": f"{name}@v1"}


def test_export_writes_real_parquet_flattened_like_query(
        finished_job: dict[str, Any], tmp_path: Path) -> None:
    job = finished_job["id"]
    out = tmp_path / "out.parquet"
    result = invoke("results", "export", job, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 20 rows" in result.stderr and "(parquet)" in result.stderr
    table = pq.read_table(out)  # raises on anything that is not Parquet
    assert table.num_rows == 20
    rows = table.to_pylist()
    assert rows[0]["custom_id"] == "r0" and rows[0]["text"] == TEXTS[0]
    assert rows[0]["label"] == "negative" and rows[0]["score"] == pytest.approx(0.91)
    assert rows[0]["model"] == finished_job["ref"] and rows[0]["job_id"] == job

    # --format overrides the name; the columns are those of `results query`.
    named = tmp_path / "data.bin"
    assert invoke("results", "export", job, "-o", str(named), "--format", "parquet"
                  ).exit_code == 0
    queried = tmp_path / "q.parquet"
    assert invoke("results", "query", "--job", job, "-o", str(queried)).exit_code == 0
    assert pq.read_table(named).column_names == pq.read_table(queried).column_names

    # CSV: flat text/label/score columns, no JSON blobs, same header as the query's CSV.
    exported_csv = tmp_path / "out.csv"
    assert invoke("results", "export", job, "-o", str(exported_csv)).exit_code == 0
    query_csv = invoke("results", "query", "--job", job, "--format", "csv").stdout
    with exported_csv.open() as fh:
        exported = list(csv.DictReader(fh))
    assert list(exported[0]) == query_csv.splitlines()[0].split(",")
    assert exported[2]["text"] == TEXTS[2] and exported[2]["label"] == "negative"
    assert not any(v.startswith("{") for v in exported[2].values() if v and v != exported[2][
        "output"])


def test_a_failed_export_leaves_no_file(migrated: Settings, tmp_path: Path) -> None:
    for name in ("gone.parquet", "gone.csv", "gone.jsonl"):
        out = tmp_path / name
        result = invoke("results", "export", "job_doesnotexist", "-o", str(out))
        assert result.exit_code == 1 and "job_doesnotexist" in result.output
        assert list(tmp_path.iterdir()) == [], f"{name}: left {list(tmp_path.iterdir())}"
    result = invoke("results", "export", "job_x", "--format", "parquet")
    assert result.exit_code == 2 and "-o FILE.parquet" in result.output


def test_jobs_list_shows_cancelled_counts_and_the_pinned_version(
        migrated: Settings, session: Session) -> None:
    name = unique("sentiment")
    register_model(session, name)
    job = submit(migrated, model=f"{name}@prod", texts=TEXTS * 10, chunk_size=10)
    run_chunk(migrated, job, 0)
    with session_factory(migrated)() as s:
        assert job_service.cancel_job(s, job).status == JobStatus.CANCELLED
    result = invoke("jobs", "list", "--limit", "50")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if job in ln)
    assert f"{name}@v1" in line  # the version that ran, not only the alias asked for
    assert "10 succeeded, 30 cancelled of 40" in line and "40/40" not in line


def test_unknown_alias_says_which_part_is_wrong(migrated: Settings, session: Session,
                                                tmp_path: Path) -> None:
    name = unique("sentiment")
    register_model(session, name, alias="prod")
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "hello"}\n')
    result = invoke("submit", "sentiment", str(f), "--model", f"{name}@nightly")
    assert result.exit_code == 1
    assert f"{name} has no alias @nightly (its aliases: @prod)" in result.output
    result = invoke("submit", "sentiment", str(f), "--model", f"{name}@v9")
    assert f"{name} has no version v9 (it has v1)" in result.output


def test_watch_warns_within_seconds_when_no_worker_consumes_the_queue(
        migrated: Settings, session: Session) -> None:
    name = unique("sentiment")
    register_model(session, name)
    job = submit(migrated, model=f"{name}@prod", texts=TEXTS)  # on a queue nobody consumes
    started = time.monotonic()
    result = invoke("jobs", "watch", job, "--timeout", "6")
    assert result.exit_code == 1 and "still queued after 6s" in result.output
    assert f"no worker is consuming the {TEST_QUEUE!r} queue" in result.stderr
    assert f"nightowl worker -Q {TEST_QUEUE}" in result.stderr
    # Not a terminal: whole lines, no carriage-return frames.
    assert "\r" not in result.stderr and "queued 0/4\n" in result.stderr
    assert time.monotonic() - started < 20


def test_watch_through_the_api_warns_the_same(
        models: Settings, api_server: str, api_key: str, tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    submitted = invoke("--api", api_server, "--key", api_key, "submit", "sentiment", str(f),
                       "--model", "tiny-sentiment@prod", "--queue", "gpu")
    # No test worker consumes gpu.
    assert submitted.exit_code == 0, submitted.output
    job = submitted.stdout.strip()
    result = invoke("--api", api_server, "--key", api_key, "jobs", "watch", job, "--timeout",
                    "6")
    assert "no worker is consuming the 'gpu' queue" in result.stderr, result.output
    assert "\r" not in result.stderr and "queued 0/4\n" in result.stderr
    assert invoke("--api", api_server, "--key", api_key, "jobs", "cancel", job).exit_code == 0


def _cli(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    # As from a terminal: a suite started in the background by a non-interactive shell has
    # SIGINT ignored, and children inherit that, so Ctrl-C would never reach the CLI.
    return subprocess.Popen([sys.executable, "-m", "nightowl", *args], text=True,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kwargs)


def test_submit_wait_prints_the_id_first_and_ctrl_c_leaves_the_job_running(
        models: Settings, stack_env: dict[str, str], session: Session, tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    proc = _cli(stack_env, "submit", "sentiment", str(f), "--model", "tiny-sentiment@prod",
                "--queue", "gpu", "--wait")
    assert proc.stdout is not None
    job = proc.stdout.readline().strip()  # before any progress, while it waits
    assert job.startswith("job_")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out == ""  # the id was the one line on stdout
    assert f"job {job} goes on" in err and f"nightowl jobs cancel {job}" in err
    assert f"nightowl jobs watch {job}" in err and "Traceback" not in err
    with session_factory(models)() as s:
        assert job_service.get_job(s, job).status == JobStatus.QUEUED
        job_service.cancel_job(s, job)
        s.commit()


def test_without_a_broker_watch_worker_and_api_say_what_to_start(
        migrated: Settings, session: Session, stack_env: dict[str, str],
        tmp_path: Path) -> None:
    name = unique("sentiment")
    register_model(session, name)
    job = submit(migrated, model=f"{name}@prod", texts=TEXTS)
    dead = {**stack_env, "NIGHTOWL_REDIS_URL": "redis://127.0.0.1:9/0"}
    watch = _cli(dead, "jobs", "watch", job, "--timeout", "5")
    # The embedded default with no `nightowl up` running: fail at once, not retry forever.
    alone = {**{k: v for k, v in stack_env.items() if k != "NIGHTOWL_REDIS_URL"},
             "NIGHTOWL_HOME": str(tmp_path / "home"), "NIGHTOWL_DATABASE_URL":
             f"sqlite:///{tmp_path / 'alone.db'}"}
    env = {k: v for k, v in os.environ.items() if k != "NIGHTOWL_REDIS_URL"}
    for args in (["worker"], ["api", "--port", "1"]):
        proc = subprocess.run([sys.executable, "-m", "nightowl", *args], text=True,
                              env={**env, **alone}, capture_output=True, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert "no broker is running" in proc.stderr and "`nightowl up`" in proc.stderr
        assert "NIGHTOWL_REDIS_URL" in proc.stderr and "Traceback" not in proc.stderr
    _, err = watch.communicate(timeout=60)
    assert "the broker at redis://127.0.0.1:9/0 does not answer" in err, err
