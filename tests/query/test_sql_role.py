"""`nightowl sql` cannot reach past the analyst views, even when NIGHTOWL_DATABASE_URL names a
superuser (CI runs this suite as `postgres`): it logs in as its own read-only role, which no
statement can turn back into the app's role. SQLite: ATTACH and VACUUM INTO create no files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform import migrate
from nightowl.platform.analyst_role import login, role_name
from nightowl.platform.db import get_engine
from nightowl.platform.readonly import run_readonly


def sql(statement: str) -> Any:
    return CliRunner().invoke(cli, ["sql", statement, "--format", "jsonl"])


@pytest.fixture
def pg(migrated: Settings) -> Settings:
    if make_url(migrated.sqlalchemy_url).get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL roles: runs with NIGHTOWL_TEST_DATABASE_URL (as in CI)")
    return migrated


def test_the_app_role_is_a_superuser_and_sql_still_cannot_use_it(
        pg: Settings, tmp_path: Path) -> None:
    with get_engine(pg).connect() as conn:
        assert conn.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    ok = sql("SELECT current_user AS who, count(*) AS n FROM v_results")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout.splitlines()[0])["who"] == role_name(pg)

    marker = tmp_path / "pwned"
    marker.parent.chmod(0o777)  # so only the refusal, not permissions, can stop the write
    attacks = [
        f"COPY (SELECT 'x') TO PROGRAM 'id > {marker}'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT * FROM pg_ls_dir('.')",
        "COPY (SELECT 1) TO '/tmp/nightowl-copy-out'",
        "SELECT * FROM jobs", "SELECT * FROM api_keys", "SELECT * FROM analyst_roles",
        "SET ROLE postgres", "SET SESSION AUTHORIZATION postgres",
        "SELECT set_config('role', 'postgres', false)",
        "DELETE FROM jobs", "CREATE TABLE t_evil (x int)",
    ]
    for statement in attacks:
        result = sql(statement)
        assert result.exit_code != 0, (statement, result.output)
        assert "Traceback" not in result.output
    assert not marker.exists() and not Path("/tmp/nightowl-copy-out").exists()


def test_reset_role_cannot_escape_the_analyst_login(pg: Settings) -> None:
    """Had `nightowl sql` used SET ROLE on the app's connection, RESET ROLE would hand back
    the superuser; a login of its own has nothing to go back to."""
    import psycopg

    who = login(pg)
    url = make_url(pg.sqlalchemy_url).set(drivername="postgresql", username=who.role,
                                          password=who.password)
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("RESET ROLE")
        conn.execute("RESET SESSION AUTHORIZATION")
        assert conn.execute("SELECT current_user").fetchone() == (who.role,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE postgres")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file('/etc/hostname')")


def test_a_widened_analyst_role_is_refused_and_db_upgrade_narrows_it(pg: Settings) -> None:
    name = role_name(pg)
    with get_engine(pg).begin() as conn:
        conn.execute(text(f'ALTER ROLE "{name}" SUPERUSER'))
    try:
        refused = sql("SELECT 1")
        assert refused.exit_code != 0 and "analyst-role" in refused.output
    finally:
        migrate.upgrade(pg)
    assert sql("SELECT 1").exit_code == 0


def test_sqlite_attach_and_vacuum_into_create_no_files(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'home' / 'n.db'}")
    migrate.upgrade(s)
    for target in ("attached.db", "copy.db"):
        statement = (f"ATTACH '{tmp_path / target}' AS x" if target == "attached.db"
                     else f"VACUUM INTO '{tmp_path / target}'")
        with pytest.raises(Exception, match="read-only") as refused, \
                run_readonly(s, statement) as result:
            list(result.rows)
        assert "not authorized" in str(refused.value) or "denied" in str(refused.value)
        assert not (tmp_path / target).exists()
    with run_readonly(s, "SELECT count(*) FROM v_results") as result:
        assert list(result.rows) == [(0,)]
    from nightowl.platform.db import dispose_engines

    dispose_engines()
