"""Job and fine-tune priority; per-tenant quotas

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-01 14:30:00

Chunks are now sent to the broker from SQL in a small window, the next one picked by priority,
then fair share across tenants, then age: jobs and runs carry a priority (existing rows get the
default, 0). Operators cap what one tenant may queue or run at once in tenant_quotas.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default="0",
                                      nullable=False))
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default="0",
                                      nullable=False))
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("max_queued_items", sa.BigInteger(), nullable=True),
        sa.Column("max_running_jobs", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_tenant_quotas_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_quotas")),
    )


def downgrade() -> None:
    op.drop_table("tenant_quotas")
    # A plain DROP COLUMN (SQLite 3.35+): batch mode would rebuild `jobs`, and SQLite refuses to
    # rename a table under the analyst views that name it.
    op.drop_column("training_runs", "priority")
    op.drop_column("jobs", "priority")
