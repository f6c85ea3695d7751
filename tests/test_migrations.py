"""Migrations create every table on both databases, go down cleanly, and match the models."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from nightowl.common.config import Settings
from nightowl.platform import migrate
from nightowl.platform.db import make_engine
from nightowl.platform.orm import Base
from nightowl.platform.partitions import not_a_partition

PG_URL = os.environ.get("NIGHTOWL_TEST_DATABASE_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'm.db'}")
        return
    if not PG_URL:
        pytest.skip("PostgreSQL runs in CI (NIGHTOWL_TEST_DATABASE_URL)")
    name = f"nightowl_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(PG_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield Settings(home=tmp_path, database_url=make_url(PG_URL).set(database=name)
                       .render_as_string(hide_password=False))
    finally:
        from nightowl.platform.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            # Roles outlive their database: the analyst login `db upgrade` made goes too.
            conn.execute(text(f'DROP ROLE IF EXISTS "nightowl_analyst_{name}"'))
        admin.dispose()


def test_upgrade_creates_every_table_and_matches_models(empty_db: Settings) -> None:
    migrate.upgrade(empty_db)
    engine = make_engine(empty_db.sqlalchemy_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={
                    "compare_type": True, "include_object": not_a_partition}), Base.metadata
            )
        assert diff == [], f"models and migrations drifted: {diff}"
        assert migrate.is_up_to_date(empty_db)
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_every_table(empty_db: Settings) -> None:
    migrate.upgrade(empty_db)
    migrate.downgrade(empty_db, "base")
    engine = make_engine(empty_db.sqlalchemy_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate.upgrade(empty_db)  # and back up again, from scratch
    assert migrate.is_up_to_date(empty_db)
