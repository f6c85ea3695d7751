"""`nightowl results`: a job's rows out, in input order, streamed; nothing half-written is
left behind when an export fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from nightowl.cli.backend import current
from nightowl.cli.query import write_file
from nightowl.query.export import csv_lines, jsonl_lines

FORMATS = ["jsonl", "csv", "parquet"]


@click.group()
def results() -> None:
    """Export a job's results; query results across jobs."""


@results.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE (.jsonl, .csv or .parquet); stdout (JSONL) when omitted.")
@click.option("--errors", is_flag=True, help="Only failed, cancelled and expired items.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format (default: from the file name, else jsonl).")
def export(job_id: str, output: Path | None, errors: bool, fmt: str | None) -> None:
    """Write JOB_ID's rows in input order: JSONL keeps every field as nested JSON; CSV and
    Parquet have the same flat columns as `results query` (text, label, score, ...)."""
    fmt = fmt or _format_for(output)
    if fmt == "parquet" and output is None:
        raise click.BadParameter("parquet is binary: pass -o FILE.parquet", param_hint="--format")
    counted = [0]
    with current().job_rows(job_id, errors=errors) as (kind, rows):

        def flat_rows() -> Iterator[dict[str, Any]]:
            for _, row in rows:
                counted[0] += 1
                yield {**row, "job_id": job_id, "kind": kind}

        if output is None:
            lines = csv_lines(flat_rows()) if fmt == "csv" else jsonl_lines(flat_rows())
            sys.stdout.writelines(lines)
            return
        write_file(flat_rows(), fmt, output)
    click.echo(f"wrote {counted[0]} rows to {output} ({fmt})", err=True)


def _format_for(output: Path | None) -> str:
    suffix = output.suffix.lower().lstrip(".") if output else ""
    return {"csv": "csv", "parquet": "parquet", "pq": "parquet"}.get(suffix, "jsonl")


def _add_query() -> None:
    from nightowl.cli.query import query

    results.add_command(query)


_add_query()
