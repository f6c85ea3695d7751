"""Numbers about one job, computed in SQL: throughput, latency percentiles, tokens, errors."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, distinct, func, select
from sqlalchemy.orm import Session

from nightowl.common.enums import ChunkStatus, ItemStatus
from nightowl.jobs.service import get_job
from nightowl.platform.orm import JobChunk, JobItem, ModelVersion, TrainingRun, utcnow

PERCENTILES = (50, 90, 99)


def seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[Any]:
    """end - start in seconds, as SQL that both databases can sort and aggregate."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def percentiles(session: Session, value: ColumnElement[Any], where: list[ColumnElement[bool]],
                froms: Any) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99 and max of `value` over the matching rows."""
    base: Select[Any] = select(value.label("v")).select_from(froms).where(*where)
    if session.get_bind().dialect.name == "postgresql":
        cols = [func.percentile_disc(p / 100).within_group(value) for p in PERCENTILES]
        row = session.execute(select(*cols, func.max(value)).select_from(froms).where(*where)).one()
        return {**{f"p{p}": _num(v) for p, v in zip(PERCENTILES, row, strict=False)},
                "max": _num(row[-1])}
    # SQLite has no percentile aggregate: read the k-th smallest value, one indexed sort each.
    n = int(session.scalar(select(func.count()).select_from(base.subquery())) or 0)
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        if n == 0:
            out[f"p{p}"] = None
            continue
        k = max(math.ceil(p / 100 * n) - 1, 0)
        out[f"p{p}"] = _num(session.scalar(base.order_by(value).offset(k).limit(1)))
    out["max"] = _num(session.scalar(select(func.max(value)).select_from(froms).where(*where)))
    return out


def _num(v: Any) -> float | None:
    return None if v is None else round(float(v), 4)


def job_stats(session: Session, job_id: str, *, tenant_id: str | None = None) -> dict[str, Any]:
    job = get_job(session, job_id, tenant_id=tenant_id)
    version = session.get(ModelVersion, job.model_version_id)
    chunk = session.execute(
        select(func.count(), func.sum(JobChunk.batches), func.sum(JobChunk.device_seconds),
               func.sum(JobChunk.end_idx - JobChunk.start_idx))
        .where(JobChunk.job_id == job_id, JobChunk.status == ChunkStatus.DONE)
    ).one()
    # The clock runs from the first chunk any worker took to the last one finished (or now).
    chunks_total, started, last_finished = session.execute(
        select(func.count(), func.min(JobChunk.started_at), func.max(JobChunk.finished_at))
        .where(JobChunk.job_id == job_id)
    ).one()
    items = session.execute(
        select(func.sum(JobItem.tokens_in), func.sum(JobItem.tokens_out),
               func.count(distinct(JobItem.worker)))
        .where(JobItem.job_id == job_id)
    ).one()
    errors = dict(session.execute(
        select(JobItem.error_code, func.count()).where(
            JobItem.job_id == job_id, JobItem.error_code.is_not(None))
        .group_by(JobItem.error_code).order_by(func.count().desc())
    ).tuples().all())
    devices = list(session.scalars(
        select(JobItem.device).where(JobItem.job_id == job_id, JobItem.device.is_not(None))
        .distinct().limit(20)))
    ended: datetime | None = last_finished if job.status.terminal else utcnow()
    wall = (ended - started).total_seconds() if started and ended else None
    processed = job.succeeded_items + job.failed_items
    tokens_in, tokens_out = int(items[0] or 0), int(items[1] or 0)
    chunk_where = [JobChunk.job_id == job_id, JobChunk.status == ChunkStatus.DONE,
                   JobChunk.started_at.is_not(None), JobChunk.finished_at.is_not(None)]
    item_where = [JobItem.job_id == job_id, JobItem.status == ItemStatus.SUCCEEDED,
                  JobItem.started_at.is_not(None), JobItem.finished_at.is_not(None)]
    return {
        "job_id": job.id,
        "kind": job.kind.value,
        "model": version.ref if version else job.model_ref,
        "status": job.status.value,
        "items": {"total": job.total_items, "succeeded": job.succeeded_items,
                  "failed": job.failed_items, "cancelled": job.cancelled_items,
                  "expired": job.expired_items,
                  "pending": job.total_items - job.done_items},
        "chunks": {"total": chunks_total, "done": chunk[0], "micro_batches": chunk[1],
                   "mean_micro_batch_size": _ratio(chunk[3], chunk[1])},
        "wall_seconds": _num(wall),
        "items_per_second": _ratio(processed, wall),
        "tokens": {"in": tokens_in, "out": tokens_out,
                   "out_per_second": _ratio(tokens_out, wall)},
        "device_seconds": _num(chunk[2]),
        "latency_seconds": {
            "chunk": percentiles(session, seconds_between(
                session, JobChunk.started_at, JobChunk.finished_at), chunk_where, JobChunk),
            "item": percentiles(session, seconds_between(
                session, JobItem.started_at, JobItem.finished_at), item_where, JobItem),
        },
        "errors": errors,
        "workers": int(items[2] or 0),
        "devices": devices,
    }


def _ratio(num: float | int | None, den: float | int | None) -> float | None:
    return round(float(num) / float(den), 3) if num is not None and den else None


def compare_models(session: Session, a: str, b: str, *, tenant_id: str | None = None
                   ) -> dict[str, Any]:
    """Eval metrics of two versions side by side; a key either lacks shows as None."""
    from nightowl.registry.versions import resolve

    va, vb = resolve(session, a, tenant_id=tenant_id), resolve(session, b, tenant_id=tenant_id)
    ma, mb, note = dict(va.metrics), dict(vb.metrics), None
    # A version's own metrics come from its own eval set (or there are none, for a checkpoint
    # registered directly). When one of the two was trained by a run whose promotion gate
    # measured the other on that run's eval set, both sides come from that one set.
    for mine, other in ((vb, va), (va, vb)):
        measured = _gate_measured(session, mine, other)
        if measured is not None:
            run_id, values = measured
            if other is va:
                ma = {**va.metrics, **values}
            else:
                mb = {**vb.metrics, **values}
            note = (f"{other.ref}'s metrics as measured by the promotion gate of run {run_id} "
                    f"on the eval set that {mine.ref} was evaluated on")
            break
    keys = sorted({*ma, *mb})
    rows = []
    for key in keys:
        x, y = ma.get(key), mb.get(key)
        numeric = isinstance(x, int | float) and isinstance(y, int | float)
        rows.append({"metric": key, "a": x, "b": y,
                     "delta": round(float(y) - float(x), 6) if numeric else None})  # type: ignore[arg-type]
    return {"a": va.ref, "b": vb.ref, "a_kind": va.kind.value, "b_kind": vb.kind.value,
            "a_created_at": va.created_at.isoformat(), "b_created_at": vb.created_at.isoformat(),
            "metrics": rows, "note": note}


def _gate_measured(session: Session, candidate: ModelVersion, incumbent: ModelVersion
                   ) -> tuple[str, dict[str, float]] | None:
    """(run id, metrics) the gate of the run that made `candidate` measured for `incumbent`."""
    if candidate.training_run_id is None:
        return None
    run = session.get(TrainingRun, candidate.training_run_id)
    promotion = run.promotion if run is not None else None
    if not promotion or promotion.get("incumbent_version") != incumbent.ref:
        return None
    values = promotion.get("incumbent_metrics") or (
        {promotion["metric"]: promotion["incumbent"]}
        if promotion.get("incumbent") is not None else {})
    numbers = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
    return (run.id, numbers) if run is not None and numbers else None

