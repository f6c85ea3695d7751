"""The fine-tune service: submit, lease, metrics, events, registration and the promotion gate."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    SkipValidation,
    ValidationError,
    model_validator,
)
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import FiringStatus, Queue, RunStatus, TaskKind, TaskName
from nightowl.common.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from nightowl.common.private import private_dir
from nightowl.common.specs import (
    DEFAULT_GATE,
    LOWER_IS_BETTER,
    FinetuneRequest,
    check_hyperparams,
)
from nightowl.common.values import invalid
from nightowl.finetune import data as finetune_data
from nightowl.jobs import quotas
from nightowl.platform.celery_app import send
from nightowl.platform.db import insert_ignoring_conflicts
from nightowl.platform.orm import (
    ModelVersion,
    ScheduleRun,
    TrainingEvent,
    TrainingMetric,
    TrainingRun,
    new_id,
    utcnow,
)
from nightowl.registry import versions as registry
from nightowl.storage import run_artifacts

log = logging.getLogger(__name__)



class FinetuneSpec(FinetuneRequest):
    """A fine-tune to queue: the request every door fills (its fields, ranges and defaults are
    nightowl.common.specs.FinetuneRequest's), its data as rows, and who submits it."""

    # Rows as read and checked by nightowl.finetune.data; a copy per row would cost more than
    # the check buys.
    train_rows: SkipValidation[list[dict[str, Any]]]
    # None: split eval_split of the training rows off instead.
    eval_rows: SkipValidation[list[dict[str, Any]] | None] = None
    tenant_id: str | None = None
    dataset_info: dict[str, Any] = Field(default_factory=dict)
    schedule_run_id: int | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _refused(cls, data: Any,
                 handler: ModelWrapValidatorHandler[FinetuneSpec]) -> FinetuneSpec:
        try:
            return handler(data)
        except ValidationError as e:
            raise invalid(e) from None


def run_dir(settings: Settings, run_id: str) -> Path:
    """A run's folder: 0700 like the folders above it, since it holds a tenant's data."""
    private_dir(settings.artifacts_path / "runs")
    return private_dir(settings.artifacts_path / "runs" / run_id)


def _folder_bytes(path: str) -> int | None:
    folder = Path(path)
    if not folder.is_dir():
        return None  # in a remote store only: its size is not known here
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def get_run(session: Session, run_id: str, *, tenant_id: str | None = None) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None or (tenant_id is not None and run.tenant_id != tenant_id):
        raise NotFound(f"no fine-tune run {run_id!r}; see `nightowl runs list`")
    return run


def check_request(settings: Settings, request: FinetuneRequest) -> None:
    """What the request's own type cannot check: the training budget under the operator's
    bounds. Called before its data is read or its base looked up, so a bad value is named
    first whichever door it came through."""
    check_hyperparams(request.hyperparameters, settings)
    if request.promote_to is not None:
        registry.check_alias(request.promote_to)


def submit_finetune(*, session: Session, settings: Settings, spec: FinetuneSpec) -> TrainingRun:
    check_request(settings, spec)
    base = registry.resolve(session, spec.base, tenant_id=spec.tenant_id)
    if base.kind != spec.kind:
        raise InvalidInput(f"base model {base.ref} is a {base.kind.value} model, "
                           f"not {spec.kind.value}")
    # Into the tenant's own space, even for a shared base: checked now, not after training.
    register_as = spec.register_as or base.name
    registry.check_name(session, register_as, spec.kind, tenant_id=spec.tenant_id)
    gate = spec.gate or DEFAULT_GATE[spec.kind]
    seed = int(spec.hyperparameters.get("seed", 0))
    train_rows, eval_rows = spec.train_rows, spec.eval_rows
    if eval_rows is None:
        train_rows, eval_rows = finetune_data.split(train_rows, spec.eval_split, seed)
    labels = None
    if spec.kind == TaskKind.SENTIMENT:
        labels = sorted({r["label"] for r in train_rows})
        finetune_data.check_eval_labels(train_rows, eval_rows)
    run = TrainingRun(
        id=new_id("run"),
        tenant_id=spec.tenant_id,
        kind=spec.kind,
        base_version_id=base.id,
        dataset={**spec.dataset_info, "train_rows": len(train_rows),
                 "eval_rows": len(eval_rows), "labels": labels},
        hyperparams=spec.hyperparameters,
        status=RunStatus.QUEUED,
        register_as=register_as,
        promote_to=spec.promote_to,
        gate_metric=gate,
        schedule_run_id=spec.schedule_run_id,
        priority=spec.priority,
    )
    folder = run_dir(settings, run.id)
    finetune_data.write_rows(folder / "train.jsonl", train_rows)
    finetune_data.write_rows(folder / "eval.jsonl", eval_rows)
    run.data_bytes = sum(p.stat().st_size for p in (folder / "train.jsonl", folder / "eval.jsonl"))
    try:
        quotas.admit_run(session, spec.tenant_id, data_bytes=run.data_bytes)
    except QuotaExceeded:
        shutil.rmtree(folder, ignore_errors=True)  # nothing stored, as for a refused job
        raise
    run_artifacts.push_inputs(settings, run.id, folder)
    session.add(run)
    session.flush()
    add_event(session, run.id, "queued", {"base": base.ref, "train_rows": len(train_rows),
                                          "eval_rows": len(eval_rows)})
    session.commit()
    enqueue(run.id)
    return run


def enqueue(run_id: str) -> None:
    try:
        send(TaskName.RUN_FINETUNE, [run_id], queue=Queue.TRAIN.value)
    except Exception as e:  # SQL holds the run; the reaper sends it when the broker is back
        log.warning("broker unavailable, run %s waits for the reaper: %s", run_id, e)


def add_event(session: Session, run_id: str, kind: str, details: dict[str, Any]) -> None:
    session.add(TrainingEvent(run_id=run_id, kind=kind, details=details))


def claim_run(session: Session, run_id: str, *, owner: str, lease_seconds: int
              ) -> TrainingRun | None:
    now = utcnow()
    result = session.execute(
        update(TrainingRun)
        .where(
            TrainingRun.id == run_id,
            or_(
                TrainingRun.status == RunStatus.QUEUED,
                (TrainingRun.status == RunStatus.RUNNING) & (TrainingRun.lease_expires_at < now),
            ),
        )
        .values(status=RunStatus.RUNNING, lease_owner=owner, attempts=TrainingRun.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    session.commit()
    run = session.get(TrainingRun, run_id)
    assert run is not None
    session.refresh(run)
    return run


def heartbeat(session: Session, run_id: str, *, owner: str, lease_seconds: int) -> RunStatus:
    """Renew the lease; returns the run's status so the loop can see a cancel."""
    session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    status = session.scalar(select(TrainingRun.status).where(TrainingRun.id == run_id))
    session.commit()
    assert status is not None
    return status


def record_metrics(session: Session, run_id: str, step: int, values: dict[str, float]) -> None:
    """Upsert-by-ignore on (run, step, key): a resumed run never writes a step twice."""
    rows = [{"run_id": run_id, "step": step, "key": k, "value": float(v), "ts": utcnow()}
            for k, v in values.items()]
    if not rows:
        return
    insert_ignoring_conflicts(session, TrainingMetric, rows, ["run_id", "step", "key"])
    session.commit()


def cancel_run(session: Session, run_id: str, *, tenant_id: str | None = None) -> TrainingRun:
    run = get_run(session, run_id, tenant_id=tenant_id)
    if run.status.terminal:
        raise Conflict(f"run {run_id} is already {run.status.value}")
    if run.status == RunStatus.QUEUED:
        run.status, run.finished_at = RunStatus.CANCELLED, utcnow()
        note_schedule_run(session, run, FiringStatus.CANCELLED, {"cancelled_at_step": 0})
    else:
        run.status = RunStatus.CANCELLING
    add_event(session, run.id, "cancel_requested", {})
    session.commit()
    return run


def fail_run(session: Session, run_id: str, error: str) -> None:
    run = session.get(TrainingRun, run_id)
    assert run is not None
    run.status, run.error, run.finished_at = RunStatus.FAILED, error[:4000], utcnow()
    run.lease_owner = None
    add_event(session, run_id, "error", {"message": error[:4000]})
    note_schedule_run(session, run, FiringStatus.FAILED, {"error": error[:4000]})
    session.commit()


def mark_cancelled(session: Session, run_id: str, step: int) -> None:
    run = session.get(TrainingRun, run_id)
    assert run is not None
    run.status, run.finished_at, run.lease_owner = RunStatus.CANCELLED, utcnow(), None
    add_event(session, run_id, "cancelled", {"step": step})
    note_schedule_run(session, run, FiringStatus.CANCELLED, {"cancelled_at_step": step})
    session.commit()


def finish_run(
    session: Session,
    run_id: str,
    *,
    model_path: str,
    sha256: str,
    metrics: dict[str, float],
    incumbent_metrics: dict[str, float] | None,
) -> ModelVersion:
    """Register the new version and apply the promotion gate; every decision is recorded."""
    run = session.get(TrainingRun, run_id)
    assert run is not None and run.register_as is not None
    version = registry.register(
        session, name=run.register_as, kind=run.kind, source=model_path, sha256=sha256,
        tenant_id=run.tenant_id, base_version_id=run.base_version_id, training_run_id=run.id,
        metrics=metrics,
    )
    version.bytes = _folder_bytes(model_path)  # counted by the tenant's stored-bytes quota
    run.result_version_id = version.id
    if run.promote_to:
        run.promotion = gate_decision(session, run, version, metrics, incumbent_metrics)
        add_event(session, run.id, "promotion", run.promotion)
    run.status, run.finished_at, run.lease_owner = RunStatus.SUCCEEDED, utcnow(), None
    add_event(session, run.id, "registered", {"version": version.ref, "metrics": metrics})
    note_schedule_run(session, run, FiringStatus.SUCCEEDED, {
        "version": version.ref, "metrics": metrics, "promotion": run.promotion})
    session.commit()
    return version


def note_schedule_run(session: Session, run: TrainingRun, status: FiringStatus,
                      outcome: dict[str, Any]) -> None:
    """A scheduled run's end goes on its firing too: `schedule history` is the nightly log."""
    if run.schedule_run_id is None:
        return
    firing = session.get(ScheduleRun, run.schedule_run_id)
    if firing is None or firing.training_run_id not in (None, run.id):
        return  # the schedule was removed, and its history with it
    firing.status = status.value
    firing.outcome = {**(firing.outcome or {}), **outcome}


def gate_decision(session: Session, run: TrainingRun, version: ModelVersion,
                  metrics: dict[str, float], incumbent_metrics: dict[str, float] | None
                  ) -> dict[str, Any]:
    assert run.promote_to is not None and run.gate_metric is not None
    metric = run.gate_metric
    holder = registry.alias_holder(session, version.name, run.promote_to,
                                   tenant_id=run.tenant_id)
    candidate = metrics.get(metric)
    decision: dict[str, Any] = {
        "alias": run.promote_to, "metric": metric, "candidate_version": version.ref,
        "candidate": candidate, "incumbent_version": holder.ref if holder else None,
        "incumbent": (incumbent_metrics or {}).get(metric) if holder else None,
        # Every number the gate measured for the incumbent on this run's eval set: what
        # `models compare` shows for a version that has none of its own on this set.
        "incumbent_metrics": dict(incumbent_metrics or {}) if holder else {},
    }
    if candidate is None:
        decision.update(promoted=False, reason=f"the run reported no {metric}")
    elif holder is None:
        registry.set_alias(session, version, run.promote_to, tenant_id=run.tenant_id)
        decision.update(promoted=True, reason="no incumbent held the alias")
    elif decision["incumbent"] is None:
        decision.update(promoted=False, reason=f"the incumbent has no {metric} on this eval set")
    else:
        better = (candidate < decision["incumbent"] if metric in LOWER_IS_BETTER
                  else candidate > decision["incumbent"])
        if better:
            registry.set_alias(session, version, run.promote_to, tenant_id=run.tenant_id)
        decision.update(promoted=better, reason=(
            f"{metric} {candidate:.4f} {'beats' if better else 'does not beat'} "
            f"{decision['incumbent']:.4f} of {holder.ref} on the same eval set"))
    return decision


def incumbent_for(session: Session, run: TrainingRun) -> ModelVersion | None:
    if not run.promote_to or not run.register_as:
        return None
    return registry.alias_holder(session, run.register_as, run.promote_to,
                                 tenant_id=run.tenant_id)


def list_runs(session: Session, *, tenant_id: str | None = None, limit: int = 50
              ) -> list[TrainingRun]:
    stmt = select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(limit)
    if tenant_id is not None:
        stmt = stmt.where(TrainingRun.tenant_id == tenant_id)
    return list(session.scalars(stmt))


def metrics_of(session: Session, run_id: str, key: str | None = None) -> list[TrainingMetric]:
    stmt = select(TrainingMetric).where(TrainingMetric.run_id == run_id).order_by(
        TrainingMetric.step, TrainingMetric.key)
    if key is not None:
        stmt = stmt.where(TrainingMetric.key == key)
    return list(session.scalars(stmt))


def events_of(session: Session, run_id: str) -> list[TrainingEvent]:
    return list(session.scalars(select(TrainingEvent).where(TrainingEvent.run_id == run_id)
                                .order_by(TrainingEvent.id)))
