"""`nightowl keys`: tenants' API keys. A key is printed once, when created; only its hash stays."""

from __future__ import annotations

from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import local_only
from nightowl.cli.common import db_session, parse_duration
from nightowl.platform import auth
from nightowl.platform.orm import utcnow


@click.group()
def keys() -> None:
    """Create, list and revoke tenants' API keys (HTTP API access)."""


@keys.command()
@click.argument("tenant")
@click.option("--expires-in", help="Expire after this long: 90m, 12h, 30d.")
@click.option("--expires-at", help="Expire at this time: ISO 8601 with an offset "
              "(2026-12-31T00:00Z).")
def create(tenant: str, expires_in: str | None, expires_at: str | None) -> None:
    """Create a key for TENANT (created if new); the key is the last line, shown only now."""
    if expires_in and expires_at:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    when: datetime | None = None
    if expires_in:
        span = parse_duration(expires_in)
        assert span is not None
        when = utcnow() + span
    elif expires_at:
        try:
            when = datetime.fromisoformat(expires_at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{expires_at!r} is not an ISO time like "
                                     "2026-12-31T00:00Z", param_hint="--expires-at") from None
        if when.tzinfo is None:
            raise click.BadParameter(f"{expires_at!r} needs an offset (Z or +01:00)",
                                     param_hint="--expires-at")
    with db_session() as session:
        row, plaintext = auth.create_key(session, tenant_name=tenant, expires_at=when)
        key_id = row.id
    click.echo(f"created {key_id} for tenant {tenant}; store the key now, it is not shown "
               "again", err=True)
    click.echo(plaintext)


@keys.command("list")
@click.option("--tenant", help="Only this tenant's keys.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def list_(tenant: str | None, include_revoked: bool) -> None:
    """List keys by tenant: id, prefix, created, last used (never the key itself)."""
    with db_session() as session:
        rows = auth.list_keys(session, tenant_name=tenant, include_revoked=include_revoked)
    if not rows:
        click.echo("no API keys; create one with `nightowl keys create TENANT`")
        return
    table = Table("id", "tenant", "prefix", "created", "last used", "expires", "revoked")
    for key, name in rows:
        table.add_row(key.id, name, key.prefix + "...", _when(key.created_at),
                      _when(key.last_used_at), _when(key.expires_at), _when(key.revoked_at))
    Console(width=160).print(table)


@keys.command()
@click.argument("key_ref")
def revoke(key_ref: str) -> None:
    """Revoke a key by its id (key_...) or its prefix; requests with it then get 401."""
    with db_session() as session:
        row = auth.revoke_key(session, key_ref)
        click.echo(f"revoked {row.id} ({row.prefix}...)")


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else "-"


local_only("manages tenants' keys on the database as the operator; the HTTP API has no route "
           "for keys")(keys)
