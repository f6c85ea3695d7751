"""Schedules as data: clear errors at add time, the CLI and API life cycle, the firing record."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sched_helpers import firings, nightowl
from sqlalchemy import select
from sqlalchemy.orm import Session

from helpers import write_jsonl
from nightowl.cli import demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import FiringStatus, ItemStatus, JobStatus, RunStatus, TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.finetune import service as finetunes
from nightowl.platform.orm import Job, JobItem, Schedule, ScheduleRun, TrainingRun, utcnow
from nightowl.scheduling import schedules
from nightowl.scheduling.cron import check_timezone


def _spec(tmp_path: Path, model: str, **extra: Any) -> Path:
    train = write_jsonl(tmp_path / "train.jsonl",
                        list(demo_data.labelled_reviews(40, seed=1)))  # type: ignore[arg-type]
    spec = {"kind": "sentiment", "base": f"{model}@prod", "train": {"file": train.name},
            "eval": {"split": 0.25}, "hyperparameters": {"max_steps": 1},
            "register_as": f"{model}-nightly", "promote_to": "prod", **extra}
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    return path


def _cancel_runs(session: Session, name: str) -> None:
    # Nothing trains these: cancel them so a later test's train worker skips their messages.
    session.commit()  # SQLite: an open transaction here would lock out every other session
    for f in firings(name):
        if f.training_run_id:
            run = session.get(TrainingRun, f.training_run_id)
            if run is not None and run.status == RunStatus.QUEUED:
                finetunes.cancel_run(session, run.id)
    session.commit()


def test_add_names_what_is_wrong_and_saves_nothing(
        fake_sentiment: str, tmp_path: Path, session: Session) -> None:
    good = _spec(tmp_path, fake_sentiment)
    cases = [
        (["--cron", "0 2 * *"], good, "has 4 fields"),
        (["--cron", "0 25 * * *"], good, "is not valid"),
        (["--cron", "0 0 30 2 *"], good, "is not valid"),  # Feb 30: parses, never fires
        (["--cron", "0 2 * * *", "--tz", "Europe/Berln"], good, "did you mean Europe/Berlin"),
        (["--cron", "0 2 * * *"], _spec(tmp_path, "no-such-model"), "unknown model"),
        (["--cron", "0 2 * * *"], _spec(tmp_path, fake_sentiment, kind="sentimental"),
         "spec.kind: 'sentimental' is not a kind"),
        (["--cron", "0 2 * * *"], _spec(tmp_path, fake_sentiment, train={"file": "gone.jsonl"}),
         "spec.train.file: file"),
        (["--cron", "0 2 * * *"], _spec(tmp_path, fake_sentiment,
                                        hyperparameters={"epoch": 1}), "unknown ['epoch']"),
        (["--cron", "0 2 * * *"], _spec(tmp_path, fake_sentiment, priority=101),
         "spec.priority: Input should be less than or equal to 100"),
    ]
    name = f"bad-{uuid.uuid4().hex[:6]}"
    for args, spec, message in cases:
        out = nightowl("schedule", "add", name, *args, "--finetune", str(spec), ok=False)
        assert message in out, (message, out)
    bad_rows = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "label": "a"}, {"txt": "x"}])
    out = nightowl("schedule", "add", name, "--cron", "0 2 * * *", "--finetune",
                   str(_spec(tmp_path, fake_sentiment, train={"file": str(bad_rows)})), ok=False)
    assert "line 2: missing or empty field 'text'" in out
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"kind": "translate", "model": fake_sentiment,
                               "input_file": str(bad_rows)}))
    out = nightowl("schedule", "add", name, "--cron", "0 2 * * *", "--job", str(job), ok=False)
    assert "is a sentiment model, not translate" in out
    assert session.scalar(select(Schedule).where(Schedule.name == name)) is None


def test_life_cycle_from_the_cli(fake_sentiment: str, tmp_path: Path, session: Session,
                                 schedule_name: str) -> None:
    name = schedule_name
    out = nightowl("schedule", "add", name, "--cron", "0 2 * * *", "--tz", "Europe/Berlin",
                   "--finetune", str(_spec(tmp_path, fake_sentiment)))
    assert "next" in out and ("02:00:00 CET" in out or "02:00:00 CEST" in out)
    listed = nightowl("schedule", "list")
    assert name in listed and "enabled" in listed
    shown = json.loads(nightowl("schedule", "show", name))
    assert shown["spec"]["train"]["file"] == str(tmp_path / "train.jsonl")  # made absolute
    nxt = datetime.fromisoformat(shown["next_fire"])
    assert nxt.astimezone(check_timezone("Europe/Berlin")).hour == 2

    nightowl("schedule", "pause", name)
    assert "paused" in nightowl("schedule", "list")
    assert json.loads(nightowl("schedule", "show", name))["next_fire"] is None
    nightowl("schedule", "resume", name)
    # Nothing has fired yet: resuming moves the anchor, and must not read as a firing.
    resumed = json.loads(nightowl("schedule", "show", name))
    assert resumed["last_fired_for"] is None and resumed["slots_due_after"]
    nightowl("schedule", "edit", name, "--cron", "30 3 * * 1", "--catchup", "none")
    shown = json.loads(nightowl("schedule", "show", name))
    assert shown["cron"] == "30 3 * * 1" and shown["catchup"] == "none"
    assert datetime.fromisoformat(shown["next_fire"]).weekday() in (0, 6)  # Mon 03:30 Berlin

    run_id = nightowl("schedule", "run-now", name).strip().splitlines()[-1]
    run = session.get(TrainingRun, run_id)
    assert run is not None and run.status == RunStatus.QUEUED
    session.commit()
    (firing,) = firings(name)
    assert firing.training_run_id == run_id and run.schedule_run_id == firing.id
    assert firing.status == FiringStatus.SUBMITTED and firing.fired_by.startswith("cli:")
    assert run.dataset["train_rows"] + run.dataset["eval_rows"] == 40
    session.commit()
    history = [json.loads(line) for line in
               nightowl("schedule", "history", name, "--json").splitlines()]
    assert [h["training_run_id"] for h in history] == [run_id]
    assert history[0]["run_status"] == "queued"
    assert json.loads(nightowl("schedule", "show", name))["last_fired_for"] == \
        history[0]["scheduled_for"]
    _cancel_runs(session, name)
    assert firings(name)[0].status == FiringStatus.CANCELLED

    nightowl("schedule", "remove", name)
    assert "no schedule" in nightowl("schedule", "show", name, ok=False)


def test_finished_run_records_the_gate_decision_on_its_firing(
        fake_sentiment: str, tmp_path: Path, session: Session, migrated: Settings,
        schedule_name: str) -> None:
    name = schedule_name
    nightowl("schedule", "add", name, "--cron", "0 2 * * *", "--finetune",
             str(_spec(tmp_path, fake_sentiment, priority=7)))
    run_id = nightowl("schedule", "run-now", name).strip().splitlines()[-1]
    run = session.get(TrainingRun, run_id)
    assert run is not None and run.priority == 7  # the template's, as a submit would take it
    # What the train task does at the end of a run, without training anything.
    finetunes.finish_run(session, run_id, model_path=str(tmp_path), sha256="0" * 64,
                         metrics={"eval/accuracy": 0.9}, incumbent_metrics=None)
    (view,) = schedules.history(session, name)
    assert view.status == FiringStatus.SUCCEEDED and view.run_status == "succeeded"
    assert view.version == f"{fake_sentiment}-nightly@v1"
    assert view.promotion is not None and view.promotion["promoted"] is True
    assert view.outcome["metrics"] == {"eval/accuracy": 0.9}
    session.commit()
    assert "promoted" in nightowl("schedule", "history", name)


def test_labelled_query_takes_rows_since_the_last_successful_firing(
        fake_sentiment: str, tmp_path: Path, session: Session, migrated: Settings,
        schedule_name: str) -> None:
    model = fake_sentiment
    name = schedule_name
    spec = _spec(tmp_path, model, train={"query": {"labelled_since": "last_success",
                                                     "model": model}})
    nightowl("schedule", "add", name, "--cron", "0 2 * * *", "--finetune", str(spec))
    sid = session.scalar(select(Schedule.id).where(Schedule.name == name))
    assert sid is not None
    start = utcnow()

    def labelled(n: int, seed: int) -> None:
        # Stored items as a finished job leaves them; the job service is tested elsewhere.
        job = Job(id=f"job_{uuid.uuid4().hex[:24]}", kind=TaskKind.SENTIMENT, model_ref=model,
                  model_version_id=schedules_model_id(session, model), chunk_size=100,
                  status=JobStatus.COMPLETED, queue="cpu")
        session.add(job)
        session.flush()
        for i, row in enumerate(demo_data.labelled_reviews(n, seed=seed)):
            session.add(JobItem(job_id=job.id, idx=i, custom_id=str(i), input=row,
                                status=ItemStatus.SUCCEEDED, finished_at=utcnow()))
        session.add(JobItem(job_id=job.id, idx=n, custom_id="unlabelled",
                            input={"text": "no label here"}, status=ItemStatus.SUCCEEDED,
                            finished_at=utcnow()))
        session.commit()

    labelled(30, seed=3)
    first = schedules.fire(session=session, settings=migrated, schedule_id=sid,
                           scheduled_for=start + timedelta(seconds=1), fired_by="test")
    assert first is not None and first.training_run_id is not None
    run1 = session.get(TrainingRun, first.training_run_id)
    assert run1 is not None and run1.dataset["rows"] == 30
    assert run1.dataset["labelled_since"] is None
    # While run 1 has not succeeded, the next firing offers the same rows again.
    again = schedules.fire(session=session, settings=migrated, schedule_id=sid,
                           scheduled_for=start + timedelta(seconds=2), fired_by="test")
    assert again is not None and session.get(TrainingRun, again.training_run_id).dataset[
        "rows"] == 30  # type: ignore[union-attr]
    finetunes.finish_run(session, run1.id, model_path=str(tmp_path), sha256="0" * 64,
                         metrics={"eval/accuracy": 0.8}, incumbent_metrics=None)
    nothing = schedules.fire(session=session, settings=migrated, schedule_id=sid,
                             scheduled_for=start + timedelta(seconds=3), fired_by="test")
    assert nothing is not None and nothing.status == FiringStatus.SKIPPED
    assert nothing.training_run_id is None and "0 labelled row(s)" in nothing.outcome["reason"]
    labelled(12, seed=4)
    third = schedules.fire(session=session, settings=migrated, schedule_id=sid,
                           scheduled_for=start + timedelta(seconds=4), fired_by="test")
    assert third is not None and third.training_run_id is not None
    assert session.get(TrainingRun, third.training_run_id).dataset["rows"] == 12  # type: ignore[union-attr]
    _cancel_runs(session, name)


def schedules_model_id(session: Session, model: str) -> int:
    from nightowl.registry import versions as registry

    return registry.resolve(session, model).id


def test_a_slot_fires_once_whoever_tries(fake_sentiment: str, tmp_path: Path,
                                         session: Session, migrated: Settings,
                                         schedule_name: str) -> None:
    name = schedule_name
    nightowl("schedule", "add", name, "--cron", "* * * * *", "--finetune",
             str(_spec(tmp_path, fake_sentiment)))
    row = session.scalars(select(Schedule).where(Schedule.name == name)).one()
    slot = schedules.latest_slot(row, utcnow() + timedelta(minutes=2))
    session.commit()
    from nightowl.platform.db import session_factory

    with session_factory(migrated)() as other:
        won = schedules.fire(session=session, settings=migrated, schedule_id=row.id,
                             scheduled_for=slot, fired_by="beat-a")
        lost = schedules.fire(session=other, settings=migrated, schedule_id=row.id,
                              scheduled_for=slot, fired_by="beat-b")
    assert won is not None and lost is None
    runs = session.scalars(select(TrainingRun).where(
        TrainingRun.schedule_run_id.in_(select(ScheduleRun.id).where(
            ScheduleRun.schedule_id == row.id)))).all()
    assert len(runs) == 1
    _cancel_runs(session, name)


def _schedule(cron: str, tz: str = "UTC", *, catchup: str = "once",
              anchor: datetime | None = None) -> Schedule:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    return Schedule(name="t", cron=cron, timezone=tz, target="job", spec={}, enabled=True,
                    catchup=catchup, last_fired_for=anchor, created_at=created)


@pytest.mark.parametrize(("catchup", "slots", "missed"), [
    ("once", ["2025-01-03T02:00"], 1),
    ("all", ["2025-01-02T02:00", "2025-01-03T02:00"], 0),
    ("none", [], 2),
])
def test_missed_slots_follow_the_catchup_policy(catchup: str, slots: list[str],
                                                missed: int) -> None:
    # Beat was down from Jan 1 03:00 to Jan 3 09:00: two 02:00 slots passed.
    row = _schedule("0 2 * * *", catchup=catchup,
                    anchor=datetime(2025, 1, 1, 2, tzinfo=UTC))
    due = schedules.due_firings(row, datetime(2025, 1, 3, 9, tzinfo=UTC))
    assert [s.strftime("%Y-%m-%dT%H:%M") for s in due.slots] == slots
    assert due.missed == missed


def test_berlin_nightly_slots_across_daylight_saving() -> None:
    row = _schedule("0 2 * * *", "Europe/Berlin")
    utc = [schedules.next_fire(row, datetime(2025, 3, 28, 12, tzinfo=UTC))]
    for _ in range(2):
        utc.append(schedules.next_fire(row, utc[-1]))
    # 02:00 does not exist on Mar 30: it fires at 03:00 CEST, once.
    assert [u.strftime("%d %H:%M") for u in utc] == ["29 01:00", "30 01:00", "31 00:00"]
    row = _schedule("30 2 * * *", "Europe/Berlin")
    first = schedules.next_fire(row, datetime(2025, 10, 25, 12, tzinfo=UTC))
    second = schedules.next_fire(row, first)
    # 02:30 happens twice on Oct 26; a nightly job runs at the first one only.
    assert (first.isoformat(), second.isoformat()) == (
        "2025-10-26T00:30:00+00:00", "2025-10-27T01:30:00+00:00")


def test_api_schedules_are_the_tenants_own(client: Any, make_api_key: Any, fake_sentiment: str,
                                           tmp_path: Path, schedule_name: str) -> None:
    from fastapi.testclient import TestClient

    from nightowl_api.main import app

    train = write_jsonl(tmp_path / "t.jsonl",
                        list(demo_data.labelled_reviews(20, seed=2)))  # type: ignore[arg-type]
    name = schedule_name
    body: dict[str, Any] = {"name": name, "cron": "0 2 * * *", "timezone": "Europe/Berlin",
                            "target": "finetune",
                            "spec": {"kind": "sentiment", "base": fake_sentiment,
                                     "train": {"file": str(train)}}}
    r = client.post("/v1/schedules", json=body)
    assert r.status_code == 400 and "server paths are CLI-only" in r.json()["error"]["message"]
    with train.open("rb") as fh:
        file_id = client.post("/v1/files", data={"purpose": "fine-tune"},
                              files={"file": ("t.jsonl", fh)}).json()["id"]
    body["spec"]["train"] = {"file_id": file_id}
    r = client.post("/v1/schedules", json={**body, "cron": "0 2 * *"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "cron"
    r = client.post("/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["next_fire"] is not None and r.json()["enabled"] is True
    r = client.patch(f"/v1/schedules/{name}", json={"enabled": False, "cron": "0 3 * * *"})
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["cron"] == \
        "0 3 * * *"
    assert [s["name"] for s in client.get("/v1/schedules").json()] == [name]
    with TestClient(app, headers={"Authorization": f"Bearer {make_api_key('other')}"}) as other:
        assert other.get(f"/v1/schedules/{name}").status_code == 404
        assert name not in [s["name"] for s in other.get("/v1/schedules").json()]
    fired = client.post(f"/v1/schedules/{name}/run")
    assert fired.status_code == 201 and fired.json()["training_run_id"], fired.text
    history = client.get(f"/v1/schedules/{name}/history").json()
    assert [h["training_run_id"] for h in history] == [fired.json()["training_run_id"]]
    assert client.post(f"/v1/finetunes/{fired.json()['training_run_id']}/cancel").status_code \
        == 200
    assert client.delete(f"/v1/schedules/{name}").status_code == 204
    assert client.get(f"/v1/schedules/{name}").status_code == 404


def test_a_sentiment_line_keeps_its_label_for_later_training() -> None:
    import io

    from nightowl.jobs.inputs import read_jsonl

    lines = b"\n".join(json.dumps(o).encode() for o in (
        {"text": "great", "label": "positive"}, {"text": "meh", "label": 3},
        {"text": "bad", "label": ["x"]}, {"text": "plain"}))
    parsed = list(read_jsonl(io.BytesIO(lines), kind=TaskKind.SENTIMENT, max_line_bytes=1000))
    assert [p.input for p in parsed[:2]] == [{"text": "great", "label": "positive"},
                                              {"text": "meh", "label": "3"}]
    assert parsed[2].error is not None and "label must be a non-empty string" in parsed[2].error[1]
    assert parsed[3].input == {"text": "plain"} and parsed[3].error is None
    translated = list(read_jsonl(io.BytesIO(b'{"source": "a", "label": "x"}'),
                                 kind=TaskKind.TRANSLATE, max_line_bytes=1000))
    assert translated[0].input == {"source": "a"}


def test_a_job_template_fires_a_bulk_job(fake_sentiment: str, tmp_path: Path, session: Session,
                                         schedule_name: str) -> None:
    reviews = write_jsonl(tmp_path / "reviews.jsonl", [
        {"custom_id": "a", "text": "lovely", "label": "positive"}, {"text": "dull"}])
    spec = tmp_path / "job.json"
    # The gpu queue, which the tests' CPU workers do not read: the fake model never loads.
    spec.write_text(json.dumps({"kind": "sentiment", "model": f"{fake_sentiment}@prod",
                                "input_file": reviews.name, "queue": "gpu",
                                "metadata": {"team": "reviews"}}))
    nightowl("schedule", "add", schedule_name, "--cron", "15 * * * *", "--job", str(spec))
    job_id = nightowl("schedule", "run-now", schedule_name).strip().splitlines()[-1]
    job = session.get(Job, job_id)
    assert job is not None and job.total_items == 2 and job.queue == "gpu"
    assert job.metadata_["team"] == "reviews" and job.metadata_["schedule"] == schedule_name
    items = session.scalars(select(JobItem).where(JobItem.job_id == job_id)
                            .order_by(JobItem.idx)).all()
    assert items[0].input == {"text": "lovely", "label": "positive"}
    session.commit()
    (view,) = [json.loads(line) for line in
               nightowl("schedule", "history", schedule_name, "--json").splitlines()]
    assert view["job_id"] == job_id and view["run_status"] == "queued"
    reviews.unlink()  # the file is re-read at each firing: its loss is recorded, not raised
    out = nightowl("schedule", "run-now", schedule_name, ok=False)
    assert "does not exist" in out
    assert [f.status for f in firings(schedule_name)][-1] == "failed"


def test_catchup_all_fires_at_most_the_operators_cap_of_the_latest_slots() -> None:
    # `* * * * * *` with catchup=all, beat back after 66 s away: not 66 jobs at once.
    row = _schedule("* * * * * *", catchup="all", anchor=datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC))
    due = schedules.due_firings(row, datetime(2025, 1, 1, 0, 1, 6, tzinfo=UTC), max_catchup=10)
    assert [s.strftime("%M:%S") for s in due.slots] == [f"00:{s:02d}" for s in range(57, 60)] \
        + [f"01:{s:02d}" for s in range(7)]
    assert due.missed == 56


def test_a_cron_faster_than_the_operators_minimum_is_refused(
        migrated: Settings, session: Session) -> None:
    strict = migrated.model_copy(update={"schedule_min_interval_seconds": 60})
    for cron in ("* * * * * *", "*/30 * * * * *", "0,30 0 2 * * *"):
        with pytest.raises(InvalidInput, match="NIGHTOWL_SCHEDULE_MIN_INTERVAL_SECONDS"):
            schedules.add_schedule(session=session, settings=strict, name="too-fast",
                                   cron=cron, target="job", spec={})
    assert session.scalars(select(Schedule).where(Schedule.name == "too-fast")).first() is None
