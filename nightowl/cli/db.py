"""`nightowl db`: schema migrations."""

from __future__ import annotations

import click

from nightowl.cli.backend import local_only
from nightowl.cli.common import settings
from nightowl.platform import migrate


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


@db.command("analyst-role")
def analyst_role() -> None:
    """Create or repair the read-only PostgreSQL role `nightowl sql` runs as (SELECT on the
    analyst views only); needs a database URL allowed to create roles."""
    from sqlalchemy.exc import DBAPIError

    from nightowl.platform.analyst_role import VIEWS, ensure_role

    s = settings()
    if not s.sqlalchemy_url.startswith("postgresql"):
        raise click.ClickException("the analyst role is a PostgreSQL role; SQLite needs none "
                                   "(its connection is read-only and refuses ATTACH)")
    try:
        name = ensure_role(s)
    except DBAPIError as e:
        raise click.ClickException(f"cannot create the analyst role: "
                                   f"{str(e.orig).splitlines()[0]}") from e
    click.echo(f"analyst role {name}: SELECT on {', '.join(VIEWS)} only")


@db.command()
def current() -> None:
    """Print the database's revision."""
    click.echo(migrate.current_revision(settings()) or "base (empty)")


local_only("migrates the database this host is configured for; the HTTP API does not offer it")(db)
