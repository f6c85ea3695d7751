"""What a model version looks like to its users: one model for every listing of versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from nightowl.common.enums import TaskKind
from nightowl.platform.orm import ModelVersion
from nightowl.registry import versions as registry
from nightowl.registry.outcome import version_refs

SHARED = "shared"


class VersionView(BaseModel):
    ref: str = Field(description="NAME@vN")
    kind: TaskKind
    aliases: list[str]
    owner: str = Field(description="'shared', or the id of the tenant whose model it is")
    base_version: str | None = Field(description="The version it was fine-tuned from, NAME@vN")
    training_run_id: str | None
    metrics: dict[str, Any]
    created_at: datetime
    # Where the weights are on the server and their checksum are the operator's to see: None
    # to an API caller.
    source: str | None = None
    revision: str | None = None
    sha256: str | None = None


def version_views(session: Session, versions: Sequence[ModelVersion]) -> list[VersionView]:
    aliases = registry.aliases_by_version(session)
    bases = version_refs(session, [v.base_version_id for v in versions])
    return [VersionView(
        ref=v.ref, kind=v.kind, aliases=aliases.get(v.id, []),
        owner=SHARED if v.tenant_id is None else v.tenant_id,
        base_version=bases.get(v.base_version_id) if v.base_version_id else None,
        training_run_id=v.training_run_id, metrics=dict(v.metrics), created_at=v.created_at,
        source=v.source, revision=v.revision, sha256=v.sha256,
    ) for v in versions]
