"""Result rows as users see them, in JSONL or CSV, streamed in input order."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from nightowl.common.enums import ItemStatus
from nightowl.jobs.service import get_job, iter_items
from nightowl.platform.orm import Job, JobItem, ModelVersion

CSV_COLUMNS = [
    "custom_id", "status", "input", "output", "error_code", "error_message", "model",
    "tokens_in", "tokens_out", "worker", "device", "attempts", "started_at", "finished_at",
]
ERROR_STATUSES = [ItemStatus.FAILED, ItemStatus.CANCELLED, ItemStatus.EXPIRED]


def row_dict(item: JobItem, model_ref: str) -> dict[str, Any]:
    return {
        "custom_id": item.custom_id,
        "status": item.status.value,
        "input": item.input,
        "output": item.output,
        "error": (
            {"code": item.error_code, "message": item.error_message} if item.error_code else None
        ),
        "model": model_ref,
        **item_work(item),
    }


def item_work(item: Any) -> dict[str, Any]:
    """Where, how long and at what cost an item ran, as every result row shows it; `item` is a
    JobItem or a selected row with its column names."""
    return {
        "tokens_in": item.tokens_in,
        "tokens_out": item.tokens_out,
        "worker": item.worker,
        "device": item.device,
        "attempts": item.attempts,
        "started_at": item.started_at.isoformat() if item.started_at else None,
        "finished_at": item.finished_at.isoformat() if item.finished_at else None,
    }


def model_ref_of(session: Session, job: Job) -> str:
    version = session.get(ModelVersion, job.model_version_id)
    return version.ref if version else job.model_ref


def iter_rows(
    session: Session,
    job_id: str,
    *,
    errors_only: bool = False,
    tenant_id: str | None = None,
    after_idx: int = -1,
    limit: int | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    job = get_job(session, job_id, tenant_id=tenant_id)
    ref = model_ref_of(session, job)
    statuses = ERROR_STATUSES if errors_only else None
    for item in iter_items(session, job_id, statuses=statuses, after_idx=after_idx, limit=limit):
        yield item.idx, row_dict(item, ref)


def jsonl_lines(rows: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[str]:
    for _, row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def csv_lines(rows: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for _, row in rows:
        error = row.pop("error") or {}
        row["error_code"], row["error_message"] = error.get("code"), error.get("message")
        row["input"] = json.dumps(row["input"], ensure_ascii=False)
        row["output"] = json.dumps(row["output"], ensure_ascii=False) if row["output"] else ""
        writer.writerow(row)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()
