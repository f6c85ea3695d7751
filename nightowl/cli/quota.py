"""`nightowl quota`: the operator's per-tenant limits, and how much of each a tenant uses."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import local_only
from nightowl.cli.common import db_session
from nightowl.jobs import quotas


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
def set_(tenant: str, max_queued_items: int | None, max_queued_tokens: int | None,
         max_running_jobs: int | None, max_stored_bytes: int | None) -> None:
    """Set TENANT's limits (by name or id); options left out keep their value."""
    if (max_queued_items is None and max_queued_tokens is None and max_running_jobs is None
            and max_stored_bytes is None):
        raise click.UsageError(
            "give at least one of --max-queued-items, --max-queued-tokens, --max-running-jobs, "
            "--max-stored-bytes")
    with db_session() as session:
        row = quotas.set_quota(session, tenant, max_queued_items=max_queued_items,
                               max_queued_tokens=max_queued_tokens,
                               max_running_jobs=max_running_jobs,
                               max_stored_bytes=max_stored_bytes)
        click.echo(f"tenant {tenant}: max_queued_items={_shown(row.max_queued_items)} "
                   f"max_queued_tokens={_shown(row.max_queued_tokens)} "
                   f"max_running_jobs={_shown(row.max_running_jobs)} "
                   f"max_stored_bytes={_shown(row.max_stored_bytes)}")


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
                  "max stored bytes")
    for t, q, used in rows:
        table.add_row(t.name, f"{used.queued_items:,}",
                      _shown(q.max_queued_items if q else None), f"{used.queued_tokens:,}",
                      _shown(q.max_queued_tokens if q else None), str(used.running_jobs),
                      _shown(q.max_running_jobs if q else None), f"{used.stored_bytes:,}",
                      _shown(q.max_stored_bytes if q else None))
    Console(width=160).print(table)


def _shown(value: int | None) -> str:
    return "none" if value is None else f"{value:,}"


local_only("manages tenants' limits on the database as the operator; the HTTP API has no route "
           "for quotas")(quota)
