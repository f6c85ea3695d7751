"""/v1/models: the models a caller can name, as OpenAI's list and model objects."""

from __future__ import annotations

from fastapi import APIRouter

from nightowl.openai import model_list
from nightowl_api.deps import SessionDep, TenantDep
from nightowl_api.openai_schemas import Model, ModelList

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(session: SessionDep, tenant: TenantDep) -> ModelList:
    """Every model name, alias and pinned version you can use, with the kind of work it does."""
    return ModelList(data=[Model(**m) for m in model_list.list_models(session, tenant_id=tenant)])


@router.get("/{model_id:path}")
def get_model(model_id: str, session: SessionDep, tenant: TenantDep) -> Model:
    """One model: what a name, NAME@ALIAS or NAME@vN resolves to now."""
    return Model(**model_list.get_model(session, model_id, tenant_id=tenant))
