"""`nightowl db upgrade|downgrade`: Alembic, driven from Settings."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from nightowl.common.config import Settings
from nightowl.common.errors import SchemaOutdated
from nightowl.common.private import private_dir
from nightowl.platform.db import get_engine


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(str(files("nightowl_migrations")))))
    # ConfigParser treats % as interpolation; URLs may contain it (escaped passwords).
    cfg.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    private_dir(settings.home)
    command.upgrade(alembic_config(settings), revision)
    if revision == "head" and settings.sqlalchemy_url.startswith("postgresql"):
        from nightowl.platform.analyst_role import ensure_role_quietly
        from nightowl.platform.db import session_scope
        from nightowl.platform.partitions import ensure

        ensure_role_quietly(settings)
        # Today's and the next windows of job_items, before any job can be made in them.
        with session_scope(settings) as session:
            ensure(session, window_seconds=settings.partition_seconds)


def downgrade(settings: Settings, revision: str = "-1") -> None:
    command.downgrade(alembic_config(settings), revision)


def current_revision(settings: Settings) -> str | None:
    with get_engine(settings).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_up_to_date(settings: Settings) -> bool:
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    return current_revision(settings) == head


_checked: set[str] = set()


def ensure_schema(settings: Settings) -> None:
    """The embedded SQLite database migrates itself on first use; a server database must be
    migrated on purpose (`nightowl db upgrade`, the compose `migrate` service)."""
    url = settings.sqlalchemy_url
    if url in _checked:
        return
    if not is_up_to_date(settings):
        if url.startswith("sqlite"):
            upgrade(settings)
        else:
            raise SchemaOutdated(
                f"the database is at revision {current_revision(settings) or 'base (empty)'}, "
                "this nightowl needs the latest: run `nightowl db upgrade`"
            )
    _checked.add(url)
