"""Alembic environment: the URL comes from nightowl's Settings unless the caller passes one."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from nightowl.platform.db import make_engine
from nightowl.platform.orm import Base
from nightowl.platform.partitions import not_a_partition

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=not_a_partition,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from nightowl.common.config import get_settings

        url = get_settings().sqlalchemy_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("nightowl migrations run online only: use `nightowl db upgrade`")
run_migrations_online()
