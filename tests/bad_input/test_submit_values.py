"""Values that once gave a 500 (or a traceback, or a billion epochs) now get a 4xx naming the
field, from HTTP, the CLI, a schedule and a batch line alike, and nothing is queued."""

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
from nightowl.platform.orm import Job, Schedule, TrainingRun

GEN = "tiny-generator"
NESTED = "[" * 5000 + "]" * 5000


def _job(**extra: Any) -> str:
    return json.dumps({"kind": "generate", "model": GEN, "queue": "gpu",
                       "items": [{"custom_id": "a", "text": "hello"}], **extra})


BODIES = {
    "deadline_1e308": (_job()[:-1] + ', "deadline_seconds": 1e308}', "deadline"),
    "lone_surrogate_item": (_job().replace("hello", "\\ud800"), "surrogate"),
    "lone_surrogate_metadata": (_job(metadata={"k": "x"}).replace('"x"', '"\\udfff"'),
                                "surrogate"),
    "nested_metadata": (_job()[:-1] + ', "metadata": {"a": ' + NESTED + "}}", ""),
    "nested_params": (_job()[:-1] + ', "params": {"stop": ' + NESTED + "}}", ""),
    "huge_metadata": (_job(metadata={"a": "x" * 100_000}), "NIGHTOWL_MAX_METADATA_BYTES"),
    "max_new_tokens_1e9": (_job(params={"max_new_tokens": 1_000_000_000}), "max_new_tokens"),
    "top_k_negative": (_job(params={"top_k": -5}), "top_k"),
    # Positive, yet the sampler divides into infinity: a worker's model_error, if let through.
    "temperature_1e-320": (_job(params={"temperature": 1e-320}), "temperature"),
    "repetition_penalty_1e-320": (_job(params={"repetition_penalty": 1e-320}),
                                  "repetition_penalty"),
    "temperature_nan": (_job().replace('"queue"', '"params": {"temperature": NaN}, "queue"'),
                        ""),
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_http_job_values_get_a_4xx_naming_the_problem(
        name: str, client: Any, models: Settings, session: Session) -> None:
    body, words = BODIES[name]
    before = count_rows(session, Job)
    response = client.post("/v1/jobs", content=body.encode("utf-8", "surrogatepass"),
                           headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    assert words in response.text, response.text
    assert count_rows(session, Job) == before


def _train_file(client: Any) -> str:
    rows = [{"text": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    up = client.post("/v1/files", files={"file": ("t.jsonl", "\n".join(map(json.dumps, rows)))},
                     data={"purpose": "fine-tune"})
    assert up.status_code == 200, up.text
    return str(up.json()["id"])


@pytest.mark.parametrize(("extra", "words"), [
    ({"hyperparameters": {"epochs": 1_000_000_000}}, "NIGHTOWL_MAX_FINETUNE_EPOCHS"),
    ({"hyperparameters": {"max_steps": 10**12}}, "NIGHTOWL_MAX_FINETUNE_STEPS"),
    ({"hyperparameters": {"batch_size": -1}}, "batch_size"),
    ({"hyperparameters": {"lr": "fast"}}, "lr"),
    ({"register_as": "tiny-generator"}, "is a generate model"),
    ({"register_as": "a@b"}, "must not contain '@'"),
    ({"kind": "embed", "base": "tiny-sentiment"}, "not fine-tuned here"),
    ({"hyperparameters": {"seed": None}}, "hyperparameters.seed"),
    ({"promote_to": "p" * 101}, "promote_to"),
    ({"register_as": "r" * 201}, "register_as"),
    ({"train": {"epochs": 1}}, "train"),
])
def test_finetune_budgets_and_register_as_are_checked_before_training(
        extra: dict[str, Any], words: str, client: Any, models: Settings,
        session: Session) -> None:
    before = count_rows(session, TrainingRun)
    response = client.post("/v1/finetunes", json={
        "kind": "sentiment", "base": "tiny-sentiment", "training_file": _train_file(client),
        **extra})
    assert 400 <= response.status_code < 500, response.text
    assert words in response.text, response.text
    assert count_rows(session, TrainingRun) == before


def test_cli_says_what_is_wrong_without_a_traceback(models: Settings, tmp_path: Path,
                                                     session: Session) -> None:
    items = tmp_path / "in.jsonl"
    items.write_text(json.dumps({"text": "hello"}) + "\n")
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"text": f"t{i}", "label": "pos" if i % 2 else "neg"})
                               for i in range(20)))
    before = (count_rows(session, Job), count_rows(session, TrainingRun))
    for args, words in (
        (["submit", "generate", str(items), "--model", GEN, "--deadline", "99999999999999d"],
         "longer than any duration"),
        (["submit", "generate", str(items), "--model", GEN, "--deadline", "400d"],
         "at most 366 days"),
        (["submit", "generate", str(items), "--model", GEN, "--param", "top_k=-5"], "top_k"),
        (["submit", "generate", str(items), "--model", GEN, "--metadata",
          "k=" + "x" * 100_000], "NIGHTOWL_MAX_METADATA_BYTES"),
        (["finetune", "submit", "--kind", "sentiment", "--base", "tiny-sentiment", "--train",
          str(train), "--epochs", "1000000000"], "NIGHTOWL_MAX_FINETUNE_EPOCHS"),
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert words in result.output, result.output
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert (count_rows(session, Job), count_rows(session, TrainingRun)) == before


def test_a_schedule_template_is_held_to_the_same_rules(models: Settings, tmp_path: Path,
                                                       session: Session) -> None:
    items = tmp_path / "in.jsonl"
    items.write_text(json.dumps({"text": "hello"}) + "\n")
    spec = tmp_path / "job.json"
    before = count_rows(session, Schedule)
    for template, words in (
        ({"params": {"max_new_tokens": 10**9}}, "max_new_tokens"),
        ({"metadata": {"a": "x" * 100_000}}, "NIGHTOWL_MAX_METADATA_BYTES"),
        ({"params": {"temperature": 1e-320}}, "temperature"),
    ):
        spec.write_text(json.dumps({"kind": "generate", "model": GEN,
                                    "input_file": str(items), **template}))
        result = CliRunner().invoke(cli, ["schedule", "add", "bad-values", "--cron",
                                          "0 2 * * *", "--job", str(spec)])
        assert result.exit_code != 0 and words in result.output, result.output
    assert count_rows(session, Schedule) == before


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/completions"])
def test_an_openai_temperature_too_small_to_sample_with_decodes_greedily(endpoint: str) -> None:
    # OpenAI takes 0..2; under the sampler's floor it means what 0 means, not a torch error.
    from nightowl.openai.lines import parse_body

    body: dict[str, Any] = {"model": GEN, "temperature": 1e-320}
    body.update({"messages": [{"role": "user", "content": "hi"}]}
                if "chat" in endpoint else {"prompt": "hi"})
    params = parse_body(body, endpoint).params
    assert params.get("do_sample") is False and "temperature" not in params
