"""Fault (d): SIGKILL a fine-tune mid-run. A fresh worker resumes it from its last checkpoint:
no metric step lost, none recorded twice, and the run registers its model once."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from fault_helpers import Figures, observer, report
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from helpers import Worker, wait_for_run, write_jsonl
from nightowl.cli import cli, demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import RunStatus
from nightowl.platform.orm import ModelVersion, TrainingEvent, TrainingMetric, TrainingRun

pytestmark = [pytest.mark.faults, pytest.mark.integration]

STEPS = 40
# Long enough to cover loading the base model before the first heartbeat; short enough that
# the dead worker's run is taken over within seconds.
TRAIN_ENV = {"NIGHTOWL_LEASE_SECONDS": "10", "NIGHTOWL_REAP_INTERVAL_SECONDS": "1"}


def _steps(s: Session, run_id: str, key: str = "train/loss") -> list[int]:
    return list(s.scalars(select(TrainingMetric.step).where(
        TrainingMetric.run_id == run_id, TrainingMetric.key == key)
        .order_by(TrainingMetric.step)))


def _wait_run(settings: Settings, run_id: str, worker: Worker, *, timeout: float = 300,
              until: Callable[[Session, TrainingRun], bool] | None = None) -> TrainingRun:
    return wait_for_run(run_id, worker, timeout=timeout, until=until,
                        factory=observer(settings))


def test_killed_finetune_resumes_from_its_checkpoint_with_a_continuous_metric_series(
    start_worker: Callable[..., Worker], models: Settings, settings: Settings, tmp_path: Path
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl",
                        list(demo_data.labelled_reviews(2000, seed=7)))  # type: ignore[arg-type]
    first = start_worker("-Q", "train", "-c", "1", env=TRAIN_ENV)
    result = CliRunner().invoke(cli, [
        "finetune", "submit", "--kind", "sentiment", "--base", "tiny-sentiment", "--train",
        str(train), "--max-steps", str(STEPS), "--batch-size", "32", "--checkpoint-every", "10",
        "--register-as", "resumed"])
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip().splitlines()[-1]
    _wait_run(settings, run_id, first, until=lambda s, _: len(_steps(s, run_id)) >= 15)
    first.kill()
    killed = time.monotonic()
    with observer(settings)() as s:
        killed_at_step = max(_steps(s, run_id))

    second = start_worker("-Q", "train,cpu", "-c", "1", "--beat", env=TRAIN_ENV)
    resumed_after = _wait_run(settings, run_id, second, until=lambda _, r: r.attempts >= 2)
    resume_s = time.monotonic() - killed
    run = _wait_run(settings, run_id, second)
    recovery = time.monotonic() - killed
    assert resumed_after.attempts == 2
    assert run.status == RunStatus.SUCCEEDED, run.error

    with observer(settings)() as s:
        steps = _steps(s, run_id)
        rows = s.scalar(select(func.count()).select_from(TrainingMetric)
                        .where(TrainingMetric.run_id == run_id)) or 0
        distinct = len(set(s.execute(select(TrainingMetric.step, TrainingMetric.key)
                                     .where(TrainingMetric.run_id == run_id)).tuples()))
        started = s.scalars(select(TrainingEvent).where(
            TrainingEvent.run_id == run_id, TrainingEvent.kind == "started")
            .order_by(TrainingEvent.id)).all()
        registered = s.scalar(select(func.count()).select_from(ModelVersion)
                              .where(ModelVersion.training_run_id == run_id))
    lost = len(set(range(1, STEPS + 1)) - set(steps))
    duplicated = rows - distinct
    resumed_from = started[-1].details.get("resumed_from") if len(started) == 2 else None
    report(Figures("d. SIGKILL a fine-tune mid-run", STEPS, lost, duplicated, recovery,
                   {"unit": "steps", "killed_at_step": killed_at_step,
                    "resumed_from": resumed_from, "resumed_s": round(resume_s, 1),
                    "steps_recomputed": killed_at_step - (resumed_from or 0)}))
    assert (lost, duplicated) == (0, 0)
    assert steps == list(range(1, STEPS + 1))
    assert len(started) == 2
    assert resumed_from is not None and 10 <= resumed_from <= killed_at_step
    assert registered == 1
