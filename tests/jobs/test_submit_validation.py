"""Submitting: skip mode, --truncate, CSV and stdin input, chunking. Rejected input (each bad
line named, nothing queued) is the corpus in tests/data/bad, run by tests/bad_input."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from helpers import write_jsonl
from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.common.enums import ItemStatus, JobStatus
from nightowl.platform.orm import Job, JobChunk, JobItem


def _submit(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["submit", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_skip_turns_bad_lines_into_error_rows(
    models: Settings, session: Session, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [
        {"text": "a fine film"}, '{"text": ', {"text": 42}, {"text": "dull"},
    ])
    code, out, err = _submit("sentiment", str(f), "--model", "tiny-sentiment@prod",
                             "--on-invalid", "skip")
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    job = session.get(Job, job_id)
    assert job is not None and job.status == JobStatus.QUEUED
    assert (job.total_items, job.failed_items) == (4, 2)
    failed = session.scalars(
        select(JobItem).where(JobItem.job_id == job_id, JobItem.status == ItemStatus.FAILED)
        .order_by(JobItem.idx)
    ).all()
    assert [(i.line_no, i.error_code) for i in failed] == [(2, "invalid_input"),
                                                           (3, "invalid_input")]
    assert "must be a string, got int" in (failed[1].error_message or "")


def test_too_long_text_needs_truncate(models: Settings, session: Session, tmp_path: Path) -> None:
    long_text = " ".join(["word"] * 3000)
    f = write_jsonl(tmp_path / "long.jsonl", [{"text": long_text}])
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment")
    assert code != 0
    assert "line 1: text is" in err and "resubmit with --truncate" in err
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment", "--truncate")
    assert code == 0, err


def test_csv_input_and_missing_column(
    models: Settings, session: Session, tmp_path: Path
) -> None:
    f = tmp_path / "in.csv"
    f.write_text('id,review\nr1,"great, really great"\nr2,awful\n')
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment", "--column", "body")
    assert code != 0
    assert "CSV column(s) 'body' not found; the header has 'id', 'review'" in err
    code, out, err = _submit("sentiment", str(f), "--model", "tiny-sentiment",
                             "--column", "review", "--id-column", "id")
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    items = session.scalars(select(JobItem).where(JobItem.job_id == job_id)
                            .order_by(JobItem.idx)).all()
    assert [(i.custom_id, i.input["text"]) for i in items] == [
        ("r1", "great, really great"), ("r2", "awful")]


def test_stdin_and_chunking(models: Settings, session: Session) -> None:
    data = "".join(json.dumps({"text": f"review {i}"}) + "\n" for i in range(25)).encode()
    code, out, err = _submit("sentiment", "-", "--model", "tiny-sentiment",
                             "--chunk-size", "10", input=data)
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    chunks = session.scalars(select(JobChunk).where(JobChunk.job_id == job_id)
                             .order_by(JobChunk.chunk_no)).all()
    assert [(c.start_idx, c.end_idx) for c in chunks] == [(0, 10), (10, 20), (20, 25)]
    ids = session.scalars(select(JobItem.custom_id).where(JobItem.job_id == job_id)
                          .order_by(JobItem.idx)).all()
    assert ids[:3] == ["1", "2", "3"]  # default custom_id: the line number


def test_duplicate_custom_ids_are_found_across_insert_batches(
    models: Settings, session: Session, tmp_path: Path
) -> None:
    """Rows go to SQL 2,000 at a time; a duplicate is found whether its first use is in the
    same batch or one already stored, and names the first line either way."""
    rows: list[dict[str, object]] = [{"custom_id": f"r{i}", "text": f"review {i}"}
                                     for i in range(1, 2_006)]
    rows[5]["custom_id"] = "r5"        # line 6 repeats line 5, in the same batch
    rows[2_002]["custom_id"] = "r1"    # line 2003 repeats line 1, stored a batch earlier,
    rows[2_003]["custom_id"] = "r1"    # and so does line 2004
    f = write_jsonl(tmp_path / "dups.jsonl", rows)
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment")
    assert code != 0
    assert "line 6: duplicate custom_id 'r5' (first on line 5)" in err
    assert "line 2003: duplicate custom_id 'r1' (first on line 1)" in err
    assert "line 2004: duplicate custom_id 'r1' (first on line 1)" in err
    code, out, err = _submit("sentiment", str(f), "--model", "tiny-sentiment",
                             "--on-invalid", "skip")
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    failed = session.scalars(select(JobItem).where(
        JobItem.job_id == job_id, JobItem.status == ItemStatus.FAILED).order_by(JobItem.idx)).all()
    assert [(i.line_no, i.custom_id) for i in failed] == [
        (6, "r5#line6"), (2003, "r1#line2003"), (2004, "r1#line2004")]
    assert session.get(Job, job_id).total_items == 2_005  # type: ignore[union-attr]


def test_inline_items_are_numbered_like_lines_and_checked_like_them(
    models: Settings, client: Any
) -> None:
    items = [{"text": "a fine film"}, {"text": "dull", "params": {"all_scores": "yes"}},
             {"custom_id": "x"}, {"text": "fine again", "custom_id": "ok"}]
    resp = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment@prod",
                                         "items": items, "on_invalid": "skip"})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert (job["total"], job["failed"]) == (4, 2)
    assert job["errors"] == [
        {"line": 2, "message": "all_scores must be true or false, got 'yes'"},
        {"line": 3, "message": "missing field 'text'"},
    ]
    rejected = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment@prod",
                                             "items": items})
    assert rejected.status_code == 400
    assert [p["where"] for p in rejected.json()["error"]["problems"]] == ["line 2", "line 3"]


def test_deadline_takes_the_span_grammar_every_option_takes(
    models: Settings, session: Session, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [{"text": "a fine film"}])
    code, out, err = _submit("sentiment", str(f), "--model", "tiny-sentiment", "--deadline", "1w")
    assert code == 0, err
    job = session.get(Job, out.strip().splitlines()[-1])
    assert job is not None and job.deadline_at is not None
    assert job.validating_at is not None
    assert job.deadline_at - job.validating_at == timedelta(weeks=1)
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment", "--deadline", "1y")
    assert code == 2 and "'1y' is not a duration like 90s, 30m, 12h, 2d or 1w" in err

