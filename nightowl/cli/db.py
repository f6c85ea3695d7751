"""`nightowl db`: schema migrations."""

from __future__ import annotations

import click

from nightowl import migrate
from nightowl.cli.common import settings


@click.group()
def db() -> None:
    """Create or migrate the database schema."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
def upgrade(revision: str) -> None:
    """Migrate the database up (creates every table on an empty database)."""
    s = settings()
    migrate.upgrade(s, revision)
    click.echo(f"database at revision {migrate.current_revision(s)}")


@db.command()
@click.option("--revision", default="-1", show_default=True,
              help="Target revision: -1 for one step, base for an empty database.")
def downgrade(revision: str) -> None:
    """Migrate the database down."""
    s = settings()
    migrate.downgrade(s, revision)
    click.echo(f"database at revision {migrate.current_revision(s) or 'base'}")


@db.command()
def current() -> None:
    """Print the database's revision."""
    click.echo(migrate.current_revision(settings()) or "base (empty)")
