"""`nightowl quota`: the operator's per-tenant limits, and how much of each a tenant uses."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import local_only
from nightowl.cli.common import db_session
from nightowl.common.errors import InvalidInput
from nightowl.common.timespec import parse_keep
from nightowl.jobs import quotas
from nightowl.platform.retention import KEEP


class _Limit(click.ParamType[int]):
    """A positive whole number, or `none` to remove the limit."""

    name = "N|none"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text in ("none", "unlimited"):
            return quotas.UNLIMITED
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or 'none'", param, ctx)
        if number < 1:
            self.fail(f"{number} is below 1; use 'none' to remove the limit", param, ctx)
        return number


class _Retention(click.ParamType[int]):
    """A span (30d, 12h, seconds), 'forever', or 'default' (the operator's setting)."""

    name = "SPAN|forever|default"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "default":
            return quotas.UNLIMITED
        try:
            seconds = parse_keep(text, what="--retention")
        except InvalidInput as e:
            self.fail(f"{e}, or 'default' to follow NIGHTOWL_RETENTION", param, ctx)
        return KEEP if seconds is None else seconds


@click.group()
def quota() -> None:
    """Per-tenant limits: over one, a submit is refused (HTTP 429) and nothing is stored."""


@quota.command("set")
@click.argument("tenant")
@click.option("--max-queued-items", type=_Limit(),
              help="Items not yet finished, across the tenant's jobs ('none': no limit).")
@click.option("--max-queued-tokens", type=_Limit(),
              help="Input tokens not yet finished, across the tenant's jobs, counted with each "
                   "model's tokenizer at submit ('none': no limit).")
@click.option("--max-running-jobs", type=_Limit(),
              help="Jobs and fine-tunes not yet finished at once ('none': no limit).")
@click.option("--max-stored-bytes", type=_Limit(),
              help="Bytes kept for the tenant: its files, fine-tune data and model versions "
                   "('none': no limit).")
@click.option("--retention", type=_Retention(),
              help="How long the tenant's finished jobs' results and its uploads are kept "
                   "(30d, 12h, seconds; 'forever'; 'default' follows NIGHTOWL_RETENTION). "
                   "Applies to jobs and files made from now on.")
def set_(tenant: str, max_queued_items: int | None, max_queued_tokens: int | None,
         max_running_jobs: int | None, max_stored_bytes: int | None,
         retention: int | None) -> None:
    """Set TENANT's limits (by name or id); options left out keep their value."""
    if all(v is None for v in (max_queued_items, max_queued_tokens, max_running_jobs,
                               max_stored_bytes, retention)):
        raise click.UsageError(
            "give at least one of --max-queued-items, --max-queued-tokens, --max-running-jobs, "
            "--max-stored-bytes, --retention")
    with db_session() as session:
        row = quotas.set_quota(session, tenant, max_queued_items=max_queued_items,
                               max_queued_tokens=max_queued_tokens,
                               max_running_jobs=max_running_jobs,
                               max_stored_bytes=max_stored_bytes, retention_seconds=retention)
        click.echo(f"tenant {tenant}: max_queued_items={_shown(row.max_queued_items)} "
                   f"max_queued_tokens={_shown(row.max_queued_tokens)} "
                   f"max_running_jobs={_shown(row.max_running_jobs)} "
                   f"max_stored_bytes={_shown(row.max_stored_bytes)} "
                   f"retention={_retention_shown(row.retention_seconds)}")


@quota.command()
@click.argument("tenant", required=False)
def show(tenant: str | None) -> None:
    """Limits and current use: of TENANT, or of every tenant that has a limit."""
    with db_session() as session:
        rows = quotas.list_quotas(session, tenant)
    if not rows:
        click.echo("no tenant has a quota; set one with `nightowl quota set TENANT "
                   "--max-queued-items N --max-running-jobs N`")
        return
    table = Table("tenant", "queued items", "max queued items", "queued tokens",
                  "max queued tokens", "unfinished jobs", "max running jobs", "stored bytes",
                  "max stored bytes", "retention")
    for t, q, used in rows:
        table.add_row(t.name, f"{used.queued_items:,}",
                      _shown(q.max_queued_items if q else None), f"{used.queued_tokens:,}",
                      _shown(q.max_queued_tokens if q else None), str(used.running_jobs),
                      _shown(q.max_running_jobs if q else None), f"{used.stored_bytes:,}",
                      _shown(q.max_stored_bytes if q else None),
                      _retention_shown(q.retention_seconds if q else None))
    Console(width=160).print(table)


def _shown(value: int | None) -> str:
    return "none" if value is None else f"{value:,}"


def _retention_shown(value: int | None) -> str:
    if value is None:
        return "default"
    if value == KEEP:
        return "forever"
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if value % seconds == 0:
            return f"{value // seconds}{unit}"
    return f"{value}s"


local_only("manages tenants' limits on the database as the operator; the HTTP API has no route "
           "for quotas")(quota)
