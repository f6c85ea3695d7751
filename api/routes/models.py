"""/v1/models: the registry, read-only over HTTP."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, TenantDep
from api.schemas import ModelOut
from nightowl import registry

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(session: SessionDep, tenant: TenantDep) -> list[ModelOut]:
    """The caller's own and the shared model versions, with their aliases (no server paths)."""
    aliases = registry.aliases_by_version(session, tenant_id=tenant)
    return [ModelOut(**registry.public_info(v, aliases.get(v.id, [])))
            for v in registry.list_versions(session, tenant_id=tenant)]
