"""`nightowl results`: a job's rows out, in input order, streamed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from nightowl.cli import remote
from nightowl.cli.common import db_session
from nightowl.results import csv_lines, iter_rows, jsonl_lines

Row = tuple[int, dict[str, Any]]


@click.group()
def results() -> None:
    """Export results."""


@results.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE (.jsonl or .csv); stdout (JSONL) when omitted.")
@click.option("--errors", is_flag=True, help="Only failed, cancelled and expired items.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Output format (default: from the file name, else jsonl).")
def export(job_id: str, output: Path | None, errors: bool, fmt: str | None) -> None:
    """Stream JOB_ID's rows in input order, one JSON object per line."""
    fmt = fmt or ("csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl")
    counted = [0]

    def counting(rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            counted[0] += 1
            yield row

    api = remote.client()
    with ExitStack() as stack:
        rows = counting(api.rows(job_id, errors=errors) if api is not None else iter_rows(
            stack.enter_context(db_session()), job_id, errors_only=errors))
        lines = csv_lines(rows) if fmt == "csv" else jsonl_lines(rows)
        if output is None:
            sys.stdout.writelines(lines)
            return
        with output.open("w", encoding="utf-8", newline="") as fh:
            fh.writelines(lines)
    click.echo(f"wrote {counted[0]} rows to {output}", err=True)


def _add_query() -> None:
    from nightowl.cli.query import query

    results.add_command(query)


_add_query()
