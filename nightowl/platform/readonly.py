"""Analysts' SQL on a connection that cannot write: read-only at the database, not by parsing.

PostgreSQL: its own login as the analyst role (SELECT on the analyst views, nothing else; see
nightowl/platform/analyst_role.py), never the app's role, in a READ ONLY transaction, one statement
per call (the extended protocol refuses `SELECT 1; COMMIT; DELETE ...`). SQLite: the file opened
with `mode=ro` plus `PRAGMA query_only`, one statement per call, and an authorizer that lets a
statement only read (ATTACH and VACUUM INTO would create files even on a read-only handle).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import make_url

from nightowl.common.config import Settings
from nightowl.common.errors import InvalidInput

FETCH = 1000
WRITE_REFUSED = ("nightowl sql is read-only: this statement tries to change the database ({}). "
                 "Change data through nightowl's commands or API instead.")
# Server-side cursors stream any size of result, but PostgreSQL only declares them over queries.
_CURSORABLE = re.compile(r"^\s*(\(\s*)*(select|with|values|table)\b", re.IGNORECASE)


@dataclass
class QueryResult:
    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


@contextmanager
def run_readonly(settings: Settings, sql: str, *, timeout_s: float = 300.0
                 ) -> Iterator[QueryResult]:
    """Run one statement read-only; rows stream while the context is open."""
    if not sql.strip():
        raise InvalidInput("no SQL given; pass a statement like \"SELECT * FROM v_results\"")
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() == "sqlite":
        with _sqlite(url.database or "", sql, timeout_s) as result:
            yield result
    elif url.get_backend_name() == "postgresql":
        from nightowl.platform.analyst_role import login

        who = login(settings)
        conninfo = (url.set(drivername="postgresql", username=who.role, password=who.password)
                    .render_as_string(hide_password=False))
        with _postgres(conninfo, sql, timeout_s) as result:
            yield result
    else:
        raise InvalidInput(f"nightowl sql supports PostgreSQL and SQLite, not {url.drivername}")


@contextmanager
def _sqlite(path: str, sql: str, timeout_s: float) -> Iterator[QueryResult]:
    if not path or path == ":memory:" or not Path(path).exists():
        raise InvalidInput(f"no SQLite database at {path!r}; run `nightowl db upgrade` first")
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_sqlite_reads_only)
        deadline = time.monotonic() + timeout_s
        # Checked every few thousand VM steps: a runaway query is interrupted, not waited on.
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cur = conn.execute(sql)
        except sqlite3.Error as e:
            raise _sqlite_error(e, timeout_s) from e
        columns = [d[0] for d in cur.description or []]
        yield QueryResult(columns, _sqlite_rows(cur, timeout_s))
    finally:
        conn.close()


_READING = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
            getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
# Pragmas that only describe the schema; the rest can change settings or touch files.
_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info",
            "foreign_key_list", "database_list", "collation_list", "function_list"}


def _sqlite_reads_only(action: int, arg1: str | None, arg2: str | None, _db: str | None,
                       _trigger: str | None) -> int:
    if action in _READING:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _PRAGMAS and arg2 is None:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _sqlite_rows(cur: sqlite3.Cursor, timeout_s: float) -> Iterator[tuple[Any, ...]]:
    try:
        while batch := cur.fetchmany(FETCH):
            yield from batch
    except sqlite3.Error as e:
        raise _sqlite_error(e, timeout_s) from e


def _sqlite_error(e: sqlite3.Error, timeout_s: float) -> InvalidInput:
    text = str(e)
    if ("readonly" in text or "query_only" in text or "read-only" in text
            or "not authorized" in text or "authorization denied" in text):
        return InvalidInput(WRITE_REFUSED.format(text))
    if "interrupted" in text:
        return InvalidInput(f"the query ran past {timeout_s:.0f}s and was stopped; "
                            "narrow it or pass a longer --timeout")
    if "one statement at a time" in text:
        return InvalidInput("nightowl sql runs one statement at a time; remove the ';'-joined rest")
    return InvalidInput(f"the query failed: {text}")


@contextmanager
def _postgres(conninfo: str, sql: str, timeout_s: float) -> Iterator[QueryResult]:
    import psycopg

    try:
        conn = psycopg.connect(conninfo, options="-c default_transaction_read_only=on",
                               connect_timeout=10)
    except psycopg.Error as e:
        raise InvalidInput(f"cannot connect to the database: {e}") from e
    try:
        _check_powerless(conn)
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
        streams = _CURSORABLE.match(sql) is not None
        cur: Any = conn.cursor(name="nightowl_sql") if streams else conn.cursor()
        try:
            if streams:
                cur.execute(sql)
            else:
                # prepare=True forces the extended protocol: exactly one statement.
                cur.execute(sql, prepare=True)
        except psycopg.Error as e:
            raise _pg_error(e, timeout_s) from e
        columns = [d.name for d in cur.description or []]
        yield QueryResult(columns, _pg_rows(cur, timeout_s))
    finally:
        conn.rollback()
        conn.close()


def _check_powerless(conn: Any) -> None:
    """Refuse to run anything on a login that turned out to have powers (a role widened by
    hand, a URL that names the wrong user): the analyst must not be anyone else."""
    row = conn.execute(
        "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolbypassrls, "
        "EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid) "
        "FROM pg_roles r WHERE r.rolname = session_user").fetchone()
    conn.rollback()
    if row is None or row[0] or row[1]:
        raise InvalidInput("the analyst role has more than SELECT on the views (superuser, "
                           "CREATEROLE or a member of another role); run `nightowl db "
                           "analyst-role` to narrow it again")


def _pg_rows(cur: Any, timeout_s: float) -> Iterator[tuple[Any, ...]]:
    import psycopg

    if cur.description is None:
        return
    try:
        while batch := cur.fetchmany(FETCH):
            yield from batch
    except psycopg.Error as e:
        raise _pg_error(e, timeout_s) from e


def _pg_error(e: Exception, timeout_s: float) -> InvalidInput:
    import psycopg.errors as pe

    first = str(e).split("\n")[0]
    if isinstance(e, pe.InsufficientPrivilege):
        return InvalidInput(f"nightowl sql reads only the analyst views (v_results, "
                            f"v_label_daily, v_job_throughput; see docs/sql.md): {first}")
    if isinstance(e, pe.ReadOnlySqlTransaction) or "data-modifying" in first:
        return InvalidInput(WRITE_REFUSED.format(first))
    if isinstance(e, pe.QueryCanceled):
        return InvalidInput(f"the query ran past {timeout_s:.0f}s and was stopped; "
                            "narrow it or pass a longer --timeout")
    if "multiple commands" in first:
        return InvalidInput("nightowl sql runs one statement at a time; remove the ';'-joined rest")
    return InvalidInput(f"the query failed: {first}")
