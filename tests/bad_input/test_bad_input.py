"""The bad input corpus (tests/data/bad): every file, through the CLI and over HTTP, is answered
by a message naming the line or the field, and leaves nothing queued or half-written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform import broker
from nightowl.platform.orm import Job, JobChunk, JobItem, TrainingRun

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "cases.json").read_text())
TABLES = {"jobs": Job, "job_items": JobItem, "job_chunks": JobChunk,
          "training_runs": TrainingRun}
PURPOSE = {"job": "jobs", "finetune": "fine-tune", "batch": "batch"}


def _params() -> Iterator[Any]:
    for case in CASES:
        for via in case.get("via", ["cli", "http"]):
            yield pytest.param(case, via, id=f"{case['name']}-{via}")


@dataclass
class World:
    """Row counts and queued messages: what a rejected submit must leave exactly as it was."""

    rows: dict[str, int]
    queued: dict[str, int | None]

    @classmethod
    def now(cls, session: Session, settings: Settings) -> World:
        session.expire_all()
        rows = {name: session.scalar(select(func.count()).select_from(model)) or 0
                for name, model in TABLES.items()}
        session.commit()
        queued = {q: broker.queue_depth(settings, q) for q in ("cpu", "gpu", "train")}
        return cls(rows, queued)


def _input_file(case: dict[str, Any], tmp_path: Path) -> Path:
    generate = case.get("generate")
    if generate is None:
        return CORPUS / case["file"]
    path = tmp_path / f"{generate}.jsonl"
    if generate == "huge_line":  # 10 MB on one line: refused without being read whole
        path.write_text(json.dumps({"text": "x" * (10 * 1024 * 1024)}) + "\n"
                        + json.dumps({"text": "fine"}) + "\n")
    elif generate == "nested_line":  # deeper than any JSON parser should recurse
        path.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    elif generate == "too_long_text":  # far past the tiny model's context
        path.write_text(json.dumps({"text": " ".join(["word"] * 3000)}) + "\n")
    else:
        raise AssertionError(f"unknown generated case {generate!r}")
    return path


def _cli(case: dict[str, Any], path: Path) -> tuple[bool, str]:
    target = case.get("target", "job")
    if target == "job":
        args = ["submit", case["kind"], str(path), "--model", case["model"]]
    elif target == "finetune":
        args = ["finetune", "submit", "--kind", case["kind"], "--base", case["model"],
                "--train", str(path)]
    else:
        raise AssertionError(f"no CLI route for {target}")
    result = CliRunner().invoke(cli, args)
    return result.exit_code == 0, result.output


def _http(case: dict[str, Any], path: Path, client: Any) -> tuple[int, str]:
    target = case.get("target", "job")
    with path.open("rb") as fh:
        uploaded = client.post("/v1/files", data={"purpose": PURPOSE[target]},
                               files={"file": (path.name, fh, "application/octet-stream")})
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    if target == "job":
        response = client.post("/v1/jobs", json={"kind": case["kind"], "model": case["model"],
                                                 "file_id": file_id})
    elif target == "finetune":
        response = client.post("/v1/finetunes", json={
            "kind": case["kind"], "base": case["model"], "training_file": file_id})
    else:
        response = client.post("/v1/batches", json={
            "input_file_id": file_id, "endpoint": case["endpoint"], "completion_window": "24h"})
        if response.status_code == 200:  # created "validating"; its errors show when read back
            response = client.get(f"/v1/batches/{response.json()['id']}")
    return response.status_code, _render(response.json())


def _render(body: dict[str, Any]) -> str:
    """An answer as the lines a user reads: the message, then each problem with its place."""
    if "error" in body:
        error = body["error"]
        return "\n".join([error["message"], *(
            f"{p['where']}: {p['message']}" for p in error.get("problems") or []
            if isinstance(p, dict) and "where" in p)])
    if body.get("object") == "batch":
        errors = (body.get("errors") or {}).get("data") or []
        return "\n".join([f"status: {body['status']}", *(
            f"line {e['line']}: {e['code']}: {e['message']}" for e in errors)])
    return json.dumps(body)


@pytest.mark.parametrize(("case", "via"), list(_params()))
def test_bad_input_is_named_and_leaves_nothing_behind(
    case: dict[str, Any], via: str, models: Settings, session: Session, client: Any,
    tmp_path: Path
) -> None:
    path = _input_file(case, tmp_path)
    before = World.now(session, models)
    if via == "cli":
        ok, text = _cli(case, path)
        assert not ok, f"the CLI accepted {case['name']}:\n{text}"
    else:
        status, text = _http(case, path, client)
        assert status == case.get("status", 400), text
    for expected in case.get(f"expect_{via}", case.get("expect", [])):
        assert expected in text, f"{case['name']} via {via}: {expected!r} not in:\n{text}"
    after = World.now(session, models)
    written = {k: after.rows[k] - before.rows[k] for k in TABLES}
    assert written == {k: case.get("writes", {}).get(k, 0) for k in TABLES}, text
    assert after.queued == before.queued, "a rejected submit sent a message"


def test_the_corpus_and_its_cases_match() -> None:
    """Every committed file is a case, and every case's file exists."""
    named = {c["file"] for c in CASES if "file" in c}
    on_disk = {p.name for p in CORPUS.iterdir() if p.name not in ("cases.json", "README.md")}
    assert named == on_disk
