"""Engine and sessions. SQLite gets WAL and a busy timeout so workers and the API can share it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from nightowl.common.config import Settings, get_settings
from nightowl.common.private import private_file


def make_engine(url: str, *, sqlite_autocommit: bool = False, pooler: bool = False,
                **kwargs: Any) -> Engine:
    """An engine. On SQLite every transaction takes the write lock up front (BEGIN IMMEDIATE):
    a reader that later writes would otherwise fail at once instead of waiting its turn.
    `sqlite_autocommit` opens no transaction at all, each statement standing alone: for
    observers that poll and must neither hold the lock nor keep reading an old snapshot.
    `pooler`: PostgreSQL is reached through PgBouncer in transaction pooling, where each
    transaction may run on another server connection, so psycopg must not prepare statements
    on the server (they would be missing, or another client's, on the next connection)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            db_file = Path(parsed.database).expanduser()
            db_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # SQLite gives its -wal and -shm files the database file's mode. private_file
            # never opens an existing file: closing any descriptor of it would drop this
            # process's SQLite locks, another process would take the database for unused and
            # delete its WAL, and this process's later commits would go to the deleted file.
            private_file(db_file)
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let Python's sqlite3 issue no implicit BEGIN; we emit BEGIN IMMEDIATE ourselves so
            # that concurrent writers queue on the busy timeout instead of failing mid-transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if not sqlite_autocommit:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    if pooler and parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "prepare_threshold": None}
    return create_engine(url, **kwargs)


_ENGINES: dict[str, Engine] = {}


def _engine_for(url: str, pooler: bool = False) -> Engine:
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = make_engine(url, pooler=pooler)
    return engine


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    return _engine_for(settings.sqlalchemy_url, settings.database_pooler)


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """After fork, children must not reuse the parent's pooled connections."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


@contextmanager
def scratch_database(admin_url: str | URL, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one run (a test, a benchmark), dropped afterwards;
    yields its URL. `admin_url` names any database on the server to run CREATE/DROP from."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            # Roles outlive their database: the analyst login `db upgrade` made goes too.
            conn.execute(text(f'DROP ROLE IF EXISTS "nightowl_analyst_{name}"'))
        admin.dispose()


def insert_ignoring_conflicts(
    session: Session, model: type[Any], rows: list[dict[str, Any]], unique: list[str]
) -> None:
    """INSERT ... ON CONFLICT (unique) DO NOTHING, on PostgreSQL and SQLite alike."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.connection().execute(insert(model).on_conflict_do_nothing(index_elements=unique), rows)
