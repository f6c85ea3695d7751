"""What a model version looks like to its users: one model for every listing of versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from nightowl.common.enums import TaskKind
from nightowl.common.errors import NightowlError
from nightowl.platform.auth import SHARED_OWNER, owner_names
from nightowl.platform.orm import ModelAlias, ModelVersion
from nightowl.registry import versions as registry
from nightowl.registry.outcome import version_refs

SHARED = SHARED_OWNER


class AliasView(BaseModel):
    alias: str
    owner: str = Field(description="'shared', or the name of the tenant whose alias it is")
    here: bool = Field(description="Whether the caller's submits resolve NAME@ALIAS to it")

    def shown(self) -> str:
        whose = SHARED if self.owner == SHARED else f"{self.owner}'s own"
        return f"@{self.alias} ({whose}" + ("; your submits use it)" if self.here else ")")


class VersionView(BaseModel):
    ref: str = Field(description="NAME@vN")
    kind: TaskKind
    aliases: list[AliasView]
    owner: str = Field(description="'shared', or the name of the tenant whose model it is")
    base_version: str | None = Field(description="The version it was fine-tuned from, NAME@vN")
    training_run_id: str | None
    metrics: dict[str, Any]
    created_at: datetime
    # Where the weights are on the server and their checksum are the operator's to see: None
    # to an API caller.
    source: str | None = None
    revision: str | None = None
    sha256: str | None = None


def version_views(session: Session, versions: Sequence[ModelVersion], *,
                  tenant_id: str | None) -> list[VersionView]:
    """Versions as the operator sees them: every owner's aliases of their names, each marked
    with whether `tenant_id`'s submits resolve it here (its own alias, else the shared one)."""
    names = {v.name for v in versions}
    rows = list(session.scalars(select(ModelAlias).where(ModelAlias.name.in_(names))
                                .order_by(ModelAlias.alias))) if names else []
    owners = owner_names(session, [v.tenant_id for v in versions] + [a.tenant_id for a in rows])
    aliases: dict[int, list[AliasView]] = {}
    resolved: dict[tuple[str, str], int | None] = {}
    for a in rows:
        key = (a.name, a.alias)
        if key not in resolved:
            try:
                resolved[key] = registry.resolve(session, f"{a.name}@{a.alias}",
                                                 tenant_id=tenant_id).id
            except NightowlError:
                resolved[key] = None  # only another tenant's alias of that name: not ours
        here = resolved[key] == a.version_id
        aliases.setdefault(a.version_id, []).append(
            AliasView(alias=a.alias, owner=owners.get(a.tenant_id, str(a.tenant_id)), here=here))
    bases = version_refs(session, [v.base_version_id for v in versions])
    return [VersionView(
        ref=v.ref, kind=v.kind, aliases=aliases.get(v.id, []),
        owner=owners.get(v.tenant_id, str(v.tenant_id)),
        base_version=bases.get(v.base_version_id) if v.base_version_id else None,
        training_run_id=v.training_run_id, metrics=dict(v.metrics), created_at=v.created_at,
        source=v.source, revision=v.revision, sha256=v.sha256,
    ) for v in versions]
