"""The PostgreSQL role analysts' SQL runs as: it logs in on its own connection and holds only
SELECT on the analyst views, so no statement typed into `nightowl sql` can reach what the app's
role can (COPY ... TO PROGRAM, pg_read_file, lo_import, other tables), even when the app's role
is a superuser.

A separate login and not `SET ROLE` on the app's connection: `RESET ROLE` would hand the
session straight back to the app's role. Its password is random, kept in `analyst_roles`,
which only the app's role can read.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from nightowl.common.config import Settings
from nightowl.common.errors import InvalidInput
from nightowl.platform.db import get_engine, session_scope
from nightowl.platform.orm import AnalystRole

log = logging.getLogger(__name__)

VIEWS = ("v_results", "v_label_daily", "v_job_throughput")
_SAFE = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class Login:
    role: str
    password: str


def role_name(settings: Settings) -> str:
    """One role per database (roles are cluster-wide; each database has its own views)."""
    database = make_url(settings.sqlalchemy_url).database or "nightowl"
    return ("nightowl_analyst_" + _SAFE.sub("_", database.lower()))[:63]


def ensure_role(settings: Settings) -> str:
    """Create (or repair) the analyst role and its grants; returns its name. Needs a role
    that may create roles (a superuser, or CREATEROLE)."""
    name = role_name(settings)
    engine = get_engine(settings)
    with session_scope(settings) as session:
        row = session.get(AnalystRole, name)
        if row is None:
            row = AnalystRole(name=name, password=secrets.token_urlsafe(24))
            session.add(row)
            session.flush()
        password = row.password
    quoted = f'"{name}"'
    with engine.begin() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name})
        verb = "ALTER" if exists else "CREATE"
        # Every attribute spelled out, so a role that someone widened by hand is narrowed again.
        conn.execute(text(
            f"{verb} ROLE {quoted} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
            f"NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20 PASSWORD '{password}'"))
        for member_of in conn.scalars(text(
                "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
                "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :n"), {"n": name}):
            conn.execute(text(f'REVOKE "{member_of}" FROM {quoted}'))
        conn.execute(text(f"ALTER ROLE {quoted} SET default_transaction_read_only = on"))
        conn.execute(text(f"ALTER ROLE {quoted} SET statement_timeout = '10min'"))
        database = conn.scalar(text("SELECT current_database()"))
        conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO {quoted}'))
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}"))
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted}"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
        conn.execute(text(f"GRANT SELECT ON {', '.join(VIEWS)} TO {quoted}"))
    return name


def ensure_role_quietly(settings: Settings) -> str | None:
    """At `db upgrade`: a role that may not create roles still migrates; `nightowl sql` then
    says what to run."""
    try:
        return ensure_role(settings)
    except DBAPIError as e:
        log.warning("analyst role not created (%s); run `nightowl db analyst-role` with a "
                    "database URL allowed to create roles", str(e.orig).split("\n")[0])
        return None


def login(settings: Settings) -> Login:
    name = role_name(settings)
    with session_scope(settings) as session:
        row = session.scalars(select(AnalystRole).where(AnalystRole.name == name)).first()
        if row is None:
            raise InvalidInput(
                f"the read-only analyst role {name} does not exist yet; run `nightowl db "
                "upgrade` (or `nightowl db analyst-role`) with a database URL allowed to "
                "create roles")
        return Login(role=row.name, password=row.password)
