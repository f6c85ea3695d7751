"""Per-tenant quota on queued input tokens

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 18:00:00

A tenant's queued work can now be capped in input tokens as well as items: jobs keep the token
count taken at submit (when their tenant has such a limit), tenant_quotas the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenant_quotas", sa.Column("max_queued_tokens", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("total_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+): batch mode would rebuild `jobs`, and SQLite refuses to
    # rename a table under the analyst views that name it.
    op.drop_column("jobs", "total_tokens")
    op.drop_column("tenant_quotas", "max_queued_tokens")
