"""/v1/fine_tuning/jobs: OpenAI's fine-tuning jobs API over nightowl's fine-tune runs (the same
runs /v1/finetunes, `nightowl runs` and the dashboard show)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query

from nightowl.finetune import openai_jobs
from nightowl.finetune import service as finetunes
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])
_AFTER = Query(None, description="Last id of the previous page")
_LIMIT = Query(20, ge=1, le=100)
_BODY = Body(..., description="OpenAI's fine-tuning job request")


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": more}


@router.post("")
def create_job(session: SessionDep, settings: SettingsDep, tenant: TenantDep,
               body: dict[str, Any] = _BODY) -> dict[str, Any]:
    """Fine-tune `model` on a file uploaded with purpose fine-tune (chat or prompt/completion
    lines); the result is a model name this tenant can use at once."""
    run = openai_jobs.create(session=session, settings=settings, tenant_id=tenant, body=body)
    return openai_jobs.job_object(session, run)


@router.get("")
def list_jobs(session: SessionDep, tenant: TenantDep, after: str | None = _AFTER,
              limit: int = _LIMIT) -> dict[str, Any]:
    """Your fine-tuning jobs, newest first."""
    runs, more = openai_jobs.list_jobs(session, tenant_id=tenant, after=after, limit=limit)
    return _page([openai_jobs.job_object(session, r) for r in runs], more)


@router.get("/{job_id}")
def retrieve_job(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """One job: status, resolved hyperparameters, fine_tuned_model once it succeeded."""
    return openai_jobs.job_object(session, finetunes.get_run(session, job_id, tenant_id=tenant))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """Cancel: a queued job never starts, a running one stops at its next step."""
    return openai_jobs.job_object(session, finetunes.cancel_run(session, job_id,
                                                                tenant_id=tenant))


@router.get("/{job_id}/events")
def list_events(job_id: str, session: SessionDep, tenant: TenantDep,
                after: str | None = _AFTER, limit: int = _LIMIT) -> dict[str, Any]:
    """The job's events, newest first: queued, started, each step's training loss,
    evaluations, checkpoints, the model it created."""
    run = finetunes.get_run(session, job_id, tenant_id=tenant)
    return _page(*openai_jobs.page(openai_jobs.events(session, run), after, limit))


@router.get("/{job_id}/checkpoints")
def list_checkpoints(job_id: str, session: SessionDep, tenant: TenantDep,
                     after: str | None = _AFTER, limit: int = Query(10, ge=1, le=100)
                     ) -> dict[str, Any]:
    """The job's checkpoints, newest first, with the training loss at each."""
    run = finetunes.get_run(session, job_id, tenant_id=tenant)
    return _page(*openai_jobs.page(openai_jobs.checkpoints(session, run), after, limit))
