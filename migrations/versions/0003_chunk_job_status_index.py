"""Index job_chunks by (job_id, status)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 19:00:00

Every chunk commit asks whether its job has an open chunk left. Without this index that
question reads all of the job's chunk rows, so a job of C chunks costs C^2/2 row visits in all;
with it, one index probe.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_chunks", schema=None) as batch_op:
        batch_op.create_index("ix_job_chunks_job_id_status", ["job_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_job_chunks_job_id_status")
