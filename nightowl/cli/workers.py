"""`nightowl workers`: the fleet as SQL sees it, from the workers' own heartbeats."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import current
from nightowl.common.enums import WorkerStatus


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per worker.")
@click.option("--alive", "only_alive", is_flag=True, help="Only live workers.")
def workers(as_json: bool, only_alive: bool) -> None:
    """Live and recently dead workers: host, queues, device, current job, items/s, last seen."""
    rows = [w.model_dump(mode="json") for w in current().list_workers()]
    if only_alive:
        rows = [r for r in rows if r["status"] == WorkerStatus.ALIVE.value]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no workers have reported; start one with `nightowl worker`")
        return
    table = Table("worker", "host", "status", "queues", "device", "current job", "items/s",
                  "items", "last seen")
    for r in rows:
        doing = ", ".join(r["current_jobs"] + r["current_runs"]) or "-"
        table.add_row(r["name"], r["host"], r["status"], r["queues"], r["device"], doing,
                      f"{r['items_per_s']:.1f}", str(r["items_done"]),
                      f"{r['last_seen_s_ago']:.0f}s ago")
    Console(width=200).print(table)
