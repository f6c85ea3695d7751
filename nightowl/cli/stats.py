"""`nightowl jobs stats` and `nightowl models compare`: numbers computed in SQL, printed."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import current


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@click.command("stats")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as one JSON object.")
def stats(job_id: str, as_json: bool) -> None:
    """Throughput, latency percentiles, tokens, errors and device time of JOB_ID."""
    s = current().job_stats(job_id)
    if as_json:
        click.echo(json.dumps(s, indent=2, default=str))
        return
    items, chunks, tokens = s["items"], s["chunks"], s["tokens"]
    console = Console(width=160)
    console.print(f"[bold]{s['job_id']}[/] {s['kind']} on {s['model']}: {s['status']}")
    console.print(
        f"items     {items['succeeded']} succeeded, {items['failed']} failed, "
        f"{items['cancelled']} cancelled, {items['expired']} expired, {items['pending']} pending"
        f" of {items['total']}")
    console.print(f"rate      {_fmt(s['items_per_second'])} items/s over "
                  f"{_fmt(s['wall_seconds'])} s; device {_fmt(s['device_seconds'])} s")
    console.print(f"tokens    {tokens['in']} in, {tokens['out']} out "
                  f"({_fmt(tokens['out_per_second'])} out/s)")
    console.print(f"chunks    {chunks['done']}/{chunks['total']} done, "
                  f"{_fmt(chunks['micro_batches'])} micro-batches of "
                  f"{_fmt(chunks['mean_micro_batch_size'])} items on average; "
                  f"{s['workers']} worker(s) on {', '.join(s['devices']) or '-'}")
    table = Table("latency (s)", "p50", "p90", "p99", "max")
    for level in ("chunk", "item"):
        lat = s["latency_seconds"][level]
        table.add_row(level, *(_fmt(lat[k]) for k in ("p50", "p90", "p99", "max")))
    console.print(table)
    if s["errors"]:
        errors = Table("error code", "items")
        for code, n in s["errors"].items():
            errors.add_row(code, str(n))
        console.print(errors)


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(a: str, b: str, as_json: bool) -> None:
    """Eval metrics of model versions A and B side by side (NAME@vN or NAME@ALIAS)."""
    c = current().compare_models(a, b)
    if as_json:
        click.echo(json.dumps(c, indent=2))
        return
    if not c["metrics"]:
        click.echo(f"neither {c['a']} nor {c['b']} has recorded metrics", err=True)
        return
    table = Table("metric", c["a"], c["b"], "b - a")
    for row in c["metrics"]:
        delta = row["delta"]
        table.add_row(row["metric"], _fmt(row["a"]), _fmt(row["b"]),
                      "-" if delta is None else f"{delta:+.4g}")
    Console(width=160).print(table)
    if c.get("note"):
        click.echo(c["note"], err=True)
