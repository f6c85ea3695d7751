"""What a schedule submits each time it fires: job and fine-tune templates.

A template is checked when it is saved the way its submission will check it (model, files,
rows), so a typo shows up at `schedule add` and not at 02:00. Submission re-reads everything
at each firing: the input file or the labelled rows may have changed since.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.common.enums import (
    KIND_ALIASES,
    FiringStatus,
    ItemStatus,
    OnInvalid,
    ScheduleTarget,
    TaskKind,
)
from nightowl.common.errors import InvalidInput, NotFound
from nightowl.common.specs import (
    DEFAULT_EVAL_SPLIT,
    FinetuneRequest,
    JobRequest,
    check_hyperparams,
)
from nightowl.common.values import PRIORITY_DEFAULT, invalid
from nightowl.finetune import data as finetune_data
from nightowl.finetune import service as finetunes
from nightowl.jobs import intake
from nightowl.jobs.service import JobSpec, check_spec
from nightowl.platform.auth import operator_tenant_id
from nightowl.platform.orm import Job, JobItem, ModelVersion, Schedule, ScheduleRun
from nightowl.registry import versions as registry
from nightowl.storage.files import get_file, local_path

log = logging.getLogger(__name__)

# The request's fields, with its data named as a file, an uploaded file or a query (train) and
# a file or a split (eval).
FINETUNE_KEYS = (*(k for k in FinetuneRequest.model_fields if k != "eval_split"),
                 "train", "eval")
LAST_SUCCESS = "last_success"
# A job's input is re-read in full at every firing; at save time a sample catches a wrong file
# without reading millions of lines.
CHECK_LINES = 1000


def _bad(where: str, message: str) -> InvalidInput:
    return InvalidInput(f"spec.{where}: {message}", param=f"spec.{where}")


def _as_spec(where: str, check: Callable[..., object], *args: Any) -> None:
    """A core rule's refusal, named as the template's field."""
    try:
        check(*args)
    except InvalidInput as e:
        raise _bad(where, str(e)) from None


def _kind(spec: dict[str, Any]) -> TaskKind:
    value = spec.get("kind")
    if not isinstance(value, str) or value not in KIND_ALIASES:
        raise _bad("kind", f"{value!r} is not a kind; use one of "
                           f"{', '.join(k.value for k in TaskKind)}")
    return TaskKind(KIND_ALIASES[value])


def _unknown(spec: dict[str, Any], known: tuple[str, ...], target: str) -> None:
    extra = sorted(set(spec) - set(known))
    if extra:
        raise InvalidInput(f"unknown {target} spec field(s) {extra}; known: {', '.join(known)}",
                           param=f"spec.{extra[0]}")


def _model(session: Session, ref: object, kind: TaskKind, where: str,
           tenant_id: str | None) -> ModelVersion:
    if not isinstance(ref, str) or not ref:
        raise _bad(where, "a model reference (NAME, NAME@ALIAS or NAME@vN) is required")
    try:
        version = registry.resolve(session, ref, tenant_id=tenant_id)
    except NotFound as e:
        # At save time an unknown model is a mistake in the request, not a missing resource.
        raise _bad(where, str(e)) from e
    if version.kind != kind:
        raise _bad(where, f"{version.ref} is a {version.kind.value} model, not {kind.value}")
    return version


def _file(session: Session, ref: dict[str, Any], *, path_key: str, id_key: str, where: str,
          tenant_id: str | None, allow_paths: bool) -> dict[str, str]:
    """A file named by server path (CLI) or uploaded file id (API); returned normalised."""
    if (path_key in ref) == (id_key in ref):
        raise _bad(where, f"give exactly one of {path_key!r} or {id_key!r}")
    if id_key in ref:
        try:
            row = get_file(session, str(ref[id_key]), tenant_id=tenant_id)
        except NotFound as e:
            raise _bad(f"{where}.{id_key}", f"{e}; upload it with POST /v1/files") from e
        return {id_key: row.id}
    if not allow_paths:
        # A server path would let an API caller read any file the server can.
        raise _bad(where, f"name uploaded files by {id_key!r}; server paths are CLI-only")
    raw = ref[path_key]
    if not isinstance(raw, str) or not raw:
        raise _bad(f"{where}.{path_key}", "must be a file path")
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise _bad(f"{where}.{path_key}", f"file {raw!r} does not exist")
    # Absolute, because beat and the workers do not share the caller's working directory.
    return {path_key: str(path)}


def file_path(session: Session, ref: dict[str, Any], *, path_key: str, id_key: str,
              tenant_id: str | None) -> Path:
    if id_key in ref:
        return local_path(get_file(session, ref[id_key], tenant_id=tenant_id), get_settings())
    path = Path(ref[path_key])
    if not path.is_file():
        raise InvalidInput(f"file {str(path)!r} does not exist (any more)")
    return path


def validate(session: Session, settings: Settings, *, target: str, spec: object,
             tenant_id: str | None, allow_paths: bool) -> dict[str, Any]:
    """The spec, checked like its submission will be, with files made absolute."""
    if target not in {t.value for t in ScheduleTarget}:
        raise InvalidInput(f"target {target!r} must be one of "
                           f"{', '.join(t.value for t in ScheduleTarget)}", param="target")
    if not isinstance(spec, dict):
        raise InvalidInput("the spec must be a JSON object", param="spec")
    if target == ScheduleTarget.JOB:
        return _job_spec(session, settings, spec, tenant_id, allow_paths)
    return _finetune_spec(session, spec, tenant_id, allow_paths)


class JobTemplate(JobRequest):
    """A job to submit at each firing: the request, with its input named by server path (CLI
    only) or uploaded file id."""

    model_config = ConfigDict(extra="forbid")
    input_file: str | None = None
    input_file_id: str | None = None


JOB_KEYS = tuple(JobTemplate.model_fields)


def _job_spec(session: Session, settings: Settings, spec: dict[str, Any],
              tenant_id: str | None, allow_paths: bool) -> dict[str, Any]:
    _unknown(spec, JOB_KEYS, "job")
    kind = _kind(spec)
    version = _model(session, spec.get("model"), kind, "model", tenant_id)
    try:
        template = JobTemplate.model_validate({**spec, "kind": kind.value})
    except ValidationError as e:
        raise invalid(e, prefix="spec.") from None
    out = template.model_dump(mode="json", exclude={"input_file", "input_file_id"})
    out.update(_file(session, spec, path_key="input_file", id_key="input_file_id",
                     where="input_file", tenant_id=tenant_id, allow_paths=allow_paths))
    job = _job(out, tenant_id, metadata=out["metadata"])
    check_spec(settings, job)  # the rules every submit uses, now rather than nightly
    with intake.open_lines(session, settings, _source(out), spec=job,
                           version=version) as lines:
        sample = list(itertools.islice(lines, CHECK_LINES))
    problems = [(f"line {p.line_no}", p.error[1]) for p in sample if p.error]
    if not sample:
        raise _bad("input_file", "the input is empty: no items to run")
    if problems and job.on_invalid == OnInvalid.REJECT:
        raise InvalidInput(f"spec.input_file: {len(problems)} invalid line(s) in the first "
                           f"{len(sample)}", problems, param="spec.input_file")
    return out


def _job(spec: dict[str, Any], tenant_id: str | None, *, metadata: dict[str, Any]) -> JobSpec:
    """A stored job template as the job service's spec."""
    request = {k: v for k, v in spec.items() if k in JobRequest.model_fields and v is not None}
    return JobSpec(**{**request, "metadata": metadata}, tenant_id=tenant_id)


def _source(spec: dict[str, Any]) -> intake.Source:
    if spec.get("input_file_id"):
        return intake.FromFile(spec["input_file_id"])
    return intake.FromPath(spec["input_file"])


def _finetune_spec(session: Session, spec: dict[str, Any], tenant_id: str | None,
                   allow_paths: bool) -> dict[str, Any]:
    _unknown(spec, FINETUNE_KEYS, "finetune")
    kind = _kind(spec)
    _model(session, spec.get("base"), kind, "base", tenant_id)
    out: dict[str, Any] = {"kind": kind.value, "base": spec["base"]}
    train = spec.get("train")
    if not isinstance(train, dict) or len(set(train) & {"file", "file_id", "query"}) != 1:
        raise _bad("train", 'give {"file": PATH}, {"file_id": ID} or {"query": {...}}')
    train_rows: list[dict[str, Any]] | None = None
    if "query" in train:
        out["train"] = {"query": _query(session, train["query"], kind, tenant_id)}
    else:
        out["train"] = _file(session, train, path_key="file", id_key="file_id", where="train",
                             tenant_id=tenant_id, allow_paths=allow_paths)
        train_rows = finetune_data.read_rows(file_path(
            session, out["train"], path_key="file", id_key="file_id", tenant_id=tenant_id), kind)
    ev = spec.get("eval", {"split": DEFAULT_EVAL_SPLIT})
    if not isinstance(ev, dict) or len(set(ev) & {"file", "file_id", "split"}) != 1:
        raise _bad("eval", f'give {{"file": PATH}}, {{"file_id": ID}} or '
                           f'{{"split": {DEFAULT_EVAL_SPLIT}}}')
    if "split" in ev:
        split = ev["split"]
        if not isinstance(split, int | float) or not 0 < split < 1:
            raise _bad("eval.split", f"must be between 0 and 1, not {split!r}")
        out["eval"] = {"split": float(split)}
    else:
        out["eval"] = _file(session, ev, path_key="file", id_key="file_id", where="eval",
                            tenant_id=tenant_id, allow_paths=allow_paths)
        rows = finetune_data.read_rows(file_path(session, out["eval"], path_key="file",
                                                 id_key="file_id", tenant_id=tenant_id),
                                       kind, what="eval file")
        if kind == TaskKind.SENTIMENT and train_rows is not None:
            _as_spec("eval", finetune_data.check_eval_labels, train_rows, rows)
    out["hyperparameters"] = _hyperparameters(spec.get("hyperparameters", {}))
    named = {k: spec[k] for k in ("register_as", "promote_to", "gate", "priority") if k in spec}
    try:
        request = FinetuneRequest.model_validate({
            "kind": kind.value, "base": spec["base"], **named,
            "hyperparameters": out["hyperparameters"],
            **({"eval_split": out["eval"]["split"]} if "split" in out["eval"] else {})})
    except ValidationError as e:
        raise invalid(e, prefix="spec.") from None
    out.update(register_as=request.register_as, promote_to=request.promote_to, gate=request.gate,
               priority=request.priority)
    if out["register_as"] is not None:
        parsed = registry.ModelRef.parse(out["register_as"])
        if parsed.selector is not None:
            raise _bad("register_as", "is a model name, without '@'")
    if out["promote_to"] is not None:
        _as_spec("promote_to", registry.check_alias, out["promote_to"])
    return out


def _query(session: Session, query: object, kind: TaskKind,
           tenant_id: str | None) -> dict[str, Any]:
    if kind != TaskKind.SENTIMENT:
        raise _bad("train.query", "only sentiment jobs carry labels; give a training file")
    if not isinstance(query, dict) or set(query) - {"labelled_since", "model"}:
        raise _bad("train.query", 'must look like {"labelled_since": "last_success", '
                                  '"model": NAME}')
    since = query.get("labelled_since", LAST_SUCCESS)
    if since != LAST_SUCCESS:
        try:
            parsed = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
        except ValueError:
            raise _bad("train.query.labelled_since",
                       f"{since!r} must be 'last_success' or an ISO time") from None
        if parsed.tzinfo is None:
            raise _bad("train.query.labelled_since", f"{since!r} needs a UTC offset (…Z)")
        since = parsed.isoformat()
    out: dict[str, Any] = {"labelled_since": since}
    model = query.get("model")
    if model is not None:
        names = registry.list_names(session, tenant_id=tenant_id)
        if not isinstance(model, str) or model not in names:
            raise _bad("train.query.model", f"no model named {model!r}; "
                                            "see `nightowl models list`")
        out["model"] = model
    return out


def _hyperparameters(value: object) -> dict[str, Any]:
    # The same check, and the same message, as a fine-tune submitted from any other door.
    clean = check_hyperparams(value, get_settings())
    return {k: v for k, v in clean.items() if v is not None}


@dataclass
class Submitted:
    """What one firing produced; `outcome` is kept on the schedule_runs row."""

    status: FiringStatus
    job_id: str | None = None
    run_id: str | None = None
    outcome: dict[str, Any] = field(default_factory=dict)


def submit(session: Session, settings: Settings, schedule: Schedule,
           firing: ScheduleRun) -> Submitted:
    if schedule.target == ScheduleTarget.JOB:
        return _submit_job(session, settings, schedule, firing)
    return _submit_finetune(session, settings, schedule, firing)


def _submit_job(session: Session, settings: Settings, schedule: Schedule,
                firing: ScheduleRun) -> Submitted:
    spec = schedule.spec
    if spec.get("input_file_id") is None and not Path(spec["input_file"]).is_file():
        raise InvalidInput(f"file {spec['input_file']!r} does not exist (any more)")
    job = intake.submit(session=session, settings=settings, source=_source(spec), spec=_job(
        spec, schedule.tenant_id,
        metadata={**(spec.get("metadata") or {}), "schedule": schedule.name,
                  "schedule_run_id": firing.id,
                  "scheduled_for": firing.scheduled_for.isoformat()}))
    return Submitted(FiringStatus.SUBMITTED, job_id=job.id,
                     outcome={"items": job.total_items, "invalid": job.failed_items})


def _submit_finetune(session: Session, settings: Settings, schedule: Schedule,
                     firing: ScheduleRun) -> Submitted:
    spec = schedule.spec
    kind = TaskKind(spec["kind"])
    train = spec["train"]
    if "query" in train:
        info = _query_window(session, schedule, firing, train["query"])
        train_rows = labelled_rows(session, tenant_id=schedule.tenant_id, info=info)
        info["rows"] = len(train_rows)
        labels = sorted({r["label"] for r in train_rows})
        if len(labels) < 2:
            # Not a failure: nothing new was labelled. The next firing looks again.
            return Submitted(FiringStatus.SKIPPED, outcome={
                "reason": f"{len(train_rows)} labelled row(s) with {len(labels)} label(s) since "
                          f"{info['labelled_since'] or 'the beginning'}; a classifier needs two",
                "dataset": info})
    else:
        path = file_path(session, train, path_key="file", id_key="file_id",
                         tenant_id=schedule.tenant_id)
        train_rows = finetune_data.read_rows(path, kind)
        info = {"source": "file", "train_file": str(path), "rows": len(train_rows)}
    ev = spec.get("eval") or {"split": DEFAULT_EVAL_SPLIT}
    eval_rows = None
    if "split" not in ev:
        eval_path = file_path(session, ev, path_key="file", id_key="file_id",
                              tenant_id=schedule.tenant_id)
        eval_rows = finetune_data.read_rows(eval_path, kind, what="eval file")
        info["eval_file"] = str(eval_path)
    run = finetunes.submit_finetune(session=session, settings=settings, spec=(
        finetunes.FinetuneSpec(
            kind=kind, base=spec["base"], train_rows=train_rows, eval_rows=eval_rows,
            hyperparameters=spec.get("hyperparameters") or {},
            register_as=spec.get("register_as"), promote_to=spec.get("promote_to"),
            gate=spec.get("gate"), priority=spec.get("priority", PRIORITY_DEFAULT),
            **({"eval_split": ev["split"]} if "split" in ev else {}),
            tenant_id=schedule.tenant_id,
            dataset_info={**info, "schedule": schedule.name}, schedule_run_id=firing.id,
        )))
    return Submitted(FiringStatus.SUBMITTED, run_id=run.id, outcome={"dataset": info})


def _query_window(session: Session, schedule: Schedule, firing: ScheduleRun,
                  query: dict[str, Any]) -> dict[str, Any]:
    since: datetime | None
    if query.get("labelled_since", LAST_SUCCESS) == LAST_SUCCESS:
        # Anchored on the last firing whose fine-tune succeeded: rows a failed run never
        # learned from are offered again.
        since = session.scalar(
            select(func.max(ScheduleRun.fired_at)).where(
                ScheduleRun.schedule_id == schedule.id,
                ScheduleRun.status == FiringStatus.SUCCEEDED,
                ScheduleRun.id != firing.id,
            ))
    else:
        since = datetime.fromisoformat(query["labelled_since"])
    return {"source": "query", "labelled_since": since.isoformat() if since else None,
            "until": firing.fired_at.isoformat(), "model": query.get("model")}


def labelled_rows(session: Session, *, tenant_id: str | None,
                  info: dict[str, Any]) -> list[dict[str, Any]]:
    """{text, label} of labelled sentiment items that finished in (labelled_since, until]."""
    label = JobItem.input["label"].as_string()
    stmt = (
        select(JobItem.input["text"].as_string(), label)
        .join(Job, Job.id == JobItem.job_id)
        .where(Job.kind == TaskKind.SENTIMENT, JobItem.status == ItemStatus.SUCCEEDED,
               JobItem.finished_at <= datetime.fromisoformat(info["until"]),
               label.is_not(None))
        .order_by(JobItem.finished_at, JobItem.id)
    )
    if info.get("labelled_since"):
        stmt = stmt.where(JobItem.finished_at > datetime.fromisoformat(info["labelled_since"]))
    if tenant_id is not None:
        # Work from before the CLI had a tenant (no owner) is the operator's too.
        stmt = stmt.where(or_(Job.tenant_id == tenant_id, Job.tenant_id.is_(None))
                          if tenant_id == operator_tenant_id(session)
                          else Job.tenant_id == tenant_id)
    if info.get("model"):
        stmt = stmt.join(ModelVersion, ModelVersion.id == Job.model_version_id).where(
            ModelVersion.name == info["model"])
    return [{"text": text, "label": lab}
            for text, lab in session.execute(stmt.execution_options(yield_per=5000))
            if text and lab]
