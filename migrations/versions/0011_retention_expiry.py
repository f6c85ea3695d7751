"""Retention: expiry of results and files; job_items partitioned by time on PostgreSQL

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-07 23:00:00

A lease row (fleet_locks) replaces the maintenance pass's session advisory lock, which
PgBouncer's transaction pooling would break. Jobs keep how long their results live once finished (retain_seconds) and when that is
(expires_at); files their expires_at; tenants may have a retention of their own. On PostgreSQL
job_items becomes a table partitioned by range of job_id: its rows are copied into it in one
transaction (the old table goes only once the copy is in), the id sequence carries on, and
the analyst views come back exactly as 0002 made them. Ids of the older all-hex form land in
one legacy partition per prefix; the time windows are made by the maintenance pass
(nightowl.platform.partitions) and at `db upgrade`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision = "0015_harden"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: this revision keeps meaning what it meant when it ran.
PREFIXES = ("job", "req", "batch")
INDEXES = {
    "ix_job_items_job_id_idx": "CREATE UNIQUE INDEX {name} ON {table} (job_id, idx)",
    "ix_job_items_finished_at": "CREATE INDEX {name} ON {table} (finished_at)",
    # The primary key leads with job_id; keyset reads across jobs (results query) go by id.
    "ix_job_items_id": "CREATE INDEX {name} ON {table} (id)",
}


def _views() -> object:
    return importlib.import_module("nightowl_migrations.versions.0002_views")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("retain_seconds", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_jobs_expires_at"), "jobs", ["expires_at"], unique=False)
    op.add_column("files", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_files_expires_at"), "files", ["expires_at"], unique=False)
    op.add_column("tenant_quotas",
                  sa.Column("retention_seconds", sa.BigInteger(), nullable=True))
    op.create_table(
        "fleet_locks",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_fleet_locks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        views = _views()
        views.downgrade()  # type: ignore[attr-defined]
        _partition()
        views.upgrade()  # type: ignore[attr-defined]
    else:
        op.create_index("ix_job_items_id", "job_items", ["id"], unique=False)


def _rename_old() -> None:
    op.execute("ALTER TABLE job_items RENAME TO job_items_old")
    for index in ("pk_job_items", "uq_job_items_job_id", *INDEXES):
        op.execute(f"ALTER INDEX IF EXISTS {index} RENAME TO {index}_old")


def _partition() -> None:
    _rename_old()
    op.execute("CREATE TABLE job_items (LIKE job_items_old INCLUDING DEFAULTS "
               "INCLUDING CONSTRAINTS) PARTITION BY RANGE (job_id)")
    op.execute("ALTER TABLE job_items ADD CONSTRAINT pk_job_items PRIMARY KEY (job_id, id)")
    op.execute("ALTER TABLE job_items ADD CONSTRAINT uq_job_items_job_id "
               "UNIQUE (job_id, custom_id)")
    op.execute("ALTER TABLE job_items ADD CONSTRAINT fk_job_items_job_id_jobs FOREIGN KEY "
               "(job_id) REFERENCES jobs (id) ON DELETE CASCADE")
    for name, ddl in INDEXES.items():
        op.execute(ddl.format(name=name, table="job_items"))
    for prefix in PREFIXES:
        op.execute(f"CREATE TABLE job_items_legacy_{prefix} PARTITION OF job_items "
                   f"FOR VALUES FROM ('{prefix}_') TO ('{prefix}_t')")
    op.execute("CREATE TABLE job_items_default PARTITION OF job_items DEFAULT")
    op.execute("INSERT INTO job_items SELECT * FROM job_items_old")
    # The sequence belongs to the new table before the old one (which owned it) goes.
    op.execute("ALTER SEQUENCE job_items_id_seq OWNED BY job_items.id")
    op.execute("DROP TABLE job_items_old")


def _unpartition() -> None:
    op.execute("ALTER TABLE job_items RENAME TO job_items_old")
    for index in ("pk_job_items", "uq_job_items_job_id", *INDEXES):
        op.execute(f"ALTER INDEX IF EXISTS {index} RENAME TO {index}_old")
    op.execute("CREATE TABLE job_items (LIKE job_items_old INCLUDING DEFAULTS "
               "INCLUDING CONSTRAINTS)")
    op.execute("INSERT INTO job_items SELECT * FROM job_items_old")
    op.execute("ALTER SEQUENCE job_items_id_seq OWNED BY job_items.id")
    op.execute("DROP TABLE job_items_old")  # its partitions with it
    op.execute("ALTER TABLE job_items ADD CONSTRAINT pk_job_items PRIMARY KEY (id)")
    op.execute("ALTER TABLE job_items ADD CONSTRAINT uq_job_items_job_id "
               "UNIQUE (job_id, custom_id)")
    op.execute("ALTER TABLE job_items ADD CONSTRAINT fk_job_items_job_id_jobs FOREIGN KEY "
               "(job_id) REFERENCES jobs (id) ON DELETE CASCADE")
    for name, ddl in INDEXES.items():
        if name != "ix_job_items_id":
            op.execute(ddl.format(name=name, table="job_items"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        views = _views()
        views.downgrade()  # type: ignore[attr-defined]
        _unpartition()
        views.upgrade()  # type: ignore[attr-defined]
    else:
        op.drop_index("ix_job_items_id", table_name="job_items")
    op.drop_table("fleet_locks")
    # Plain DROP COLUMN (SQLite 3.35+): batch mode would rebuild the tables under the views.
    op.drop_column("tenant_quotas", "retention_seconds")
    op.drop_index(op.f("ix_files_expires_at"), table_name="files")
    op.drop_column("files", "expires_at")
    op.drop_index(op.f("ix_jobs_expires_at"), table_name="jobs")
    op.drop_column("jobs", "expires_at")
    op.drop_column("jobs", "retain_seconds")
