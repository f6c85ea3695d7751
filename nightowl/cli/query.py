"""`nightowl results query`: results across jobs, filtered, streamed as a table, JSONL, CSV or
Parquet."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import current
from nightowl.common.enums import ItemStatus, TaskKind
from nightowl.common.errors import NightowlError
from nightowl.common.timespec import HELP as WHEN_HELP
from nightowl.common.timespec import local_tz, parse_when
from nightowl.query import export
from nightowl.query.query import ResultFilter

FORMATS = ["table", "jsonl", "csv", "parquet"]
TABLE_ROWS = 50


def _when(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return parse_when(value, tz=local_tz())
    except NightowlError as e:
        raise click.BadParameter(str(e), param_hint=name) from e


def _format_for(fmt: str | None, output: Path | None) -> str:
    if fmt:
        return fmt
    suffix = output.suffix.lower().lstrip(".") if output else ""
    return {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl", "json": "jsonl",
            "ndjson": "jsonl"}.get(suffix, "table" if output is None else "jsonl")


def _summary(row: dict[str, Any]) -> str:
    out = row.get("output")
    if isinstance(out, dict) and "label" in out:
        score = out.get("score")
        return f"{out['label']} {score:.3f}" if isinstance(score, float) else str(out["label"])
    if isinstance(out, dict):
        text = out.get("text") or out.get("translation") or out.get("generated_text")
        if isinstance(text, str):
            return text[:60]
    error = row.get("error") or {}
    return str(error.get("code") or "")


def _table(rows: Iterable[dict[str, Any]], capped: bool) -> None:
    table = Table("finished", "job", "custom_id", "model", "status", "output", "text")
    shown = 0
    for row in rows:
        text = export.flat(row)["text"] or ""
        table.add_row((row["finished_at"] or "")[:19], row["job_id"], row["custom_id"],
                      row["model"], row["status"], _summary(row),
                      text if len(text) <= 70 else text[:67] + "...")
        shown += 1
    Console(width=200).print(table)
    note = f"{shown} rows"
    if capped and shown == TABLE_ROWS:
        note += f" (the first {TABLE_ROWS}; pass --limit N, or --format jsonl/csv for all)"
    click.echo(note, err=True)


@click.command("query")
@click.option("--job", "job_id", help="Only this job's results.")
@click.option("--kind", type=click.Choice([k.value for k in TaskKind]), help="Only this kind.")
@click.option("--model", help="NAME (every version), NAME@ALIAS (the version the alias points "
              "to now) or NAME@vN.")
@click.option("--status", type=click.Choice([s.value for s in ItemStatus]),
              help="Only items with this status.")
@click.option("--since", help=f"Finished at or after: {WHEN_HELP}. Local time unless an "
              "offset is given.")
@click.option("--until", help="Finished before; same forms as --since.")
@click.option("--label", help="output.label equals this (case-insensitive), e.g. negative.")
@click.option("--contains", help="The input text contains this (case-insensitive).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format (default: from -o's suffix, else a table).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE instead of stdout (needed for parquet).")
def query(job_id: str | None, kind: str | None, model: str | None, status: str | None,
          since: str | None, until: str | None, label: str | None, contains: str | None,
          limit: int | None, fmt: str | None, output: Path | None) -> None:
    """Results across jobs in the order they were submitted (job by job, each in input
    order), streamed page by page; --since/--until filter on the finish time.

    \b
    Every negative result of sentiment@prod from last night that mentions a refund, as CSV:
      nightowl results query --model sentiment@prod --label negative --contains refund \\
          --since "yesterday 18:00" --until "today 08:00" -o refunds.csv
    """
    fmt = _format_for(fmt, output)
    if fmt == "parquet" and output is None:
        raise click.BadParameter("parquet is binary: pass -o FILE.parquet", param_hint="--format")
    check_output_dir(output)
    f = ResultFilter(job_id=job_id, kind=TaskKind(kind) if kind else None, model=model,
                     status=ItemStatus(status) if status else None,
                     since=_when(since, "--since"), until=_when(until, "--until"),
                     label=label, contains=contains)
    capped = fmt == "table" and limit is None
    cap = TABLE_ROWS if capped else limit
    source = current().query_results(f, limit=cap)
    counted = [0]

    def rows() -> Iterator[dict[str, Any]]:
        for row in source:
            if counted[0] == cap:
                return
            counted[0] += 1
            yield row

    try:
        if fmt == "table":
            _table(rows(), capped)
            return
        if output is None:
            lines = export.csv_lines(rows()) if fmt == "csv" else export.jsonl_lines(rows())
            sys.stdout.writelines(lines)
            return
        write_file(rows(), fmt, output)
    except NightowlError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {counted[0]} rows to {output}", err=True)


def check_output_dir(output: Path | None) -> None:
    """Refuse an -o whose folder is missing before any work, not with a traceback at the end."""
    if output is None:
        return
    folder = output.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise click.BadParameter(f"{str(folder)!r} {what}: create it first (mkdir -p "
                                 f"{folder}) or write elsewhere", param_hint="-o/--output")


def write_file(rows: Iterator[dict[str, Any]], fmt: str, output: Path) -> None:
    """Write beside the target and rename at the end: a failed export leaves no half file."""
    part = output.with_name(output.name + ".part")
    try:
        if fmt == "parquet":
            export.write_parquet(rows, part)
        else:
            lines = export.csv_lines(rows) if fmt == "csv" else export.jsonl_lines(rows)
            with part.open("w", encoding="utf-8", newline="") as fh:
                fh.writelines(lines)
        part.replace(output)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
