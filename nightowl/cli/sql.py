"""`nightowl sql "SELECT ..."`: analysts' SQL on a read-only connection, streamed out."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import local_only
from nightowl.cli.common import settings
from nightowl.common.errors import NightowlError
from nightowl.platform.readonly import run_readonly


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return value


@local_only("runs SQL on the database this host is configured for; the HTTP API has no SQL "
            "route (`nightowl results query` works through it)")
@click.command()
@click.argument("statement")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table",
              show_default=True, help="Output format.")
@click.option("--max-rows", type=click.IntRange(min=1),
              help="Stop after this many rows (default: all; a table shows 1000).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds before the query is stopped.")
def sql(statement: str, fmt: str, max_rows: int | None, timeout: float) -> None:
    """Run one read-only SQL STATEMENT and print its rows; writes are refused.

    \b
    Views for analysts (see docs/sql.md): v_results, v_label_daily, v_job_throughput.
      nightowl sql "SELECT label, SUM(items) FROM v_label_daily GROUP BY label"
    """
    cap = max_rows or (1000 if fmt == "table" else None)
    try:
        with run_readonly(settings(), statement, timeout_s=timeout) as result:
            rows = (tuple(_plain(v) for v in row) for row in result.rows)
            shown = 0
            if fmt == "table":
                table = Table(*result.columns)
                for row in rows:
                    if shown == cap:
                        break
                    table.add_row(*("" if v is None else str(v) for v in row))
                    shown += 1
                if result.columns:
                    Console(width=200).print(table)
                click.echo(f"{shown} rows", err=True)
                return
            writer = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None
            if writer is not None:
                writer.writerow(result.columns)
            for row in rows:
                if shown == cap:
                    break
                if writer is not None:
                    writer.writerow(row)
                else:
                    click.echo(json.dumps(dict(zip(result.columns, row, strict=False)),
                                          default=str, ensure_ascii=False))
                shown += 1
    except NightowlError as e:
        raise click.ClickException(str(e)) from e
