"""`nightowl --api URL ...`: every command either works through the API, as the key's tenant,
or refuses with a message; none quietly runs on the local database instead."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.platform.auth import authenticate
from nightowl.platform.db import session_scope
from nightowl.platform.orm import ApiKey, Job, JobItem, Schedule, Tenant, TrainingRun

CLOSED = "http://127.0.0.1:1"
# Registered, never run: jobs on it go to the gpu queue, which no test worker reads.
SENT = "clitest-sent"

# One call of every command that talks to the API, with arguments it accepts.
API_COMMANDS = [
    ["submit", "sentiment", "{in}", "--model", SENT, "--queue", "gpu"],
    ["finetune", "submit", "--kind", "sentiment", "--base", SENT, "--train", "{train}"],
    ["jobs", "list"], ["jobs", "show", "job_x"], ["jobs", "watch", "job_x", "--timeout", "1"],
    ["jobs", "cancel", "job_x"], ["jobs", "retry", "job_x"], ["jobs", "stats", "job_x"],
    ["results", "export", "job_x"], ["results", "query", "--format", "jsonl"],
    ["models", "list"], ["models", "show", SENT], ["models", "compare", "a@v1", "b@v1"],
    ["runs", "list"], ["runs", "show", "run_x"], ["runs", "cancel", "run_x"],
    ["runs", "metrics", "run_x"], ["runs", "plot", "run_x", "-o", "{png}"],
    ["schedule", "add", "s1", "--cron", "0 2 * * *", "--job", "{jobspec}"],
    ["schedule", "edit", "s1", "--cron", "0 3 * * *"], ["schedule", "list"],
    ["schedule", "show", "s1"], ["schedule", "pause", "s1"], ["schedule", "resume", "s1"],
    ["schedule", "run-now", "s1"], ["schedule", "history", "s1"], ["schedule", "remove", "s1"],
    ["workers"],
]
# Commands with no HTTP route: operator tools and processes on the operator's own host.
LOCAL_ONLY = [
    ["db", "upgrade"], ["db", "downgrade"], ["db", "current"], ["db", "analyst-role"],
    ["keys", "create", "cli-would-be-tenant"], ["keys", "list"], ["keys", "revoke", "key_x"],
    ["quota", "set", "cli-would-be-tenant", "--max-running-jobs", "2"], ["quota", "show"],
    ["sql", "SELECT 1"], ["worker"], ["beat"], ["api"], ["up"], ["reap"], ["demo"],
    ["models", "add", "clitest-new", "--kind", "sentiment", "--source", "{dir}"],
    ["models", "promote", f"{SENT}@v1", "prod"], ["models", "bootstrap"],
]

GROUPS = {"db", "keys", "quota", "models"}


@pytest.fixture(scope="module")
def sent_model(migrated: Settings) -> str:
    from nightowl.registry import versions as registry

    source = migrated.models_path / "clitest" / "sent"
    source.mkdir(parents=True, exist_ok=True)
    with session_scope(migrated) as s:
        if not registry.list_versions(s, SENT):
            registry.register(s, name=SENT, kind=TaskKind.SENTIMENT, source=str(source))
    return SENT


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """The placeholders of the command lists, as files in this test's folder."""
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"custom_id": "a", "text": "good"}\n{"custom_id": "b", "text": "bad"}\n')
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"t{i}", "label": ("pos", "neg")[i % 2]})
                             + "\n" for i in range(20)))
    jobspec = tmp_path / "job.json"
    jobspec.write_text(json.dumps({"kind": "sentiment", "model": SENT, "input_file": "in.jsonl",
                                   "queue": "gpu"}))
    return {"in": str(inp), "train": str(train), "jobspec": str(jobspec),
            "png": str(tmp_path / "curves.png"), "dir": str(tmp_path)}


def _fill(args: list[str], files: dict[str, str]) -> list[str]:
    return [a.format(**files) if a.startswith("{") else a for a in args]


def _counts(session: Session) -> dict[str, int]:
    session.expire_all()
    return {model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Job, TrainingRun, Schedule, ApiKey, Tenant)}


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output, result.exception)
    assert "Traceback" not in result.output


def _refused_by_a_closed_port(session: Session, args: list[str]) -> Result:
    """One failing run through an API nobody serves; nothing is stored locally either."""
    before = _counts(session)
    result = _invoke("--api", CLOSED, "--key", "nk-any", *args)
    assert result.exit_code == 1, result.output
    _no_traceback(result)
    assert _counts(session) == before
    return result


@pytest.mark.parametrize("args", API_COMMANDS, ids=" ".join)
def test_a_closed_port_is_one_clear_error_and_nothing_is_stored_locally(
        migrated: Settings, session: Session, files: dict[str, str], args: list[str]) -> None:
    result = _refused_by_a_closed_port(session, _fill(args, files))
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, result.output
    assert f"cannot reach the nightowl API at {CLOSED}" in error[0]
    assert "NIGHTOWL_API_URL" in error[0]


@pytest.mark.parametrize("args", LOCAL_ONLY, ids=" ".join)
def test_operator_commands_refuse_through_the_api_and_say_what_to_do(
        migrated: Settings, session: Session, files: dict[str, str], args: list[str]) -> None:
    result = _refused_by_a_closed_port(session, _fill(args, files))
    command = " ".join(args[:2] if args[0] in GROUPS else args[:1])
    assert f"Error: `nightowl {command}` " in result.output, result.output
    assert f"does not run through the API at {CLOSED}" in result.output
    assert "without --api" in result.output and "NIGHTOWL_API_URL unset" in result.output


def test_api_without_a_key_says_how_to_get_one(migrated: Settings) -> None:
    result = _invoke("--api", CLOSED, "jobs", "list")
    assert result.exit_code == 2 and "--api needs --key KEY" in result.output
    assert "nightowl keys create" in result.output
    # Help needs neither a key nor a server.
    assert _invoke("--api", CLOSED, "jobs", "--help").exit_code == 0


@pytest.fixture
def tenant(migrated: Settings, make_api_key: Any, session: Session) -> Iterator[tuple[str, str]]:
    key = make_api_key(f"clitest-{uuid.uuid4().hex[:8]}")
    tenant_id = authenticate(session, key)
    session.commit()
    yield key, tenant_id


def test_every_api_command_works_through_a_real_api_as_the_keys_tenant(
        sent_model: str, api_server: str, tenant: tuple[str, str], session: Session,
        files: dict[str, str], tmp_path: Path) -> None:
    key, tenant_id = tenant

    def remote(*args: str, ok: bool = True) -> Result:
        result = _invoke("--api", api_server, "--key", key, *args)
        _no_traceback(result)
        if ok:
            assert result.exit_code == 0, (args, result.output)
        return result

    # Jobs and results.
    submitted = remote("submit", "sentiment", files["in"], "--model", SENT, "--queue", "gpu")
    job_id = submitted.stdout.strip()
    assert f"queued 2 items (0 invalid) on {SENT}@v" in submitted.stderr
    job = session.get(Job, job_id)
    assert job is not None and job.tenant_id == tenant_id  # stored by the API, not locally
    assert job_id in remote("jobs", "list").stdout
    assert json.loads(remote("jobs", "show", job_id).stdout)["total"] == 2
    assert json.loads(remote("jobs", "stats", job_id, "--json").stdout)["job_id"] == job_id
    assert remote("jobs", "cancel", job_id).stdout.split() == [job_id, "cancelled"]
    watched = remote("jobs", "watch", job_id, ok=False)
    assert watched.exit_code == 1 and f"{job_id} cancelled" in watched.stderr
    retried = remote("jobs", "retry", job_id)
    assert f"retrying 2 items of {job_id}" in retried.stderr
    child = session.get(Job, retried.stdout.strip())
    assert child is not None and child.tenant_id == tenant_id
    remote("jobs", "cancel", child.id)
    rows = [json.loads(line) for line in remote("results", "export", job_id).stdout.splitlines()]
    assert [(r["custom_id"], r["status"]) for r in rows] == [("a", "cancelled"),
                                                            ("b", "cancelled")]
    out = tmp_path / "out.csv"
    assert "wrote 2 rows" in remote("results", "export", job_id, "-o", str(out)).stderr
    queried = remote("results", "query", "--job", job_id, "--format", "jsonl").stdout
    assert len(queried.splitlines()) == 2

    # Models: what the API shows (no registry paths); operator-only changes refuse.
    listed = remote("models", "list", "--name", SENT).stdout
    assert f"{SENT}@v1" in listed and "shared" in listed and "sentiment" in listed
    assert "/clitest/" not in listed
    shown = remote("models", "show", SENT).stdout
    assert shown.startswith(f"{SENT}@v1  sentiment") and "owner:   shared" in shown
    assert "source:" not in shown
    compared = remote("models", "compare", f"{SENT}@v1", f"{SENT}@v1")
    assert "has recorded metrics" in compared.stderr
    assert remote("workers", "--json").exit_code == 0

    # Fine-tunes (queued on the train queue, which no test worker reads) and their runs.
    ft = remote("finetune", "submit", "--kind", "sentiment", "--base", SENT, "--train",
                files["train"], "--register-as", f"clitest-{uuid.uuid4().hex[:6]}")
    run_id = ft.stdout.strip()
    assert "queued fine-tune of" in ft.stderr and "on 18 rows (eval 2)" in ft.stderr
    run = session.get(TrainingRun, run_id)
    assert run is not None and run.tenant_id == tenant_id
    assert run_id in remote("runs", "list").stdout
    assert json.loads(remote("runs", "show", run_id).stdout)["events"][0]["kind"] == "queued"
    assert remote("runs", "metrics", run_id, "--format", "jsonl").stdout == ""
    plotted = remote("runs", "plot", run_id, "-o", files["png"], ok=False)
    assert plotted.exit_code == 1 and f"run {run_id} has no metrics" in plotted.output
    assert remote("runs", "cancel", run_id).stdout.split() == [run_id, "cancelled"]

    # Schedules: the spec's local file is uploaded, the schedule is the tenant's.
    name = f"clitest-{uuid.uuid4().hex[:6]}"
    added = remote("schedule", "add", name, "--cron", "0 2 * * *", "--job", files["jobspec"])
    assert f"schedule {name}: job at '0 2 * * *' UTC; next " in added.stdout
    stored = session.scalars(select(Schedule).where(Schedule.name == name)).one()
    assert stored.tenant_id == tenant_id and "input_file_id" in stored.spec
    assert "updated; next" in remote("schedule", "edit", name, "--cron", "0 3 * * *").stdout
    assert name in remote("schedule", "list").stdout
    assert json.loads(remote("schedule", "show", name).stdout)["cron"] == "0 3 * * *"
    assert remote("schedule", "pause", name).stdout.strip() == f"schedule {name} paused"
    assert "paused" in remote("schedule", "list").stdout
    assert "resumed; next" in remote("schedule", "resume", name).stdout
    fired = remote("schedule", "run-now", name)
    fired_job = session.get(Job, fired.stdout.strip())
    assert fired_job is not None and fired_job.tenant_id == tenant_id
    remote("jobs", "cancel", fired_job.id)
    history = remote("schedule", "history", name, "--json").stdout.splitlines()
    assert json.loads(history[0])["job_id"] == fired_job.id
    assert remote("schedule", "remove", name).stdout.strip() == f"schedule {name} removed"
    gone = remote("schedule", "show", name, ok=False)
    assert gone.exit_code == 1 and "404" in gone.output

    # An operator command refuses the same way with a live API as with a closed port.
    refused = remote("keys", "list", ok=False)
    assert refused.exit_code == 1 and "does not run through the API" in refused.output


def test_finetune_wait_and_a_finetune_schedule_through_the_api(
        sent_model: str, api_server: str, tenant: tuple[str, str], migrated: Settings,
        files: dict[str, str], tmp_path: Path) -> None:
    key, tenant_id = tenant
    cancelled: list[str] = []

    def cancel_when_queued() -> None:
        # No worker reads the train queue: stop the run as soon as the API has stored it.
        from nightowl.finetune import service as finetunes

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cancelled:
            with session_scope(migrated) as s:
                run = s.scalars(select(TrainingRun).where(
                    TrainingRun.tenant_id == tenant_id)).first()
                if run is not None:
                    finetunes.cancel_run(s, run.id)
                    cancelled.append(run.id)
            time.sleep(0.2)

    canceller = threading.Thread(target=cancel_when_queued)
    canceller.start()
    waited = _invoke("--api", api_server, "--key", key, "finetune", "submit", "--kind",
                     "sentiment", "--base", SENT, "--train", files["train"], "--register-as",
                     f"clitest-{uuid.uuid4().hex[:6]}", "--wait")
    canceller.join()
    _no_traceback(waited)
    assert cancelled and waited.exit_code == 1, waited.output
    assert waited.stdout.strip() == cancelled[0]
    assert f"{cancelled[0]} cancelled" in waited.stderr

    spec = tmp_path / "ft.json"
    spec.write_text(json.dumps({"kind": "sentiment", "base": SENT,
                                "train": {"file": files["train"]}, "eval": {"split": 0.2}}))
    name = f"clitest-{uuid.uuid4().hex[:6]}"
    added = _invoke("--api", api_server, "--key", key, "schedule", "add", name, "--cron",
                    "0 2 * * *", "--finetune", str(spec), "--paused")
    assert added.exit_code == 0, added.output
    with session_scope(migrated) as s:
        stored = s.scalars(select(Schedule).where(Schedule.name == name)).one()
        assert stored.tenant_id == tenant_id and not stored.enabled
        assert set(stored.spec["train"]) == {"file_id"}  # uploaded, no server path


def test_show_prints_the_same_fields_locally_and_through_the_api(
        sent_model: str, api_server: str, tenant: tuple[str, str], migrated: Settings,
        files: dict[str, str]) -> None:
    """jobs, runs and schedule show print one view of the resource whichever backend answers;
    a model's versions differ only in what the API never shows (the server's paths)."""
    from nightowl.cli.local_backend import LocalBackend
    from nightowl.cli.remote_backend import RemoteBackend
    from nightowl.finetune import service as finetunes

    key, _ = tenant

    def both(*args: str) -> tuple[dict[str, Any], dict[str, Any]]:
        local, remote = _invoke(*args), _invoke("--api", api_server, "--key", key, *args)
        for result in (local, remote):
            _no_traceback(result)
            assert result.exit_code == 0, (args, result.output)
        return json.loads(local.stdout), json.loads(remote.stdout)

    def same(local: dict[str, Any], remote: dict[str, Any]) -> None:
        assert sorted(local) == sorted(remote)
        for k in local:
            assert local[k] == remote[k], k

    api = ("--api", api_server, "--key", key)
    job_id = _invoke(*api, "submit", "sentiment", files["in"], "--model", SENT, "--queue",
                     "gpu", "--priority", "7").stdout.strip()
    local, remote = both("jobs", "show", job_id)
    same(local, remote)
    assert local["priority"] == 7 and local["model_version"] == f"{SENT}@v1"
    _invoke(*api, "jobs", "cancel", job_id)

    run_id = _invoke(*api, "finetune", "submit", "--kind", "sentiment", "--base", SENT,
                     "--train", files["train"]).stdout.strip()
    with session_scope(migrated) as s:
        finetunes.cancel_run(s, run_id)  # no worker reads the train queue
    local, remote = both("runs", "show", run_id)
    same(local, remote)
    assert local["status"] == "cancelled" and local["events"][0]["kind"] == "queued"

    name = f"clitest-{uuid.uuid4().hex[:6]}"
    assert _invoke(*api, "schedule", "add", name, "--cron", "0 2 * * *", "--job",
                   files["jobspec"]).exit_code == 0
    local, remote = both("schedule", "show", name)
    same(local, remote)
    assert local["cron"] == "0 2 * * *" and "input_file_id" in local["spec"]
    _invoke(*api, "schedule", "remove", name)

    operator_only = {"source", "revision", "sha256"}
    (mine,) = LocalBackend().list_versions(SENT)
    (theirs,) = RemoteBackend(api_server, key).list_versions(SENT)
    # /v1/models gives OpenAI's `created`, in whole seconds (what `models show` prints).
    assert mine.created_at.replace(microsecond=0) == theirs.created_at
    theirs.created_at = mine.created_at
    local, remote = mine.model_dump(mode="json"), theirs.model_dump(mode="json")
    assert sorted(local) == sorted(remote) and local["source"] and remote["source"] is None
    same({k: v for k, v in local.items() if k not in operator_only},
         {k: v for k, v in remote.items() if k not in operator_only})


def test_a_csv_submits_the_same_through_the_api_as_locally(
        sent_model: str, api_server: str, tenant: tuple[str, str], session: Session,
        tmp_path: Path) -> None:
    key, _ = tenant
    f = tmp_path / "reviews.csv"
    # A quoted comma, a row without its text and one with an empty id (both invalid, kept as
    # failed items with --on-invalid skip).
    f.write_text('id,review\nr1,"great, really great"\nr2\nr3,awful\n,meh\n')
    common = ["sentiment", str(f), "--model", SENT, "--queue", "gpu", "--on-invalid", "skip"]

    def items(job_id: str) -> list[tuple[Any, ...]]:
        session.expire_all()
        rows = session.scalars(select(JobItem).where(JobItem.job_id == job_id)
                               .order_by(JobItem.idx)).all()
        return [(i.line_no, i.custom_id, i.input, i.status, i.error_message) for i in rows]

    local = _invoke("submit", *common, "--column", "review", "--id-column", "id")
    remote = _invoke("--api", api_server, "--key", key, "submit", *common,
                     "--column", "review", "--id-column", "id")
    for result in (local, remote):
        _no_traceback(result)
        assert result.exit_code == 0, result.output
        assert "queued 4 items (2 invalid)" in result.stderr
    local_items, remote_items = items(local.stdout.strip()), items(remote.stdout.strip())
    assert remote_items == local_items
    assert [(line, cid, inp, error) for line, cid, inp, _, error in remote_items] == [
        (2, "r1", {"text": "great, really great"}, None),
        (3, "r2", {}, "missing field 'text'"),
        (4, "r3", {"text": "awful"}, None),
        (5, "5", {}, "custom_id must be a non-empty string of at most 200 characters, got ''")]
    for job_id in (local.stdout.strip(), remote.stdout.strip()):
        _invoke("jobs", "cancel", job_id)

    # A wrong column reads the same from both, and nothing is queued.
    before = _counts(session)
    answers = [_invoke(*prefix, "submit", *common, "--column", "body")
               for prefix in ([], ["--api", api_server, "--key", key])]
    for result in answers:
        _no_traceback(result)
        assert result.exit_code == 1, result.output
        assert "CSV column(s) 'body' not found; the header has 'id', 'review'" in result.output
    assert _counts(session) == before


def test_an_uploaded_csv_is_read_as_csv_and_csv_options_need_a_file(
        sent_model: str, api_server: str, tenant: tuple[str, str], session: Session) -> None:
    key, _ = tenant
    auth = {"Authorization": f"Bearer {key}"}
    job = {"kind": "sentiment", "model": SENT, "queue": "gpu"}
    # Uploaded under a .csv name: read as CSV from its `text` column, ids from line numbers.
    up = httpx.post(f"{api_server}/v1/files", headers=auth, data={"purpose": "jobs"},
                    files={"file": ("reviews.csv", b'text\n"fine, thanks"\nbad\n')})
    assert up.status_code == 200, up.text
    r = httpx.post(f"{api_server}/v1/jobs", headers=auth, json={**job, "file_id": up.json()["id"]})
    assert r.status_code == 201, r.text
    assert (r.json()["total"], r.json()["failed"]) == (2, 0)
    items = session.scalars(select(JobItem).where(JobItem.job_id == r.json()["id"])
                            .order_by(JobItem.idx)).all()
    assert [(i.custom_id, i.input) for i in items] == [("2", {"text": "fine, thanks"}),
                                                      ("3", {"text": "bad"})]
    httpx.post(f"{api_server}/v1/jobs/{r.json()['id']}/cancel", headers=auth)

    r = httpx.post(f"{api_server}/v1/jobs", headers=auth,
                   json={**job, "items": [{"text": "good"}], "column": "review"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "column"
    assert "inline `items` are objects already" in error["message"]


def test_models_show_through_the_api_has_the_lineage_and_metrics_but_no_path(
        sent_model: str, api_server: str, tenant: tuple[str, str], migrated: Settings) -> None:
    from nightowl.registry import versions as registry

    key, tenant_id = tenant
    name = f"clitest-ft-{uuid.uuid4().hex[:6]}"
    source = migrated.models_path / "clitest" / name
    source.mkdir(parents=True)
    with session_scope(migrated) as s:
        base = registry.resolve(s, f"{SENT}@v1")
        registry.register(s, name=name, kind=TaskKind.SENTIMENT, source=str(source),
                          tenant_id=tenant_id, sha256="ab" * 32, base_version_id=base.id,
                          training_run_id="run_clitest", metrics={"eval/accuracy": 0.875})

    local = _invoke("models", "show", name)
    remote = _invoke("--api", api_server, "--key", key, "models", "show", name)
    for result in (local, remote):
        _no_traceback(result)
        assert result.exit_code == 0, result.output
    assert f"lineage: fine-tuned from {SENT}@v1 by run run_clitest" in remote.stdout
    assert "metrics: eval/accuracy 0.875" in remote.stdout
    # The same lines, less what only the operator sees: the server path and the checksum.
    operator_only = ("  source:", "  sha256:")
    assert remote.stdout.splitlines() == [
        line for line in local.stdout.splitlines() if not line.startswith(operator_only)]
    assert str(source) in local.stdout and str(source) not in remote.stdout
    listed = _invoke("--api", api_server, "--key", key, "models", "list", "--name", name)
    assert listed.exit_code == 0 and "accuracy" in listed.stdout, listed.output


def test_standard_input_through_a_real_pipe_is_uploaded_whole(
        sent_model: str, api_server: str, tenant: tuple[str, str], session: Session) -> None:
    """`... | nightowl --api URL submit KIND -`: a pipe has no length to declare up front."""
    key, tenant_id = tenant
    lines = b"".join(json.dumps({"custom_id": f"p{i}", "text": "word " * 10}).encode() + b"\n"
                     for i in range(3000))  # more than a pipe's buffer holds
    done = subprocess.run(
        [sys.executable, "-m", "nightowl", "--api", api_server, "--key", key, "submit",
         "sentiment", "-", "--model", SENT, "--queue", "gpu"],
        input=lines, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"queued 3000 items (0 invalid)" in done.stderr
    job = session.get(Job, done.stdout.decode().strip())
    assert job is not None and job.tenant_id == tenant_id and job.total_items == 3000
    assert _invoke("jobs", "cancel", job.id).exit_code == 0


def test_a_runs_metric_series_is_filtered_by_key_over_http(
        sent_model: str, api_server: str, tenant: tuple[str, str], migrated: Settings,
        files: dict[str, str]) -> None:
    """`?key=train/loss` is the metric's name, not an API key: the guard that keeps keys out
    of the access log must leave it, or `finetune submit --wait` shows tokens/s as the loss."""
    from nightowl.cli.remote_backend import RemoteBackend
    from nightowl.platform.orm import TrainingMetric

    key, _ = tenant
    ft = _invoke("--api", api_server, "--key", key, "finetune", "submit", "--kind", "sentiment",
                 "--base", SENT, "--train", files["train"], "--register-as",
                 f"clitest-{uuid.uuid4().hex[:6]}")
    assert ft.exit_code == 0, ft.output
    run_id = ft.stdout.strip()
    with session_scope(migrated) as s:
        s.add_all([TrainingMetric(run_id=run_id, step=1, key=k, value=v) for k, v in
                   (("train/loss", 0.5), ("train/tokens_per_s", 3000.0), ("lr", 5e-5))])
    r = httpx.get(f"{api_server}/v1/finetunes/{run_id}/metrics",
                  params={"key": "train/loss"}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert [(m["step"], m["key"], m["value"]) for m in r.json()] == [(1, "train/loss", 0.5)]
    assert RemoteBackend(api_server, key).run_progress(run_id) == ("queued", (1, 0.5))
    _invoke("--api", api_server, "--key", key, "runs", "cancel", run_id)
