"""Two real beat processes on one database: every slot fires once; pauses and edits apply live."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sched_helpers import Beat, firings, nightowl, wait_firings
from sqlalchemy import select

from helpers import write_jsonl
from nightowl.cli import demo_data
from nightowl.common.enums import RunStatus
from nightowl.finetune import service as finetunes
from nightowl.platform.db import session_factory
from nightowl.platform.orm import TrainingRun

POLL_S = 0.5
# Fault (e) of the fault suite: two beat processes, each slot fires once.
pytestmark = pytest.mark.faults


def _spec(path: Path, train: Path, model: str, max_steps: int) -> Path:
    path.write_text(json.dumps({
        "kind": "sentiment", "base": model, "train": {"file": str(train)},
        "eval": {"split": 0.25}, "hyperparameters": {"max_steps": max_steps},
        "register_as": f"{model}-beat"}))
    return path


def test_two_beats_fire_each_slot_once_and_follow_pause_and_edit(
        start_beat: Callable[[], Beat], fake_sentiment: str, tmp_path: Path,
        schedule_name: str) -> None:
    train = write_jsonl(tmp_path / "train.jsonl",
                        list(demo_data.labelled_reviews(24, seed=9)))  # type: ignore[arg-type]
    name = schedule_name
    # Seconds-first cron keeps the test short; the slots are real cron slots all the same.
    # catchup=all: a beat starved of CPU for a moment still fires every slot, so the gaps below
    # are exact.
    nightowl("schedule", "add", name, "--cron", "*/2 * * * * *", "--catchup", "all",
             "--finetune",
             str(_spec(tmp_path / "a.json", train, fake_sentiment, max_steps=1)))
    beats = [start_beat(), start_beat()]
    wait_firings(name, 4, timeout=40, beats=beats)

    nightowl("schedule", "pause", name)
    time.sleep(POLL_S * 3)  # a firing that had claimed its slot before the pause may land
    paused_count = len(firings(name))
    time.sleep(5)  # two and a half slots
    assert len(firings(name)) == paused_count, "a paused schedule fired"

    nightowl("schedule", "edit", name, "--cron", "*/3 * * * * *", "--finetune",
             str(_spec(tmp_path / "b.json", train, fake_sentiment, max_steps=2)))
    nightowl("schedule", "resume", name)
    everything = wait_firings(name, paused_count + 3, timeout=30, beats=beats)
    assert all(b.alive() for b in beats), [b.output()[-2000:] for b in beats]
    for b in beats:
        b.stop()

    factory = session_factory()
    with factory() as s:
        runs = {r.schedule_run_id: r for r in s.scalars(select(TrainingRun).where(
            TrainingRun.schedule_run_id.in_([f.id for f in everything])))}
        # One fine-tune per firing, linked both ways: the losing beat created nothing.
        assert len(runs) == len(everything)
        for f in everything:
            assert f.status == "submitted" and runs[f.id].id == f.training_run_id
            finetunes.cancel_run(s, runs[f.id].id)  # nothing will train them
        s.commit()
        assert all(r.status == RunStatus.CANCELLED for r in runs.values())

    before, after = everything[:paused_count], everything[paused_count:]
    assert {runs[f.id].hyperparams["max_steps"] for f in before} == {1}
    # No slot doubled (the table forbids it) and none skipped while the schedule was live.
    gaps = {b.scheduled_for - a.scheduled_for for a, b in itertools.pairwise(before)}
    assert gaps == {timedelta(seconds=2)}, sorted(f.scheduled_for for f in before)
    gaps = {b.scheduled_for - a.scheduled_for for a, b in itertools.pairwise(after)}
    assert gaps == {timedelta(seconds=3)}, sorted(f.scheduled_for for f in after)
    # The edit reached the running beats: the new cron and the new template.
    assert all(f.scheduled_for.second % 3 == 0 for f in after)
    assert {runs[f.id].hyperparams["max_steps"] for f in after} == {2}
    assert {f.fired_by.split(":")[0] for f in everything} == {"beat"}
    doubled = len(everything) - len({f.scheduled_for for f in everything})
    print(f"\nFAULT {'e. two beat processes':<34} items={len(everything):<5} lost=0   "
          f"duplicated={doubled:<3} recovery_s=   0.0  unit=slots fired_by="
          f"{len({f.fired_by for f in everything})}_beats")
