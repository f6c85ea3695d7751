"""Versions numbered per owner, stored bytes a tenant can be held to, dashboard sessions

Revision ID: 0015_harden
Revises: 0009
Create Date: 2026-12-07 23:00:00

A tenant's versions of a name are numbered on their own (after the shared ones it sees), so a
number never tells one tenant that another uses the name: the unique key gains the owner.
tenant_quotas gains max_stored_bytes; training runs and model versions record the bytes they
keep (uploads already do), which is what that limit counts. The dashboard's cookie holds a
session id (its sha256 in dashboard_sessions) instead of the API key itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_harden"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _views() -> object:
    # SQLite rebuilds model_versions to change its unique key, which a view naming it forbids:
    # the analyst views go while it changes and come back exactly as 0002 made them.
    return importlib.import_module("nightowl_migrations.versions.0002_views")


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"],
                                name=op.f("fk_dashboard_sessions_key_id_api_keys"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_dashboard_sessions")),
    )
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dashboard_sessions_key_id"), ["key_id"],
                              unique=False)
    op.add_column("tenant_quotas", sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True))
    op.add_column("training_runs", sa.Column("data_bytes", sa.BigInteger(), nullable=True))
    views = _views()
    views.downgrade()  # type: ignore[attr-defined]
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bytes", sa.BigInteger(), nullable=True))
        batch_op.drop_constraint("uq_model_versions_name", type_="unique")
        batch_op.create_unique_constraint(op.f("uq_model_versions_name"),
                                          ["name", "version", "tenant_id"])
    views.upgrade()  # type: ignore[attr-defined]


def downgrade() -> None:
    views = _views()
    views.downgrade()  # type: ignore[attr-defined]
    # Numbers that exist per owner would collide once global: tenants' versions go.
    op.execute("DELETE FROM model_versions WHERE tenant_id IS NOT NULL")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_model_versions_name", type_="unique")
        batch_op.create_unique_constraint(op.f("uq_model_versions_name"), ["name", "version"])
        batch_op.drop_column("bytes")
    views.upgrade()  # type: ignore[attr-defined]
    op.drop_column("training_runs", "data_bytes")
    op.drop_column("tenant_quotas", "max_stored_bytes")
    op.drop_table("dashboard_sessions")
