"""Which door a job came through: jobs.origin

Revision ID: 0016_core
Revises: 0009
Create Date: 2026-12-07 23:10:00

A job is a plain bulk job, an OpenAI batch or one direct OpenAI request. That was read off the
id's prefix (batch_..., req_...); it is now a column set at creation. Existing rows are
classified by the prefix one last time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_core"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORIGINS = ("job", "batch", "direct")


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: a batch-mode rebuild of `jobs` would trip over the
    # analyst views that name it (see 0009).
    op.add_column("jobs", sa.Column("origin", sa.String(16), nullable=False,
                                    server_default="job"))
    op.execute("UPDATE jobs SET origin = 'batch' WHERE id LIKE 'batch\\_%' ESCAPE '\\'")
    op.execute("UPDATE jobs SET origin = 'direct' WHERE id LIKE 'req\\_%' ESCAPE '\\'")
    if op.get_bind().dialect.name != "sqlite":
        # SQLite cannot add a constraint to an existing table without rebuilding it.
        allowed = ", ".join(f"'{o}'" for o in ORIGINS)
        op.create_check_constraint("job_origin", "jobs", f"origin IN ({allowed})")
    op.create_index("ix_jobs_origin", "jobs", ["origin"])


def downgrade() -> None:
    op.drop_index("ix_jobs_origin", table_name="jobs")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("job_origin", "jobs", type_="check")
    op.drop_column("jobs", "origin")
