"""Allow the embed task kind

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-01 14:30:00

Task kinds are stored as strings checked by a named CHECK constraint on each table that has
one; the constraint is rebuilt with the new value (SQLite rebuilds the table in batch mode).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("model_versions", "jobs", "training_runs")
OLD = ("generate", "translate", "sentiment")
NEW = (*OLD, "embed")


def _recheck(kinds: tuple[str, ...]) -> None:
    allowed = ", ".join(f"'{k}'" for k in kinds)
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # The batch rebuild renames a copy over each table; modern SQLite re-checks the analyst
        # views at that rename and fails on the moment the table is missing. The legacy rename
        # leaves the views alone, and they name the same table again once it is back.
        op.execute("PRAGMA legacy_alter_table = ON")
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint("task_kind", type_="check")
            batch_op.create_check_constraint("task_kind", f"kind IN ({allowed})")
    if sqlite:
        op.execute("PRAGMA legacy_alter_table = OFF")


def upgrade() -> None:
    _recheck(NEW)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'embed'")
    op.execute("DELETE FROM training_runs WHERE kind = 'embed'")
    op.execute("DELETE FROM model_versions WHERE kind = 'embed'")
    _recheck(OLD)
