"""Tenant-owned models and aliases, expiring keys, schedule names per tenant, analyst login

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 14:30:00

Existing model versions and aliases keep a NULL owner, which means shared: the operator's,
visible to every tenant and writable only from the operator's CLI. Aliases become per tenant
(each tenant's `name@prod` is its own), so the unique key gains the owner; schedule names too.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _owner(table: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant_id", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(op.f(f"fk_{table}_tenant_id_tenants"), "tenants",
                                    ["tenant_id"], ["id"], ondelete="CASCADE")
        batch_op.create_index(op.f(f"ix_{table}_tenant_id"), ["tenant_id"], unique=False)


def _views() -> object:
    # SQLite rebuilds a table to add a foreign key, which a view naming it forbids: the
    # analyst views go while the tables change and come back exactly as 0002 made them.
    return importlib.import_module("nightowl_migrations.versions.0002_views")


def upgrade() -> None:
    views = _views()
    views.downgrade()  # type: ignore[attr-defined]
    _upgrade_tables()
    views.upgrade()  # type: ignore[attr-defined]


def _upgrade_tables() -> None:
    op.create_table(
        "analyst_roles",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("password", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_analyst_roles")),
    )
    _owner("model_versions")
    _owner("model_aliases")
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.drop_constraint("uq_model_aliases_name", type_="unique")
        batch_op.create_unique_constraint(op.f("uq_model_aliases_name"),
                                          ["name", "alias", "tenant_id"])
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_constraint("uq_schedules_name", type_="unique")
        batch_op.create_unique_constraint(op.f("uq_schedules_tenant_id"), ["tenant_id", "name"])
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    views = _views()
    views.downgrade()  # type: ignore[attr-defined]
    _downgrade_tables()
    views.upgrade()  # type: ignore[attr-defined]


def _downgrade_tables() -> None:
    op.drop_table("analyst_roles")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    # Names and aliases that exist per tenant would collide once global: tenants' rows go.
    op.execute("DELETE FROM model_aliases WHERE tenant_id IS NOT NULL")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_constraint("uq_schedules_tenant_id", type_="unique")
        batch_op.create_unique_constraint(op.f("uq_schedules_name"), ["name"])
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.drop_constraint("uq_model_aliases_name", type_="unique")
        batch_op.create_unique_constraint(op.f("uq_model_aliases_name"), ["name", "alias"])
    for table in ("model_aliases", "model_versions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(op.f(f"ix_{table}_tenant_id"))
            batch_op.drop_constraint(op.f(f"fk_{table}_tenant_id_tenants"), type_="foreignkey")
            batch_op.drop_column("tenant_id")
