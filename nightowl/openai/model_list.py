"""The models a caller can name, as OpenAI's model objects: every name (its latest version),
every alias and every pinned version, each with the kind of work it does, its metrics and
where it came from.

Registry paths (where weights live on the server) are never shown.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from nightowl.common.errors import ModelNotFound, NightowlError
from nightowl.openai.lines import ENDPOINTS
from nightowl.platform.auth import owner_names
from nightowl.platform.orm import ModelVersion
from nightowl.registry import outcome
from nightowl.registry import versions as registry

OWNER = "nightowl"


def _endpoints(version: ModelVersion) -> list[str]:
    return [url for url, kind in ENDPOINTS.items() if kind == version.kind]


def model_object(model_id: str, version: ModelVersion, bases: dict[int, str],
                 owners: dict[str | None, str]) -> dict[str, Any]:
    """`bases`: name@vN of base version ids (outcome.version_refs), for the lineage; `owners`:
    tenant names by id (auth.owner_names)."""
    # Shared models are the operator's; a tenant's own ones name it by its tenant's name.
    owner = OWNER if version.tenant_id is None else owners.get(version.tenant_id,
                                                               version.tenant_id)
    base = bases.get(version.base_version_id) if version.base_version_id else None
    return {"id": model_id, "object": "model", "created": int(version.created_at.timestamp()),
            "owned_by": owner, "kind": version.kind.value, "version": version.ref,
            "endpoints": _endpoints(version), "metrics": dict(version.metrics),
            "base_version": base, "training_run_id": version.training_run_id}


def list_models(session: Session, *, tenant_id: str | None) -> list[dict[str, Any]]:
    """Names first (they follow the newest version), then aliases, then pinned versions: the
    tenant's own models and the shared ones."""
    versions = registry.list_versions(session, tenant_id=tenant_id)
    aliases = registry.aliases_by_version(session, tenant_id=tenant_id)
    latest: dict[str, ModelVersion] = {}
    for v in versions:  # ordered by name, version: the last one seen is the newest
        latest[v.name] = v
    bases = outcome.version_refs(session, [v.base_version_id for v in versions])
    owners = owner_names(session, [v.tenant_id for v in versions])
    out = [model_object(name, v, bases, owners) for name, v in latest.items()]
    out += [model_object(f"{v.name}@{alias}", v, bases, owners) for v in versions
            for alias in aliases.get(v.id, [])]
    out += [model_object(v.ref, v, bases, owners) for v in versions]
    return out


def get_model(session: Session, model_id: str, *, tenant_id: str | None) -> dict[str, Any]:
    try:
        version = registry.resolve(session, model_id, tenant_id=tenant_id)
    except NightowlError:
        raise ModelNotFound(f"no model {model_id!r}; list them with GET /v1/models") from None
    return model_object(model_id, version,
                        outcome.version_refs(session, [version.base_version_id]),
                        owner_names(session, [version.tenant_id]))
