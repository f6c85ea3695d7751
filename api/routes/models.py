"""/v1/models: the registry, read-only over HTTP."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep
from api.schemas import ModelOut
from nightowl import registry

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(session: SessionDep) -> list[ModelOut]:
    """Every registered model version with its aliases."""
    aliases = registry.aliases_by_version(session)
    return [
        ModelOut(ref=v.ref, name=v.name, version=v.version, kind=v.kind, source=v.source,
                 aliases=aliases.get(v.id, []), metrics=v.metrics)
        for v in registry.list_versions(session)
    ]
