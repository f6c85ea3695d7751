"""Bulk jobs end to end: CLI submit, a real worker on the real broker and database, export."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from helpers import Worker, wait_for_job, write_jsonl
from nightowl.cli import cli, demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import JobStatus
from nightowl.platform.orm import JobItem


def submit(*args: str) -> str:
    result = CliRunner().invoke(cli, ["submit", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def export(job_id: str, *extra: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(cli, ["results", "export", job_id, *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_sentiment_job_of_5000_items_completes_and_exports_in_order(
    start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    rows = list(demo_data.reviews(5000, seed=1))
    f = write_jsonl(tmp_path / "reviews.jsonl", rows)  # type: ignore[arg-type]
    job_id = submit("sentiment", str(f), "--model", "tiny-sentiment@prod", "--chunk-size", "500")
    worker = start_worker("-Q", "cpu", "-c", "2")
    job = wait_for_job(job_id, worker=worker)
    assert job.status == JobStatus.COMPLETED
    assert (job.succeeded_items, job.failed_items) == (5000, 0)

    out = export(job_id)
    assert [r["custom_id"] for r in out] == [r["custom_id"] for r in rows]
    assert all(r["output"]["label"] in ("positive", "negative") for r in out)  # type: ignore[index]
    assert all(r["model"] == "tiny-sentiment@v1" for r in out)
    first = out[0]
    assert first["worker"] and first["device"] == "cpu" and first["attempts"] == 1
    assert first["tokens_in"] and first["started_at"] and first["finished_at"]
    # the offline model is trained, not random: obvious reviews get the obvious label
    by_text = {r["input"]["text"]: r["output"]["label"] for r in out}  # type: ignore[index]
    wonderful = [label for text, label in by_text.items() if " was wonderful" in text]
    terrible = [label for text, label in by_text.items() if " was terrible" in text]
    assert wonderful.count("positive") > 0.8 * len(wonderful)
    assert terrible.count("negative") > 0.8 * len(terrible)

    csv_path = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["results", "export", job_id, "-o", str(csv_path)])
    assert result.exit_code == 0, result.output
    assert len(csv_path.read_text().splitlines()) == 5001


def test_skip_mode_job_completes_with_error_rows(
    start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a", "text": "the movie was wonderful"},
        "{oops",
        {"custom_id": "c"},
        {"custom_id": "d", "text": "the movie was terrible"},
    ])
    job_id = submit("sentiment", str(f), "--model", "tiny-sentiment", "--on-invalid", "skip")
    worker = start_worker()
    job = wait_for_job(job_id, worker=worker)
    assert job.status == JobStatus.COMPLETED
    assert (job.succeeded_items, job.failed_items) == (2, 2)
    errors = export(job_id, "--errors")
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [  # type: ignore[index]
        ("2", "invalid_input"), ("c", "invalid_input")]


def test_generation_and_translation_jobs(
    start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    gen = write_jsonl(tmp_path / "p.jsonl", list(demo_data.prompts(12)))  # type: ignore[arg-type]
    tr = write_jsonl(tmp_path / "s.jsonl", list(demo_data.sentences(12)))  # type: ignore[arg-type]
    gen_id = submit("generate", str(gen), "--model", "tiny-generator@prod",
                    "--param", "max_new_tokens=8", "--param", "seed=3")
    tr_id = submit("translate", str(tr), "--model", "tiny-translator@prod")
    worker = start_worker()
    for job_id in (gen_id, tr_id):
        assert wait_for_job(job_id, worker=worker).status == JobStatus.COMPLETED
    gen_rows = export(gen_id)
    assert all(isinstance(r["output"]["text"], str) for r in gen_rows)  # type: ignore[index]
    assert all(0 < (r["tokens_out"] or 0) <= 8 for r in gen_rows)  # type: ignore[operator]
    tr_rows = export(tr_id)
    assert all(r["output"]["translation"].strip() for r in tr_rows)  # type: ignore[index]


def _under_way(start_worker: Callable[..., Worker], tmp_path: Path, items: int,
               max_new_tokens: int) -> tuple[str, Worker]:
    """A generation job of `items` prompts in chunks of 20, its first chunk done by a worker."""
    f = write_jsonl(tmp_path / "p.jsonl", list(demo_data.prompts(items)))  # type: ignore[arg-type]
    job_id = submit("generate", str(f), "--model", "tiny-generator", "--chunk-size", "20",
                    "--param", f"max_new_tokens={max_new_tokens}")
    worker = start_worker()
    wait_for_job(job_id, worker=worker, until=lambda j: j.succeeded_items >= 20)
    return job_id, worker


def test_cancel_mid_job_keeps_finished_rows_and_retry_runs_the_rest(
    start_worker: Callable[..., Worker], session: Session, tmp_path: Path
) -> None:
    job_id, worker = _under_way(start_worker, tmp_path, 400, max_new_tokens=48)
    result = CliRunner().invoke(cli, ["jobs", "cancel", job_id])
    assert result.exit_code == 0, result.output
    job = wait_for_job(job_id, worker=worker)
    assert job.status == JobStatus.CANCELLED
    assert job.succeeded_items >= 20 and job.cancelled_items > 0
    assert job.succeeded_items + job.cancelled_items == 400
    rows = export(job_id)
    assert sum(r["status"] == "succeeded" for r in rows) == job.succeeded_items
    assert all(r["output"] for r in rows if r["status"] == "succeeded")

    result = CliRunner().invoke(cli, ["jobs", "retry", job_id])
    assert result.exit_code == 0, result.output
    child_id = result.stdout.strip().splitlines()[-1]
    child = wait_for_job(child_id, worker=worker)
    assert child.parent_job_id == job_id
    assert child.status == JobStatus.COMPLETED
    assert child.total_items == job.cancelled_items
    cancelled_ids = {r["custom_id"] for r in rows if r["status"] == "cancelled"}
    assert {r["custom_id"] for r in export(child_id)} == cancelled_ids


def test_killed_worker_and_a_fresh_one_finish_with_one_result_per_item(
    start_worker: Callable[..., Worker], session: Session, tmp_path: Path
) -> None:
    job_id, first = _under_way(start_worker, tmp_path, 240, max_new_tokens=32)
    first.kill()
    killed_at = time.monotonic()
    second = start_worker("-Q", "cpu", "-c", "1", "--beat")
    job = wait_for_job(job_id, worker=second)
    assert job.status == JobStatus.COMPLETED, second.output()[-3000:]
    assert job.succeeded_items == 240
    per_item = session.execute(
        select(JobItem.custom_id, func.count()).where(JobItem.job_id == job_id)
        .group_by(JobItem.custom_id)
    ).all()
    assert len(per_item) == 240 and all(n == 1 for _, n in per_item)
    print(f"recovered {time.monotonic() - killed_at:.1f}s after the kill")


def test_watch_and_jobs_show(start_worker: Callable[..., Worker], models: Settings,
                             tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "r.jsonl", list(demo_data.reviews(50)))  # type: ignore[arg-type]
    start_worker()
    result = CliRunner().invoke(cli, ["submit", "sentiment", str(f), "--model", "tiny-sentiment",
                                      "--wait"])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert job_id.startswith("job_")  # the only stdout line, printed before the progress
    assert "completed: 50 succeeded of 50" in result.stderr
    # Not a terminal: progress as whole lines, never carriage-return frames.
    assert "\r" not in result.stderr and "completed 50/50\n" in result.stderr
    shown = json.loads(CliRunner().invoke(cli, ["jobs", "show", job_id]).stdout)
    assert shown["status"] == "completed" and shown["succeeded"] == 50
    assert job_id in CliRunner().invoke(cli, ["jobs", "list"]).stdout
