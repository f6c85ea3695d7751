"""Fine-tunes on a real train worker: metrics in SQL, registry, promotion gate. (A killed run
resuming from its checkpoint is fault (d): tests/faults/test_fault_finetune_kill.py; bad
fine-tune input is in the corpus tests/data/bad, run by tests/bad_input.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from helpers import Worker, wait_for_run, write_jsonl
from nightowl.cli import cli, demo_data
from nightowl.cli.finetune import metric_figure
from nightowl.common.config import Settings
from nightowl.common.enums import RunStatus
from nightowl.platform.orm import Job, TrainingMetric, TrainingRun
from nightowl.registry import versions as registry


def wait_run(run_id: str, worker: Worker, *, timeout: float = 300,
             until: Callable[[TrainingRun], bool] | None = None) -> TrainingRun:
    return wait_for_run(run_id, worker, timeout=timeout,
                        until=(lambda _s, run: until(run)) if until else None)


def finetune(*args: str) -> str:
    result = CliRunner().invoke(cli, ["finetune", "submit", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def steps_of(session: Session, run_id: str, key: str) -> list[int]:
    return list(session.scalars(select(TrainingMetric.step).where(
        TrainingMetric.run_id == run_id, TrainingMetric.key == key).order_by(TrainingMetric.step)))


def test_finetune_records_metrics_registers_and_gates_promotion(
    start_worker: Callable[..., Worker], session: Session, models: Settings, tmp_path: Path
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl",
                        list(demo_data.labelled_reviews(400, seed=5)))  # type: ignore[arg-type]
    evalf = write_jsonl(tmp_path / "eval.jsonl",
                        list(demo_data.labelled_reviews(80, seed=6)))  # type: ignore[arg-type]
    worker = start_worker("-Q", "train", "-c", "1")
    run_id = finetune("--kind", "sentiment", "--base", "tiny-sentiment@prod", "--train",
                      str(train), "--eval", str(evalf), "--max-steps", "30", "--lr", "1e-3",
                      "--batch-size", "16", "--eval-every", "10", "--register-as", "tuned",
                      "--promote-to", "prod")
    run = wait_run(run_id, worker)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert steps_of(session, run_id, "train/loss") == list(range(1, 31))
    for key in ("lr", "grad_norm", "train/tokens_per_s", "epoch"):
        assert len(steps_of(session, run_id, key)) == 30, key
    assert steps_of(session, run_id, "eval/accuracy") == [10, 20, 30]
    assert steps_of(session, run_id, "eval/f1") == [10, 20, 30]
    v1 = registry.resolve(session, "tuned@prod")
    assert v1.ref == "tuned@v1" and v1.training_run_id == run_id and len(v1.sha256 or "") == 64
    assert v1.metrics["eval/accuracy"] > 0.6
    session.expire_all()
    promo = session.get(TrainingRun, run_id).promotion  # type: ignore[union-attr]
    assert promo is not None and promo["promoted"] and promo["reason"] == \
        "no incumbent held the alias"

    # A run that cannot learn anything (lr ~ 0, one step) must not take the alias; --wait
    # says so in words, with both figures.
    waited = CliRunner().invoke(cli, [
        "finetune", "submit", "--kind", "sentiment", "--base", "tiny-sentiment@v1", "--train",
        str(train), "--eval", str(evalf), "--max-steps", "1", "--lr", "1e-12",
        "--register-as", "tuned", "--promote-to", "prod", "--wait"])
    assert waited.exit_code == 0, waited.output
    weak_id = waited.stdout.strip().splitlines()[-1]
    weak = wait_run(weak_id, worker)
    said = waited.stderr.strip().splitlines()[-1]
    assert said.startswith(f"{weak_id} succeeded: registered tuned@v2 (eval/accuracy 0.")
    assert "; not promoted to @prod: eval/accuracy 0." in said
    assert " does not beat " in said and said.endswith(" of tuned@v1")
    assert weak.status == RunStatus.SUCCEEDED, weak.error
    assert weak.promotion is not None and weak.promotion["promoted"] is False
    assert weak.promotion["incumbent_version"] == "tuned@v1"
    assert weak.promotion["candidate"] < weak.promotion["incumbent"]
    assert registry.resolve(session, "tuned@prod").ref == "tuned@v1"
    assert registry.resolve(session, "tuned").ref == "tuned@v2"

    # Jobs pin the alias' holder at submit time.
    f = write_jsonl(tmp_path / "r.jsonl", [{"text": "a fine film"}])
    result = CliRunner().invoke(cli, ["submit", "sentiment", str(f), "--model", "tuned@prod"])
    job = session.get(Job, result.stdout.strip().splitlines()[-1])
    assert job is not None and job.model_version_id == v1.id

    shown = json.loads(CliRunner().invoke(cli, ["runs", "show", weak_id]).stdout)
    assert (shown["base_version"], shown["result_version"]) == ("tiny-sentiment@v1", "tuned@v2")
    assert shown["promotion_summary"].startswith("not promoted to @prod: eval/accuracy")
    listed = CliRunner().invoke(cli, ["runs", "list"]).stdout
    weak_line = next(line for line in listed.splitlines() if weak_id in line)
    assert "tuned@v2" in weak_line and "not promoted to @prod" in weak_line
    first_line = next(line for line in listed.splitlines() if run_id in line)
    assert "tuned@v1" in first_line and "promoted to @prod" in first_line
    models_shown = CliRunner().invoke(cli, ["models", "show", "tuned"]).stdout
    assert f"lineage: fine-tuned from tiny-sentiment@v1 by run {weak_id}" in models_shown
    assert "base_version_id" not in models_shown
    assert [e["kind"] for e in shown["events"]][:2] == ["queued", "started"]
    assert "promotion" in [e["kind"] for e in shown["events"]]
    csv_out = CliRunner().invoke(cli, ["runs", "metrics", run_id, "--key", "train/loss",
                                       "--format", "csv"]).stdout.splitlines()
    assert csv_out[0] == "step,key,value,ts" and len(csv_out) == 31
    png = tmp_path / "curve.png"
    result = CliRunner().invoke(cli, ["runs", "plot", run_id, "-o", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Evals sit on the training step axis, with markers, not as lone dots on their own axis.
    series: dict[str, tuple[list[int], list[float]]] = {}
    for m in session.scalars(select(TrainingMetric).where(
            TrainingMetric.run_id == run_id,
            TrainingMetric.key.in_(["train/loss", "eval/accuracy"])).order_by(
                TrainingMetric.step)):
        series.setdefault(m.key, ([], []))[0].append(m.step)
        series[m.key][1].append(m.value)
    fig = metric_figure(series)
    loss_ax, eval_ax = fig.axes
    assert loss_ax.get_title() == "train/loss" and eval_ax.get_title() == "eval/accuracy"
    assert loss_ax.get_xlim() == eval_ax.get_xlim()
    assert loss_ax.get_xlim()[0] == 0.0 and 30.0 < loss_ax.get_xlim()[1] < 32.0
    assert list(eval_ax.lines[0].get_xdata()) == [10, 20, 30]
    assert eval_ax.lines[0].get_marker() == "o"
