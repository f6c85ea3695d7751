"""/v1/finetunes: fine-tune runs, their metric series and event logs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import object_session

from nightowl.common.enums import RunStatus, TaskKind
from nightowl.common.specs import FinetuneRequest
from nightowl.finetune import data as finetune_data
from nightowl.finetune import service as finetunes
from nightowl.platform.orm import TrainingRun
from nightowl.registry.outcome import run_outcome, version_refs
from nightowl.storage.files import get_file, local_path
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep

router = APIRouter(prefix="/v1/finetunes", tags=["finetunes"])


class FinetuneCreate(FinetuneRequest):
    """A fine-tune's request (nightowl.common.specs.FinetuneRequest) with its data as file ids."""

    training_file: str = Field(description="File id of the JSONL training data (/v1/files)")
    validation_file: str | None = Field(default=None, description="File id of eval data")


class FinetuneOut(BaseModel):
    id: str
    kind: TaskKind
    status: RunStatus
    priority: int
    base_version_id: int
    dataset: dict[str, Any]
    hyperparameters: dict[str, Any]
    register_as: str | None
    promote_to: str | None
    gate: str | None
    result_version_id: int | None
    base_version: str | None = Field(default=None, description="The base as NAME@vN")
    result_version: str | None = Field(default=None,
                                       description="The version the run registered, NAME@vN")
    promotion: dict[str, Any] | None
    promotion_summary: str = Field(default="", description="The gate's decision in words, "
                                   "with both figures")
    error: str | None
    attempts: int
    created_at: str
    finished_at: str | None


class MetricOut(BaseModel):
    step: int
    key: str
    value: float
    ts: str


class EventOut(BaseModel):
    kind: str
    details: dict[str, Any]
    ts: str


def run_out(run: TrainingRun) -> FinetuneOut:
    session = object_session(run)
    refs = version_refs(session, [run.base_version_id, run.result_version_id]) if session \
        else {}
    return FinetuneOut(
        **run_outcome(run, refs),
        id=run.id, kind=run.kind, status=run.status, priority=run.priority,
        base_version_id=run.base_version_id,
        dataset=run.dataset, hyperparameters=run.hyperparams, register_as=run.register_as,
        promote_to=run.promote_to, gate=run.gate_metric,
        result_version_id=run.result_version_id, promotion=run.promotion, error=run.error,
        attempts=run.attempts, created_at=run.created_at.isoformat(),
        finished_at=run.finished_at.isoformat() if run.finished_at else None,
    )


@router.post("", status_code=201)
def create_finetune(body: FinetuneCreate, session: SessionDep, settings: SettingsDep,
                    tenant: TenantDep) -> FinetuneOut:
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
    return run_out(run)


@router.get("")
def list_finetunes(session: SessionDep, tenant: TenantDep,
                   limit: int = Query(20, ge=1, le=1000)) -> list[FinetuneOut]:
    """Fine-tune runs, newest first."""
    return [run_out(r) for r in finetunes.list_runs(session, tenant_id=tenant, limit=limit)]


@router.get("/{run_id}")
def get_finetune(run_id: str, session: SessionDep, tenant: TenantDep) -> FinetuneOut:
    """One run: status, result version and the promotion decision."""
    return run_out(finetunes.get_run(session, run_id, tenant_id=tenant))


@router.post("/{run_id}/cancel")
def cancel_finetune(run_id: str, session: SessionDep, tenant: TenantDep) -> FinetuneOut:
    """Cancel: a running fine-tune checkpoints and stops at its next step."""
    return run_out(finetunes.cancel_run(session, run_id, tenant_id=tenant))


@router.get("/{run_id}/metrics")
def finetune_metrics(run_id: str, session: SessionDep, tenant: TenantDep,
                     key: str | None = None) -> list[MetricOut]:
    """The run's metric series (train/loss, lr, grad_norm, eval/...), by step."""
    finetunes.get_run(session, run_id, tenant_id=tenant)
    return [MetricOut(step=m.step, key=m.key, value=m.value, ts=m.ts.isoformat())
            for m in finetunes.metrics_of(session, run_id, key)]


@router.get("/{run_id}/events")
def finetune_events(run_id: str, session: SessionDep, tenant: TenantDep) -> list[EventOut]:
    """The run's event log: queued, started, eval, checkpoint, promotion, finished, error."""
    finetunes.get_run(session, run_id, tenant_id=tenant)
    return [EventOut(kind=e.kind, details=e.details, ts=e.ts.isoformat())
            for e in finetunes.events_of(session, run_id)]
