"""One bad value, one message: the CLI, HTTP, a schedule template and a batch line word it the
same, because each checks it against the one spec (nightowl.common.specs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from helpers import count_rows
from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.openai.lines import parse_line
from nightowl.platform.orm import Job, Schedule, TrainingRun

GEN = "tiny-generator"
SENT = "tiny-sentiment"

# (params given, the message every door gives, whether an OpenAI batch line shares the name
# and the rule: its max_tokens is OpenAI's name, and its temperature=0 means greedy)
JOB_VALUES = [
    ({"top_k": -5}, "top_k must be between 0 and 1000000, got -5", True),
    ({"max_new_tokens": 1e9},
     "max_new_tokens must be an integer between 1 and 65536, got 1000000000.0", False),
    ({"temperature": 0}, "temperature must be a number >= 0.01, got 0", False),
    ({"top_p": 1.5}, "top_p must be a number in (0, 1], got 1.5", True),
    ({"seed": -1}, "seed must be between 0 and 9223372036854775807, got -1", True),
]
# (CLI option, value, the same in a request body or template, HTTP status, the problem every
# door names)
FINETUNE_VALUES = [
    ("--lr", -1, {"hyperparameters": {"lr": -1}}, 400,
     "hyperparameters.lr: must be a number > 0 and at most 10, not -1"),
    ("--epochs", 1000, {"hyperparameters": {"epochs": 1000}}, 400,
     "hyperparameters.epochs: must be a number > 0 and at most 100 "
     "(NIGHTOWL_MAX_FINETUNE_EPOCHS), not 1000"),
    ("--weight-decay", -0.5, {"hyperparameters": {"weight_decay": -0.5}}, 400,
     "hyperparameters.weight_decay: must be a number >= 0 and at most 10, not -0.5"),
    # Click's own range check said this one its way before the spec could.
    ("--batch-size", 0, {"hyperparameters": {"batch_size": 0}}, 400,
     "hyperparameters.batch_size: must be an integer >= 1 and at most 4096, not 0"),
    # The body's schema refuses this one (422) before any handler runs.
    ("--gate", "accuracy", {"gate": "accuracy"}, 422,
     "'accuracy' must be an eval metric such as eval/accuracy"),
    # Refused at submit, not after training when the promotion would move it.
    ("--promote-to", "v2", {"promote_to": "v2"}, 400, "alias 'v2' is reserved or malformed"),
]


def _http_text(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    return "\n".join([error["message"], *(f"{p.get('where')}: {p.get('message')}"
                                          for p in error.get("problems") or [])])


def _cli(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize(("params", "message", "batch"), JOB_VALUES,
                         ids=[m.split()[0] for _, m, _ in JOB_VALUES])
def test_a_bad_job_parameter_reads_the_same_from_every_door(
        params: dict[str, Any], message: str, batch: bool, models: Settings, client: Any,
        session: Session, tmp_path: Path) -> None:
    items = tmp_path / "in.jsonl"
    items.write_text(json.dumps({"text": "hello"}) + "\n")
    before = (count_rows(session, Job), count_rows(session, Schedule))
    (name, value), = params.items()
    cli_text = _cli(["submit", "generate", str(items), "--model", GEN,
                     "--param", f"{name}={json.dumps(value)}"])
    http_inline = _http_text(client.post("/v1/jobs", json={
        "kind": "generate", "model": GEN, "params": params, "items": [{"text": "hello"}]}))
    upload = client.post("/v1/files", data={"purpose": "jobs"},
                         files={"file": ("in.jsonl", items.read_bytes())})
    http_file = _http_text(client.post("/v1/jobs", json={
        "kind": "generate", "model": GEN, "params": params, "file_id": upload.json()["id"]}))
    template = tmp_path / "job.json"
    template.write_text(json.dumps({"kind": "generate", "model": GEN, "input_file": str(items),
                                    "params": params}))
    schedule_text = _cli(["schedule", "add", "bad-param", "--cron", "0 2 * * *",
                          "--job", str(template)])
    for door, text in (("cli", cli_text), ("http inline", http_inline),
                       ("http file", http_file), ("schedule", schedule_text)):
        assert message in text, (door, text)
    if batch:
        line = parse_line(json.dumps({
            "custom_id": "a", "method": "POST", "url": "/v1/completions",
            "body": {"model": GEN, "prompt": "hello", **params}}).encode(), 1,
            "/v1/completions")
        assert line.problem is not None
        assert (line.problem.message, line.problem.param) == (message, name)
    assert (count_rows(session, Job), count_rows(session, Schedule)) == before


@pytest.mark.parametrize(("option", "value", "fields", "status", "problem"), FINETUNE_VALUES,
                         ids=[v[0] for v in FINETUNE_VALUES])
def test_a_bad_finetune_value_reads_the_same_from_every_door(
        option: str, value: float | str, fields: dict[str, Any], status: int, problem: str,
        models: Settings, client: Any, session: Session, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"text": f"t{i}", "label": "pos" if i % 2 else "neg"})
                               for i in range(20)))
    before = (count_rows(session, TrainingRun), count_rows(session, Schedule))
    cli_text = _cli(["finetune", "submit", "--kind", "sentiment", "--base", SENT,
                     "--train", str(train), option, str(value)])
    upload = client.post("/v1/files", data={"purpose": "fine-tune"},
                         files={"file": ("train.jsonl", train.read_bytes())})
    response = client.post("/v1/finetunes", json={
        "kind": "sentiment", "base": SENT, "training_file": upload.json()["id"], **fields})
    http_text = _http_text(response, status)
    template = tmp_path / "finetune.json"
    template.write_text(json.dumps({"kind": "sentiment", "base": SENT,
                                    "train": {"file": str(train)}, **fields}))
    schedule_text = _cli(["schedule", "add", "bad-finetune", "--cron", "0 2 * * *",
                          "--finetune", str(template)])
    for door, text in (("cli", cli_text), ("http", http_text), ("schedule", schedule_text)):
        assert problem in text, (door, text)
    assert (count_rows(session, TrainingRun), count_rows(session, Schedule)) == before


@pytest.mark.parametrize(("option", "field", "value", "message"), [
    ("--priority", "priority", 101, "priority: Input should be less than or equal to 100"),
    ("--chunk-size", "chunk_size", 0, "chunk_size: Input should be greater than or equal to 1"),
])
def test_a_bad_job_option_reads_the_same_from_the_cli_and_http(
        option: str, field: str, value: int, message: str, models: Settings, client: Any,
        session: Session, tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"text": "fine"}) + "\n")
    before = count_rows(session, Job)
    cli_text = _cli(["submit", "sentiment", str(f), "--model", SENT, option, str(value)])
    response = client.post("/v1/jobs", json={
        "kind": "sentiment", "model": SENT, field: value, "items": [{"text": "fine"}]})
    # FastAPI refuses a body that breaks its schema with 422, before any handler runs.
    assert response.status_code == 422, response.text
    http_text = response.json()["error"]["message"]
    assert message in cli_text and message in http_text, (cli_text, http_text)
    assert count_rows(session, Job) == before
