"""Migrations create every table on both databases, go down cleanly, and match the models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from nightowl.common.config import Settings
from nightowl.platform import migrate
from nightowl.platform.db import make_engine, scratch_database
from nightowl.platform.orm import Base, new_job_id
from nightowl.platform.partitions import not_a_partition

PG_URL = os.environ.get("NIGHTOWL_TEST_DATABASE_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'm.db'}")
        return
    if not PG_URL:
        pytest.skip("PostgreSQL runs in CI (NIGHTOWL_TEST_DATABASE_URL)")
    with scratch_database(make_url(PG_URL).set(database="postgres"), "nightowl_mig") as url:
        yield Settings(home=tmp_path, database_url=url)


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


def test_partitioning_keeps_existing_results(empty_db: Settings) -> None:
    """0011 turns an existing job_items into a partitioned table (PostgreSQL) without losing a
    row: old-form ids stay readable through the ORM and the analyst views, new jobs' items
    go to their time window, and the id sequence carries on."""
    if not empty_db.sqlalchemy_url.startswith("postgresql"):
        pytest.skip("job_items is partitioned on PostgreSQL only; SQLite keeps one table")
    migrate.upgrade(empty_db, "0009")
    engine = make_engine(empty_db.sqlalchemy_url)
    old = "job_0123456789abcdef01234567"
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO model_versions (name, version, kind, source, metrics, created_at) "
                "VALUES ('m', 1, 'sentiment', '/m', '{}', now())"))
            conn.execute(text(
                "INSERT INTO jobs (id, kind, model_ref, model_version_id, params, status, "
                "truncate, chunk_size, total_items, succeeded_items, failed_items, "
                "cancelled_items, expired_items, queue, metadata, priority, errors, created_at) "
                "SELECT :id, 'sentiment', 'm@v1', id, '{}', 'completed', false, 10, 3, 3, 0, "
                "0, 0, 'cpu', '{}', 0, '[]', now() FROM model_versions"), {"id": old})
            conn.execute(text(
                "INSERT INTO job_items (job_id, idx, custom_id, input, status, output, attempts, "
                "finished_at) SELECT :id, n, 'c' || n, '{\"text\": \"t\"}', 'succeeded', "
                "'{\"label\": \"positive\"}', 1, now() FROM generate_series(0, 2) n"),
                {"id": old})
        migrate.upgrade(empty_db)
        with engine.begin() as conn:
            assert conn.scalar(text("SELECT count(*) FROM job_items WHERE job_id = :id"),
                               {"id": old}) == 3
            assert conn.scalar(text("SELECT count(*) FROM v_results WHERE job_id = :id"),
                               {"id": old}) == 3
            assert conn.scalar(text("SELECT tableoid::regclass::text FROM job_items "
                                    "WHERE job_id = :id LIMIT 1"), {"id": old}) == \
                "job_items_legacy_job"
            new = new_job_id("job")
            conn.execute(text(
                "INSERT INTO jobs (id, kind, model_ref, model_version_id, params, status, "
                "truncate, chunk_size, total_items, succeeded_items, failed_items, "
                "cancelled_items, expired_items, queue, metadata, priority, errors, created_at) "
                "SELECT :new, kind, model_ref, model_version_id, params, 'queued', truncate, "
                "chunk_size, 1, 0, 0, 0, 0, queue, metadata, 0, errors, now() FROM jobs "
                "WHERE id = :old"), {"new": new, "old": old})
            placed = conn.execute(text(
                "INSERT INTO job_items (job_id, idx, custom_id, input, status, attempts) VALUES "
                "(:new, 0, 'c0', '{}', 'pending', 0) RETURNING id, tableoid::regclass::text"),
                {"new": new}).one()
            assert placed[1].startswith("job_items_job_")  # its time window, made at upgrade
            assert placed[0] > 3  # the sequence went on from the copied rows
        migrate.downgrade(empty_db, "0009")
        with engine.begin() as conn:
            assert conn.scalar(text("SELECT count(*) FROM job_items")) == 4
            assert conn.scalar(text(
                "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c "
                "ON c.oid = p.partrelid WHERE c.relname = 'job_items'")) == 0
    finally:
        engine.dispose()
