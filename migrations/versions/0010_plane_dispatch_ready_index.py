"""A ready index for dispatch: chunks carry their job's queue, tenant, priority and age

Revision ID: 0010_plane
Revises: 0009
Create Date: 2026-12-07 23:00:00

Each dispatch pick read every live job of its queue (an EXISTS per job) under the queue's
lock, so a claim cost grew with the backlog. The chunk rows now carry the keys a pick orders
by, and two partial indexes hold only what a pick reads: the chunks waiting in SQL (the ready
set, in dispatch order per tenant) and the chunks in flight (each tenant's load).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_plane"
down_revision = "0016_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READY = "status = 'pending' AND enqueued_at IS NULL"
IN_FLIGHT = "status = 'running' OR (status = 'pending' AND enqueued_at IS NOT NULL)"


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: batch mode would rebuild the table on SQLite.
    op.add_column("job_chunks", sa.Column("queue", sa.String(length=40), nullable=True))
    op.add_column("job_chunks", sa.Column("tenant_id", sa.String(length=40), nullable=True))
    op.add_column("job_chunks", sa.Column("priority", sa.Integer(), server_default="0",
                                          nullable=False))
    op.add_column("job_chunks", sa.Column("job_created_at", sa.DateTime(timezone=True),
                                          nullable=True))
    # Chunks still to run take their job's keys; finished ones are never picked again.
    op.execute(
        "UPDATE job_chunks SET "
        "queue = (SELECT queue FROM jobs WHERE jobs.id = job_chunks.job_id), "
        "tenant_id = (SELECT tenant_id FROM jobs WHERE jobs.id = job_chunks.job_id), "
        "priority = (SELECT priority FROM jobs WHERE jobs.id = job_chunks.job_id), "
        "job_created_at = (SELECT created_at FROM jobs WHERE jobs.id = job_chunks.job_id) "
        "WHERE status IN ('pending', 'running')"
    )
    op.create_index(
        "ix_job_chunks_ready", "job_chunks",
        ["queue", "tenant_id", sa.desc(sa.column("priority")), "job_created_at", "job_id",
         "chunk_no"],
        postgresql_where=sa.text(READY), sqlite_where=sa.text(READY))
    op.create_index(
        "ix_job_chunks_in_flight", "job_chunks", ["queue", "tenant_id"],
        postgresql_where=sa.text(IN_FLIGHT), sqlite_where=sa.text(IN_FLIGHT))


def downgrade() -> None:
    op.drop_index("ix_job_chunks_in_flight", table_name="job_chunks")
    op.drop_index("ix_job_chunks_ready", table_name="job_chunks")
    for column in ("job_created_at", "priority", "tenant_id", "queue"):
        op.drop_column("job_chunks", column)
