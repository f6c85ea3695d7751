"""The nightly loop, unattended: beat fires, a worker fine-tunes on newly labelled traffic, and
the gate moves the alias only for a better model; every decision is in the schedule history."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sched_helpers import Beat, nightowl, wait_firings
from sqlalchemy.orm import Session

from helpers import Worker, wait_for_job, write_jsonl
from nightowl.cli import demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import JobStatus, RunStatus, TaskKind
from nightowl.platform.db import session_factory
from nightowl.platform.orm import TrainingRun, utcnow
from nightowl.registry import versions as registry


def _once_soon(seconds: int = 4) -> str:
    """A daily cron whose only slot in this test is a few seconds from now (seconds first)."""
    at = utcnow() + timedelta(seconds=seconds)
    return f"{at.second} {at.minute} {at.hour} * * *"


def _wait_run(run_id: str, worker: Worker, timeout: float = 240) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while True:
        with session_factory()() as s:
            run = s.get(TrainingRun, run_id)
            assert run is not None
            if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
                return run
        assert time.monotonic() < deadline, f"run {run_id} {run.status}\n{worker.output()[-4000:]}"
        time.sleep(0.3)


def _labelled_job(tmp_path: Path, model: str, n: int, seed: int, worker: Worker) -> None:
    rows: list[dict[str, Any]] = [{"custom_id": f"r{i}", **r} for i, r in
                                  enumerate(demo_data.labelled_reviews(n, seed=seed))]
    path = write_jsonl(tmp_path / f"traffic-{seed}.jsonl", rows)  # type: ignore[arg-type]
    job_id = nightowl("submit", "sentiment", str(path), "--model", model).strip().splitlines()[-1]
    assert wait_for_job(job_id, worker=worker).status == JobStatus.COMPLETED


def test_nightly_finetune_promotes_only_a_better_model(
        start_worker: Callable[..., Worker], start_beat: Callable[[], Beat], models: Settings,
        session: Session, tmp_path: Path, schedule_name: str) -> None:
    uid = uuid.uuid4().hex[:6]
    labeller, served = f"labeller-{uid}", f"served-{uid}"
    base = registry.resolve(session, "tiny-sentiment@prod")
    # Traffic is scored by its own model name so the query sees this test's rows only; the
    # alias starts on an untrained model, so a real fine-tune has something to beat.
    registry.register(session, name=labeller, kind=TaskKind.SENTIMENT, source=base.source)
    incumbent = registry.register(session, name=served, kind=TaskKind.SENTIMENT,
                                  source=base.source)
    registry.set_alias(session, incumbent, "prod")
    session.commit()
    worker = start_worker("-Q", "train,cpu", "-c", "1")
    beat = start_beat()
    _labelled_job(tmp_path, labeller, 240, seed=11, worker=worker)

    spec: dict[str, Any] = {
        "kind": "sentiment", "base": "tiny-sentiment@prod",
        "train": {"query": {"labelled_since": "last_success", "model": labeller}},
        "eval": {"split": 0.25},
        "hyperparameters": {"max_steps": 60, "lr": 2e-3, "batch_size": 16, "eval_every": 60},
        "register_as": served, "promote_to": "prod"}
    (tmp_path / "strong.json").write_text(json.dumps(spec))
    name = schedule_name
    nightowl("schedule", "add", name, "--cron", _once_soon(), "--finetune",
             str(tmp_path / "strong.json"))
    (first,) = wait_firings(name, 1, timeout=30, beats=[beat])
    assert first.training_run_id, first.outcome
    run1 = _wait_run(first.training_run_id, worker)
    assert run1.status == RunStatus.SUCCEEDED, run1.error
    assert run1.dataset["rows"] == 240 and run1.dataset["labelled_since"] is None
    assert run1.promotion is not None and run1.promotion["promoted"] is True, run1.promotion
    assert run1.promotion["incumbent_version"] == incumbent.ref
    v_new = registry.resolve(session, f"{served}@prod")
    assert v_new.training_run_id == run1.id
    session.commit()

    # Next night: new labels only, and a broken edit: a learning rate that wrecks the weights.
    _labelled_job(tmp_path, labeller, 120, seed=12, worker=worker)
    spec["hyperparameters"] = {"max_steps": 3, "lr": 1.0}
    (tmp_path / "weak.json").write_text(json.dumps(spec))
    nightowl("schedule", "edit", name, "--cron", _once_soon(), "--finetune",
             str(tmp_path / "weak.json"))
    second = wait_firings(name, 2, timeout=30, beats=[beat])[-1]
    assert second.training_run_id, second.outcome
    run2 = _wait_run(second.training_run_id, worker)
    assert run2.status == RunStatus.SUCCEEDED, run2.error
    assert run2.dataset["rows"] == 120  # labelled since the first firing, which succeeded
    assert run2.promotion is not None and run2.promotion["promoted"] is False, run2.promotion
    assert run2.promotion["incumbent_version"] == v_new.ref
    session.expire_all()
    assert registry.resolve(session, f"{served}@prod").ref == v_new.ref
    session.commit()

    history = [json.loads(line) for line in
               nightowl("schedule", "history", name, "--json").splitlines()]
    assert [(h["status"], h["promotion"]["promoted"]) for h in history] == [
        ("succeeded", False), ("succeeded", True)]
    assert history[1]["version"] == v_new.ref and history[1]["outcome"]["metrics"]
    assert beat.alive()
