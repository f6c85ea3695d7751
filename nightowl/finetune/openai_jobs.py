"""OpenAI's fine-tuning jobs (/v1/fine_tuning/jobs) over nightowl fine-tune runs.

A job is a training run: the same row, id, metrics and registered version that `nightowl runs`
and the dashboard show. This module only translates: OpenAI's request (model, training_file,
hyperparameters with "auto", suffix, seed, validation_file, metadata) into a FinetuneSpec, and
the run, its events and metric steps back into OpenAI's objects. What OpenAI's request says
and "auto" resolved to are kept on the run (dataset["openai"]) so the job reads back as sent.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nightowl.common import chat
from nightowl.common.config import Settings
from nightowl.common.enums import RunStatus, TaskKind
from nightowl.common.errors import InvalidInput, NightowlError, NotFound
from nightowl.common.specs import Hyperparameters
from nightowl.common.values import metadata_problem
from nightowl.finetune import openai_format
from nightowl.finetune import service as finetunes
from nightowl.platform.orm import ModelVersion, TrainingEvent, TrainingRun
from nightowl.platform.paging import keyset_page
from nightowl.registry import versions as registry
from nightowl.storage.files import get_file, local_path

ACCEPTED = ("model", "training_file", "validation_file", "hyperparameters", "suffix", "seed",
            "metadata", "method")
HYPER_NAMES = ("n_epochs", "batch_size", "learning_rate_multiplier")
AUTO = "auto"
# What "auto" resolves to: OpenAI's usual three epochs (within the operator's cap), a tenth of
# the examples per batch up to nightowl's default of 16, and nightowl's own learning rate.
AUTO_EPOCHS = 3
DEFAULT_LR = float(Hyperparameters.model_fields["lr"].default)
DEFAULT_BATCH = int(Hyperparameters.model_fields["batch_size"].default)
MAX_SUFFIX = 64
_SUFFIX = re.compile(r"^[A-Za-z0-9._-]+$")
STATUS = {RunStatus.QUEUED: "queued", RunStatus.RUNNING: "running",
          RunStatus.SUCCEEDED: "succeeded", RunStatus.FAILED: "failed",
          # OpenAI shows a cancelled job at once; the run stops at its next step.
          RunStatus.CANCELLING: "cancelled", RunStatus.CANCELLED: "cancelled"}
LOSS = "train/loss"


def create(*, session: Session, settings: Settings, tenant_id: str | None,
           body: dict[str, Any]) -> TrainingRun:
    """A fine-tune run from OpenAI's request; a bad field raises InvalidInput naming it."""
    for key in body:
        if key not in ACCEPTED:
            raise InvalidInput(f"parameter {key!r} is not supported by nightowl's fine-tuning "
                               "jobs; remove it from the request", param=key)
    hyper = _requested_hyperparameters(body)
    model = _required(body, "model")
    training_file = _required(body, "training_file")
    validation_file = _string(body, "validation_file")
    suffix = _string(body, "suffix")
    if suffix is not None and (len(suffix) > MAX_SUFFIX or not _SUFFIX.match(suffix)):
        raise InvalidInput(f"suffix must be up to {MAX_SUFFIX} letters, digits, '.', '_' or "
                           "'-'", param="suffix")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                             or not 0 <= seed <= 2**31 - 1):
        raise InvalidInput("seed must be an integer from 0 to 2147483647", param="seed")
    metadata = body.get("metadata")
    if metadata is not None and (problem := metadata_problem(metadata)) is not None:
        raise InvalidInput(problem, param="metadata")
    try:
        base = registry.resolve(session, model, tenant_id=tenant_id)
    except NightowlError as e:
        raise InvalidInput(f"{e} (see GET /v1/models)", param="model") from None
    template = chat.load_template(base.source)
    train = _rows(session, settings, tenant_id, training_file, base.kind, template,
                  "training_file")
    evals = None if validation_file is None else _rows(
        session, settings, tenant_id, validation_file, base.kind, template, "validation_file")
    resolved = _resolve(hyper, len(train), settings)
    # OpenAI draws a seed when none is given, and shows it so a run can be repeated.
    seed = int(seed if seed is not None else random.randrange(2**31))
    spec = finetunes.FinetuneSpec(
        kind=base.kind, base=model, train_rows=train, eval_rows=evals,
        hyperparameters={"epochs": resolved["n_epochs"], "batch_size": resolved["batch_size"],
                     "lr": DEFAULT_LR * resolved["learning_rate_multiplier"], "seed": seed},
        register_as=f"{base.name}-ft" + (f"-{suffix}" if suffix else ""), tenant_id=tenant_id,
        dataset_info={"training_file": training_file, "validation_file": validation_file,
                      "openai": {"model": model, "suffix": suffix, "hyperparameters": resolved,
                                 "metadata": metadata}})
    return finetunes.submit_finetune(session=session, settings=settings, spec=spec)


def _string(body: dict[str, Any], key: str) -> str | None:
    return None if body.get(key) is None else _required(body, key)


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{key} must be a non-empty string", param=key)
    return value


def _requested_hyperparameters(body: dict[str, Any]) -> dict[str, Any]:
    """`hyperparameters`, or the same under method.supervised (the newer form)."""
    hyper = body.get("hyperparameters")
    method = body.get("method")
    if method is not None:
        if not isinstance(method, dict) or method.get("type") != "supervised":
            raise InvalidInput("method.type must be 'supervised' (dpo and reinforcement "
                               "fine-tuning are not supported)", param="method")
        inner = (method.get("supervised") or {}).get("hyperparameters")
        hyper = inner if inner is not None else hyper
    hyper = hyper or {}
    if not isinstance(hyper, dict):
        raise InvalidInput("hyperparameters must be an object", param="hyperparameters")
    for key, value in hyper.items():
        where = f"hyperparameters.{key}"
        if key not in HYPER_NAMES:
            raise InvalidInput(f"{where} is not supported; use {', '.join(HYPER_NAMES)}",
                               param=where)
        integer = key != "learning_rate_multiplier"
        number = isinstance(value, int) if integer else isinstance(value, int | float)
        if value != AUTO and (not number or isinstance(value, bool) or value <= 0):
            kind = "a positive integer" if integer else "a positive number"
            raise InvalidInput(f"{where} must be {kind} or 'auto', got {value!r}", param=where)
    return hyper


def _resolve(hyper: dict[str, Any], rows: int, settings: Settings) -> dict[str, Any]:
    def given(key: str) -> Any:
        value = hyper.get(key, AUTO)
        return None if value == AUTO else value

    epochs = given("n_epochs") or min(AUTO_EPOCHS, max(1, int(settings.max_finetune_epochs)))
    batch = given("batch_size") or max(1, min(DEFAULT_BATCH, rows // 10))
    return {"n_epochs": int(epochs), "batch_size": int(batch),
            "learning_rate_multiplier": float(given("learning_rate_multiplier") or 1.0)}


def _rows(session: Session, settings: Settings, tenant_id: str | None, file_id: str,
          kind: TaskKind, template: chat.ChatTemplate | None, param: str
          ) -> list[dict[str, Any]]:
    try:
        row = get_file(session, file_id, tenant_id=tenant_id)
    except NotFound:
        raise InvalidInput(f"{param} {file_id!r} is not a file of yours (see GET /v1/files)",
                           param=param) from None
    if row.purpose != "fine-tune":
        raise InvalidInput(f"file {file_id} was uploaded with purpose {row.purpose!r}; "
                           "fine-tuning data needs purpose 'fine-tune'", param=param)
    return openai_format.read_rows(local_path(row, settings), kind, template, param=param)


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def job_object(session: Session, run: TrainingRun) -> dict[str, Any]:
    """The run as OpenAI's fine_tuning.job."""
    asked = run.dataset.get("openai") or {}
    hyper = asked.get("hyperparameters") or {
        "n_epochs": run.hyperparams.get("epochs", 1),
        "batch_size": run.hyperparams.get("batch_size", DEFAULT_BATCH),
        "learning_rate_multiplier": float(run.hyperparams.get("lr", DEFAULT_LR)) / DEFAULT_LR}
    result = session.get(ModelVersion, run.result_version_id) if run.result_version_id else None
    base = session.get(ModelVersion, run.base_version_id)
    return {
        "id": run.id, "object": "fine_tuning.job", "created_at": _ts(run.created_at),
        "finished_at": _ts(run.finished_at) if run.status != RunStatus.CANCELLING else None,
        "status": STATUS[run.status],
        "model": asked.get("model") or (base.ref if base else ""),
        "fine_tuned_model": result.ref if result is not None else None,
        "organization_id": run.tenant_id or "nightowl",
        "hyperparameters": hyper,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "seed": int(run.hyperparams.get("seed", 0)),
        "training_file": run.dataset.get("training_file") or "",
        "validation_file": run.dataset.get("validation_file"),
        "result_files": [], "trained_tokens": None, "estimated_finish": None,
        "integrations": [], "metadata": asked.get("metadata"),
        "error": {"code": "training_failed", "message": run.error, "param": None}
        if run.status == RunStatus.FAILED else None,
    }


def list_jobs(session: Session, *, tenant_id: str | None, after: str | None, limit: int
              ) -> tuple[list[TrainingRun], bool]:
    """The tenant's runs, newest first, a page after the run `after`."""
    stmt = select(TrainingRun)
    if tenant_id is not None:
        stmt = stmt.where(TrainingRun.tenant_id == tenant_id)
    anchor = None if after is None else finetunes.get_run(session, after, tenant_id=tenant_id)
    return keyset_page(session, stmt, TrainingRun.created_at, TrainingRun.id, anchor, limit)


def _message(event: TrainingEvent) -> str:
    d = event.details
    said: dict[str, Callable[[], str]] = {
        "queued": lambda: f"Fine-tuning job queued: {d.get('train_rows')} training and "
                          f"{d.get('eval_rows')} validation examples on {d.get('base')}",
        "started": lambda: f"Fine-tuning job started: {d.get('total_steps')} steps on "
                           f"{d.get('device')}",
        "checkpoint": lambda: f"Checkpoint saved at step {d.get('step')}",
        "eval": lambda: f"Evaluation at step {d.get('step')}: " + ", ".join(
            f"{k}={v:.4f}" for k, v in d.items() if k != "step" and isinstance(v, float)),
        "finished": lambda: f"Training finished after {d.get('steps')} steps",
        "registered": lambda: f"New fine-tuned model created: {d.get('version')}",
        "cancel_requested": lambda: "Fine-tuning job cancellation requested",
        "cancelled": lambda: f"Fine-tuning job cancelled at step {d.get('step')}",
        "error": lambda: f"Fine-tuning job failed: {d.get('message')}",
        "promotion": lambda: f"Promotion to @{d.get('alias')}: {d.get('reason')}",
    }
    return said[event.kind]() if event.kind in said else f"{event.kind}: {d}"


def events(session: Session, run: TrainingRun) -> list[dict[str, Any]]:
    """The run's events and each step's training loss, newest first (as OpenAI lists them)."""
    rows = finetunes.events_of(session, run.id)
    total = next((e.details.get("total_steps") for e in reversed(rows)
                  if e.kind == "started"), None)
    out: list[tuple[tuple[datetime, int, int], dict[str, Any]]] = [
        ((e.ts, 0, e.id), {"id": f"ftevent-{e.id}", "object": "fine_tuning.job.event",
                           "created_at": _ts(e.ts),
                           "level": "error" if e.kind == "error" else "info",
                           "message": _message(e), "type": "message", "data": e.details})
        for e in rows]
    steps: dict[int, dict[str, Any]] = {}
    for m in finetunes.metrics_of(session, run.id):
        steps.setdefault(m.step, {"ts": m.ts})[m.key] = m.value
    for step, values in steps.items():
        if LOSS not in values:
            continue
        data = {"step": step, "train_loss": values[LOSS], "total_steps": total,
                **{k.replace("/", "_"): v for k, v in values.items()
                   if k not in (LOSS, "ts")}}
        out.append(((values["ts"], 1, step), {
            "id": f"ftevent-{run.id}-step-{step}", "object": "fine_tuning.job.event",
            "created_at": _ts(values["ts"]), "level": "info",
            "message": f"Step {step}/{total or '?'}: training loss={values[LOSS]:.4f}",
            "type": "metrics", "data": data}))
    out.sort(key=lambda pair: pair[0], reverse=True)
    return [event for _, event in out]


def page(items: list[dict[str, Any]], after: str | None, limit: int
         ) -> tuple[list[dict[str, Any]], bool]:
    start = 0
    if after is not None:
        at = next((i for i, e in enumerate(items) if e["id"] == after), None)
        if at is None:
            raise InvalidInput(f"after={after!r} is not an id in this list", param="after")
        start = at + 1
    return items[start:start + limit], len(items) > start + limit


def checkpoints(session: Session, run: TrainingRun) -> list[dict[str, Any]]:
    """Checkpoints the run saved, newest first, with the training loss at each step. A
    succeeded run's final model is its last checkpoint, named as the registered version."""
    result = session.get(ModelVersion, run.result_version_id) if run.result_version_id else None
    losses = {m.step: m.value for m in finetunes.metrics_of(session, run.id, LOSS)}
    saved: dict[int, tuple[str, datetime]] = {}
    for e in finetunes.events_of(session, run.id):
        step = int(e.details.get("step", e.details.get("steps", 0)) or 0)
        if e.kind == "checkpoint":
            saved[step] = (f"{run.register_as}:{run.id}:step-{step}", e.ts)
        elif e.kind == "finished" and result is not None:
            saved[step] = (result.ref, e.ts)
    out = []
    for step in sorted(saved, reverse=True):
        name, ts = saved[step]
        metrics: dict[str, Any] = {"step": float(step)}
        if step in losses:
            metrics["train_loss"] = losses[step]
        out.append({"id": f"ftckpt-{run.id}-{step}", "object": "fine_tuning.job.checkpoint",
                    "created_at": _ts(ts), "fine_tuning_job_id": run.id,
                    "fine_tuned_model_checkpoint": name, "step_number": step,
                    "metrics": metrics})
    return out
