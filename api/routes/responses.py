"""/v1/responses/{id}: a response read back (created by POST /v1/responses or a batch line)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from nightowl.openai import stored_responses
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep
from nightowl_api.lane import recorder

router = APIRouter(prefix="/responses", tags=["openai"])


@router.get("/{response_id}")
def retrieve_response(response_id: str, session: SessionDep, settings: SettingsDep,
                      tenant: TenantDep) -> dict[str, Any]:
    """One response: completed, incomplete, failed, or in_progress while it runs."""
    # The serving lane records what it answered in bulk a moment later: what this process
    # answered is written now, so a response can be read back as soon as it was returned.
    recorder(settings).flush()
    session.expire_all()
    return stored_responses.retrieve(session, response_id, tenant_id=tenant)
