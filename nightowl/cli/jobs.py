"""`nightowl jobs`: list, show, watch, cancel, retry, stats, purge."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from nightowl.cli.backend import current
from nightowl.common.enums import JobStatus


@click.group()
def jobs() -> None:
    """List, show, watch, cancel and retry jobs."""


def print_jobs(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from nightowl.registry.outcome import item_counts

    # The pinned version is what ran; the alias asked for may point elsewhere by now.
    table = Table("id", "kind", "model", "status", "items", "created (UTC)")
    for j in rows:
        model = j.get("model_version") or j["model"]
        if j.get("model_version") and j["model"] != j["model_version"]:
            model += f" (asked {j['model']})"
        table.add_row(j["id"], j["kind"], model, j["status"], item_counts(
            succeeded=j["succeeded"], failed=j["failed"], cancelled=j["cancelled"],
            expired=j["expired"], total=j["total"]), str(j["created_at"])[:19].replace("T", " "))
    Console(width=200).print(table)


@jobs.command("list")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many, newest first.")
def list_(status: str | None, limit: int) -> None:
    """List recent jobs, newest first."""
    print_jobs([j.model_dump(mode="json") for j in current().list_jobs(status=status, limit=limit)])


@jobs.command()
@click.argument("job_id")
def show(job_id: str) -> None:
    """Print one job as JSON."""
    click.echo(json.dumps(current().get_job(job_id).model_dump(mode="json"), indent=2))


@jobs.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
def watch(job_id: str, timeout: float | None) -> None:
    """Draw a progress bar with items/s and ETA until the job finishes."""
    final = current().watch_job(job_id, timeout=timeout)
    sys.exit(0 if final.status == JobStatus.COMPLETED else 1)


@jobs.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job: running chunks stop at the next micro-batch; finished rows are kept."""
    job = current().cancel_job(job_id)
    click.echo(f"{job.id} {job.status.value}")


@jobs.command()
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Make a child job of the failed, cancelled and expired items; prints its id last."""
    child = current().retry_job(job_id)
    click.echo(f"retrying {child.total} items of {job_id}", err=True)
    click.echo(child.id)


def _add_stats() -> None:
    from nightowl.cli.purge import purge
    from nightowl.cli.stats import stats

    jobs.add_command(stats)
    jobs.add_command(purge)


_add_stats()
