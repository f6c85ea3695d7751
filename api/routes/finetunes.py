"""/v1/finetunes: fine-tune runs, their metric series and event logs."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field

from nightowl.common.specs import FinetuneRequest
from nightowl.finetune import data as finetune_data
from nightowl.finetune import service as finetunes
from nightowl.finetune.views import (
    EventView,
    MetricView,
    RunView,
    run_events,
    run_metrics,
    run_view,
    run_views,
)
from nightowl.storage.files import get_file, local_path
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep

router = APIRouter(prefix="/finetunes", tags=["finetunes"])


class FinetuneCreate(FinetuneRequest):
    """A fine-tune's request (nightowl.common.specs.FinetuneRequest) with its data as file ids."""

    # A misspelt field ("train", "hyperparams") must not queue a run without it.
    model_config = ConfigDict(extra="forbid")

    training_file: str = Field(description="File id of the JSONL training data (/v1/files)")
    validation_file: str | None = Field(default=None, description="File id of eval data")


@router.post("", status_code=201)
def create_finetune(body: FinetuneCreate, session: SessionDep, settings: SettingsDep,
                    tenant: TenantDep) -> RunView:
    """Queue a fine-tune from uploaded training (and optional validation) files."""
    # The request's values before its files are read, as from the CLI.
    finetunes.check_request(settings, body)
    train = get_file(session, body.training_file, tenant_id=tenant)
    rows = finetune_data.read_rows(local_path(train, settings), body.kind)
    eval_rows = None
    if body.validation_file:
        val = get_file(session, body.validation_file, tenant_id=tenant)
        eval_rows = finetune_data.read_rows(local_path(val, settings), body.kind,
                                            what="validation file")
    run = finetunes.submit_finetune(session=session, settings=settings, spec=(
        finetunes.FinetuneSpec(
            **body.model_dump(include=set(FinetuneRequest.model_fields)), train_rows=rows,
            eval_rows=eval_rows, tenant_id=tenant,
            dataset_info={"training_file": body.training_file,
                          "validation_file": body.validation_file},
        )))
    return run_view(session, run)


@router.get("")
def list_finetunes(session: SessionDep, tenant: TenantDep,
                   limit: int = Query(20, ge=1, le=1000)) -> list[RunView]:
    """Fine-tune runs, newest first."""
    return run_views(session, finetunes.list_runs(session, tenant_id=tenant, limit=limit))


@router.get("/{run_id}")
def get_finetune(run_id: str, session: SessionDep, tenant: TenantDep) -> RunView:
    """One run: status, result version and the promotion decision."""
    return run_view(session, finetunes.get_run(session, run_id, tenant_id=tenant))


@router.post("/{run_id}/cancel")
def cancel_finetune(run_id: str, session: SessionDep, tenant: TenantDep) -> RunView:
    """Cancel: a running fine-tune checkpoints and stops at its next step."""
    return run_view(session, finetunes.cancel_run(session, run_id, tenant_id=tenant))


@router.get("/{run_id}/metrics")
def finetune_metrics(run_id: str, session: SessionDep, tenant: TenantDep,
                     key: str | None = None) -> list[MetricView]:
    """The run's metric series (train/loss, lr, grad_norm, eval/...), by step."""
    return run_metrics(session, run_id, key, tenant_id=tenant)


@router.get("/{run_id}/events")
def finetune_events(run_id: str, session: SessionDep, tenant: TenantDep) -> list[EventView]:
    """The run's event log: queued, started, eval, checkpoint, promotion, finished, error."""
    return run_events(session, run_id, tenant_id=tenant)
