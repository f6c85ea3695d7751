"""Submitting: every bad line is named with its number, and a rejected file queues nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from helpers import write_jsonl
from nightowl.cli import cli
from nightowl.config import Settings
from nightowl.enums import ItemStatus, JobStatus
from nightowl.models import Job, JobChunk, JobItem


def _submit(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["submit", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def _job_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Job)) or 0


def test_bad_lines_are_rejected_by_number_and_nothing_is_queued(
    models: Settings, session: Session, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [
        {"text": "a fine film"},
        '{"text": "unterminated',
        {"txt": "wrong field"},
        {"text": "another fine film"},
    ])
    before = _job_count(session)
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment@prod")
    assert code != 0
    assert "line 2: malformed JSON" in err
    assert "line 3: missing field 'text'" in err
    assert "2 of 4 lines are invalid; nothing was queued" in err
    assert _job_count(session) == before


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


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"custom_id": "a", "text": "x"}, {"custom_id": "a", "text": "y"}],
         "line 2: duplicate custom_id 'a' (first on line 1)"),
        ([{"text": ""}], "line 1: field 'text' is empty"),
        (["[1, 2]"], "line 1: expected a JSON object per line"),
        ([{"text": "x", "params": [1]}], "line 1: params must be an object"),
        ([{"custom_id": {"a": 1}, "text": "x"}], "line 1: custom_id must be a non-empty string"),
    ],
)
def test_each_kind_of_bad_line_is_named(
    models: Settings, tmp_path: Path, lines: list[object], message: str
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", lines)  # type: ignore[arg-type]
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment")
    assert code != 0
    assert message in err


def test_empty_file_is_an_error(models: Settings, tmp_path: Path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment")
    assert code != 0 and "the input is empty" in err


def test_binary_and_non_utf8_lines(models: Settings, tmp_path: Path) -> None:
    f = tmp_path / "bin.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n\x00\x01\x02\n')
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment")
    assert code != 0
    assert "line 2: not valid UTF-8 (byte 0xe9" in err
    assert "line 3: binary data" in err


def test_a_huge_line_is_refused_without_reading_it_whole(
    models: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "huge.jsonl"
    f.write_text(json.dumps({"text": "x" * (10 * 1024 * 1024)}) + "\n" + json.dumps(
        {"text": "fine"}) + "\n")
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment")
    assert code != 0
    assert "line 1: line is longer than 1048576 bytes" in err


def test_too_long_text_needs_truncate(models: Settings, session: Session, tmp_path: Path) -> None:
    long_text = " ".join(["word"] * 3000)
    f = write_jsonl(tmp_path / "long.jsonl", [{"text": long_text}])
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment")
    assert code != 0
    assert "line 1: text is" in err and "resubmit with --truncate" in err
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-sentiment", "--truncate")
    assert code == 0, err


def test_unknown_model_fails_at_submit(models: Settings, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    code, _, err = _submit("sentiment", str(f), "--model", "no-such-model@prod")
    assert code != 0
    assert "unknown model 'no-such-model@prod'" in err
    assert "tiny-sentiment" in err  # the message lists what exists


def test_model_of_another_kind_is_refused(models: Settings, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    code, _, err = _submit("sentiment", str(f), "--model", "tiny-generator")
    assert code != 0 and "is a generate model" in err


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
