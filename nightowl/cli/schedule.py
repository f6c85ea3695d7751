"""`nightowl schedule`: recurring jobs and fine-tunes, stored in SQL and fired by beat."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import current
from nightowl.common.enums import Catchup, ScheduleTarget
from nightowl.scheduling.cron import check_timezone
from nightowl.scheduling.views import ScheduleEdit

SPEC_HELP = "JSON file with the template; relative paths in it are read from its folder."


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise click.BadParameter(f"{path} is not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise click.BadParameter(f"{path} must hold a JSON object")
    base = path.resolve().parent
    # Beat and workers run elsewhere: make the spec's files absolute before they are stored.
    refs = [spec, spec.get("train"), spec.get("eval")]
    for ref, key in zip(refs, ("input_file", "file", "file"), strict=True):
        if isinstance(ref, dict) and isinstance(ref.get(key), str):
            ref[key] = str(base / os.path.expanduser(ref[key]))
    return spec


def _target(finetune_spec: Path | None, job_spec: Path | None,
            required: bool) -> tuple[str, dict[str, Any]] | None:
    if finetune_spec and job_spec:
        raise click.UsageError("give --finetune or --job, not both")
    if finetune_spec:
        return "finetune", load_spec(finetune_spec)
    if job_spec:
        return "job", load_spec(job_spec)
    if required:
        raise click.UsageError("give --finetune SPEC.json or --job SPEC.json")
    return None


def _when(moment: datetime | str | None, tz: str) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    try:
        local = moment.astimezone(check_timezone(tz))
    except Exception:
        local = moment
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


_SPEC_OPTS = [
    click.option("--finetune", "finetune_spec", type=click.Path(path_type=Path, dir_okay=False),
                 help=f"Fine-tune template. {SPEC_HELP}"),
    click.option("--job", "job_spec", type=click.Path(path_type=Path, dir_okay=False),
                 help=f"Bulk job template. {SPEC_HELP}"),
]


@click.group()
def schedule() -> None:
    """Recurring jobs and fine-tunes: edit, pause or resume them while beat runs."""


@schedule.command()
@click.argument("name")
@click.option("--cron", required=True,
              help="5 fields (minute hour dom month dow), or 6 with seconds first.")
@click.option("--tz", "timezone", default="UTC", show_default=True,
              help="IANA timezone the cron is read in, e.g. Europe/Berlin.")
@_SPEC_OPTS[0]
@_SPEC_OPTS[1]
@click.option("--catchup", type=click.Choice([c.value for c in Catchup]), default="once",
              show_default=True,
              help="Slots missed while beat was down: fire once, fire all, or none.")
@click.option("--paused", is_flag=True, help="Create it paused.")
def add(name: str, cron: str, timezone: str, finetune_spec: Path | None,
        job_spec: Path | None, catchup: str, paused: bool) -> None:
    """Create schedule NAME; the spec is checked now (model, files, rows)."""
    found = _target(finetune_spec, job_spec, required=True)
    assert found is not None
    target, spec = found
    row = current().add_schedule(name, ScheduleEdit(
        cron=cron, timezone=timezone, target=ScheduleTarget(target), spec=spec,
        catchup=Catchup(catchup), enabled=not paused)).model_dump(mode="json")
    click.echo(f"schedule {row['name']}: {target} at '{row['cron']}' {row['timezone']}; "
               f"next {_when(row['next_fire'], row['timezone'])}"
               + (" (paused)" if paused else ""))


@schedule.command()
@click.argument("name")
@click.option("--cron", help="New cron expression.")
@click.option("--tz", "timezone", help="New timezone.")
@_SPEC_OPTS[0]
@_SPEC_OPTS[1]
@click.option("--catchup", type=click.Choice([c.value for c in Catchup]),
              help="New catch-up policy.")
def edit(name: str, cron: str | None, timezone: str | None, finetune_spec: Path | None,
         job_spec: Path | None, catchup: str | None) -> None:
    """Change NAME in place; a running beat picks it up within seconds."""
    found = _target(finetune_spec, job_spec, required=False)
    row = current().edit_schedule(name, ScheduleEdit(
        cron=cron, timezone=timezone, target=ScheduleTarget(found[0]) if found else None,
        spec=found[1] if found else None,
        catchup=Catchup(catchup) if catchup else None)).model_dump(mode="json")
    click.echo(f"schedule {row['name']} updated; next "
               f"{_when(row['next_fire'], row['timezone'])}")


@schedule.command("list")
def list_() -> None:
    """Every schedule with its next fire time and its last firing."""
    rows = [row.model_dump(mode="json") for row in current().list_schedules()]
    table = Table("name", "target", "cron", "timezone", "state", "next fire", "last firing")
    for row in rows:
        last, tz = row["last_firing"], row["timezone"]
        table.add_row(
            row["name"], row["target"], row["cron"], tz,
            "enabled" if row["enabled"] else "paused",
            _when(row["next_fire"], tz) if row["enabled"] else "-",
            f"{_when(last['scheduled_for'], tz)} {last['status']}" if last else "-")
    if not rows:
        click.echo("no schedules; add one with `nightowl schedule add`")
        return
    Console(width=200).print(table)


@schedule.command()
@click.argument("name")
def show(name: str) -> None:
    """NAME as JSON: cron, timezone, template, state, next fire, last firing."""
    click.echo(json.dumps(current().get_schedule(name).model_dump(mode="json"), indent=2))


@schedule.command()
@click.argument("name")
def pause(name: str) -> None:
    """Stop firing NAME (beat notices within seconds)."""
    current().set_schedule_enabled(name, False)
    click.echo(f"schedule {name} paused")


@schedule.command()
@click.argument("name")
def resume(name: str) -> None:
    """Fire NAME again from its next slot (slots inside the pause are not made up)."""
    row = current().set_schedule_enabled(name, True).model_dump(mode="json")
    click.echo(f"schedule {name} resumed; next {_when(row['next_fire'], row['timezone'])}")


@schedule.command()
@click.argument("name")
def remove(name: str) -> None:
    """Delete NAME and its firing history (jobs and runs it created stay)."""
    current().remove_schedule(name)
    click.echo(f"schedule {name} removed")


@schedule.command("run-now")
@click.argument("name")
def run_now(name: str) -> None:
    """Fire NAME once now, outside its cron (works while paused); prints the job or run id."""
    view = current().run_schedule(name).model_dump(mode="json")
    detail = view["outcome"].get("error") or view["outcome"].get("reason") or ""
    click.echo(f"firing {view['id']} {view['status']}" + (f": {detail}" if detail else ""),
               err=True)
    if view["status"] == "failed":
        raise click.ClickException(f"schedule {name} could not fire: {detail}")
    click.echo(view["training_run_id"] or view["job_id"] or "")


def _verdict(view: dict[str, Any]) -> str:
    promo = view.get("promotion")
    if promo:
        return ("promoted " if promo.get("promoted") else "kept ") + (
            f"{promo.get('candidate_version')}: {promo.get('reason')}")
    outcome = view.get("outcome") or {}
    return str(outcome.get("error") or outcome.get("reason") or outcome.get("version") or "")


@schedule.command()
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many firings, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per firing.")
def history(name: str, limit: int, as_json: bool) -> None:
    """Each firing of NAME: its job or run, how it ended, and the promotion decision."""
    tz, found = current().schedule_history(name, limit)
    views = [v.model_dump(mode="json") for v in found]
    if as_json:
        for view in views:
            click.echo(json.dumps(view))
        return
    table = Table("scheduled for", "fired by", "firing", "job / run", "run status", "decision")
    for v in views:
        table.add_row(_when(datetime.fromisoformat(v["scheduled_for"]), tz), v["fired_by"] or "",
                      v["status"], v["training_run_id"] or v["job_id"] or "",
                      v["run_status"] or "", _verdict(v))
    Console(width=200).print(table)
