"""What a fine-tune run looks like to its users: one model for the HTTP API and the command
line, with its metric points and its events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from nightowl.common.enums import RunStatus, TaskKind
from nightowl.finetune import service as finetunes
from nightowl.platform.orm import TrainingRun
from nightowl.registry.outcome import run_outcome, version_refs


class RunView(BaseModel):
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


class MetricView(BaseModel):
    step: int
    key: str
    value: float
    ts: str


class EventView(BaseModel):
    kind: str
    details: dict[str, Any]
    ts: str


def run_views(session: Session, runs: Sequence[TrainingRun]) -> list[RunView]:
    refs = version_refs(session, [i for r in runs for i in (r.base_version_id,
                                                             r.result_version_id)])
    return [RunView(
        **run_outcome(run, refs),
        id=run.id, kind=run.kind, status=run.status, priority=run.priority,
        base_version_id=run.base_version_id,
        dataset=run.dataset, hyperparameters=run.hyperparams, register_as=run.register_as,
        promote_to=run.promote_to, gate=run.gate_metric,
        result_version_id=run.result_version_id, promotion=run.promotion, error=run.error,
        attempts=run.attempts, created_at=run.created_at.isoformat(),
        finished_at=run.finished_at.isoformat() if run.finished_at else None,
    ) for run in runs]


def run_view(session: Session, run: TrainingRun) -> RunView:
    return run_views(session, [run])[0]


def run_metrics(session: Session, run_id: str, key: str | None = None, *,
                tenant_id: str | None = None) -> list[MetricView]:
    """The run's metric points by step (only `key`'s, if given); NotFound for another tenant's."""
    finetunes.get_run(session, run_id, tenant_id=tenant_id)
    return [MetricView(step=m.step, key=m.key, value=m.value, ts=m.ts.isoformat())
            for m in finetunes.metrics_of(session, run_id, key)]


def run_events(session: Session, run_id: str, *,
               tenant_id: str | None = None) -> list[EventView]:
    """The run's event log; NotFound for another tenant's run."""
    finetunes.get_run(session, run_id, tenant_id=tenant_id)
    return [EventView(kind=e.kind, details=e.details, ts=e.ts.isoformat())
            for e in finetunes.events_of(session, run_id)]
