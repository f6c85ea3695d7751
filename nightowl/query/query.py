"""Results across jobs: one filter shared by the CLI, the API and the dashboard, read by keyset.

Pages are keyed on job_items.id (ascending, unique), so a page costs the same at row 10 as at
row 10 million, and a stream holds one page in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Row, Select, and_, func, select
from sqlalchemy.orm import Session

from nightowl.common.enums import ItemStatus, TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.jobs.results import item_work
from nightowl.platform.orm import Job, JobItem, ModelVersion
from nightowl.registry.versions import LATEST, ModelRef, resolve, visible

PAGE = 1000
# Cursors are a row's position: a job item's idx (a 32-bit integer) or a result's id (64-bit).
IDX_CURSOR = (-1, 2**31 - 1)
ID_CURSOR = (0, 2**63 - 1)


def parse_cursor(cursor: str | None, bounds: tuple[int, int]) -> int:
    """A next_cursor this API returned, as the position to read after (bounds[0]: from the
    start). Anything else, digits past the column's range included, is refused here rather
    than by the database."""
    low, high = bounds
    if cursor is None:
        return low
    text = cursor.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20 \
            or not low <= int(text) <= high:
        raise InvalidInput(f"cursor {cursor[:40]!r} is not one this API returned; pass the "
                           "previous page's next_cursor, or none for the first page",
                           param="cursor")
    return int(text)


@dataclass(frozen=True)
class ResultFilter:
    job_id: str | None = None
    kind: TaskKind | None = None
    # NAME = every version; NAME@ALIAS = the version the alias points to now; NAME@vN = that one.
    model: str | None = None
    status: ItemStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    label: str | None = None
    contains: str | None = None
    tenant_id: str | None = None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def input_text() -> ColumnElement[str]:
    """The item's text, whichever field its kind reads (`text`, or `source` for translation)."""
    return func.coalesce(
        JobItem.input["text"].as_string(), JobItem.input["source"].as_string()
    )


def output_label() -> ColumnElement[Any]:
    return cast(ColumnElement[Any], JobItem.output["label"].as_string())


def _model_condition(session: Session, ref: str, tenant: str | None) -> ColumnElement[bool]:
    parsed = ModelRef.parse(ref)
    if parsed.selector is None:
        ids = select(ModelVersion.id).where(ModelVersion.name == parsed.name, visible(tenant))
        if session.scalar(select(func.count()).select_from(ids.subquery())) == 0:
            resolve(session, ref, tenant_id=tenant)  # NotFound naming the models that exist
        return Job.model_version_id.in_(ids)
    if parsed.selector == LATEST:
        return Job.model_version_id == resolve(session, parsed.name, tenant_id=tenant).id
    # An alias means the version it points to at query time, not whatever it pointed to
    # when each job ran (jobs pin their version at submit).
    return Job.model_version_id == resolve(session, ref, tenant_id=tenant).id


def conditions(session: Session, f: ResultFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if f.since and f.until and f.since >= f.until:
        raise InvalidInput(f"--since ({f.since.isoformat()}) must be before --until "
                           f"({f.until.isoformat()})")
    if f.tenant_id is not None:
        where.append(Job.tenant_id == f.tenant_id)
    if f.job_id is not None:
        where.append(JobItem.job_id == f.job_id)
    if f.kind is not None:
        where.append(Job.kind == f.kind)
    if f.model is not None:
        where.append(_model_condition(session, f.model, f.tenant_id))
    if f.status is not None:
        where.append(JobItem.status == f.status)
    # Results are dated by when they were produced; pending items have no date and drop out.
    # SQLite stores naive UTC, so bounds are compared in UTC on both databases.
    if f.since is not None:
        where.append(JobItem.finished_at >= f.since.astimezone(UTC))
    if f.until is not None:
        where.append(JobItem.finished_at < f.until.astimezone(UTC))
    if f.label is not None:
        where.append(func.lower(output_label()) == f.label.lower())
    if f.contains:
        pattern = f"%{_escape_like(f.contains.lower())}%"
        where.append(func.lower(input_text()).like(pattern, escape="\\"))
    return where


COLUMNS = (
    JobItem.id, JobItem.job_id, JobItem.custom_id, JobItem.status, JobItem.input,
    JobItem.output, JobItem.error_code, JobItem.error_message, JobItem.tokens_in,
    JobItem.tokens_out, JobItem.worker, JobItem.device, JobItem.attempts, JobItem.started_at,
    JobItem.finished_at, Job.kind, ModelVersion.name, ModelVersion.version, JobItem.line_no,
)


def select_rows(where: list[ColumnElement[bool]], *, after_id: int, limit: int) -> Select[Any]:
    return (
        select(*COLUMNS)
        .join(Job, Job.id == JobItem.job_id)
        .join(ModelVersion, ModelVersion.id == Job.model_version_id)
        .where(and_(JobItem.id > after_id, *where))
        .order_by(JobItem.id)
        .limit(limit)
    )


def row_dict(row: Row[Any]) -> dict[str, Any]:
    output = row.output
    return {
        "id": row.id,
        "job_id": row.job_id,
        "custom_id": row.custom_id,
        # Where the item was in the input: a line refused at submit has no text to find it by.
        "line_no": row.line_no,
        "kind": TaskKind(row.kind).value,
        "model": f"{row.name}@v{row.version}",
        "status": ItemStatus(row.status).value,
        "input": row.input,
        "output": output,
        "error": {"code": row.error_code, "message": row.error_message}
        if row.error_code else None,
        **item_work(row),
    }


def page(
    session: Session, f: ResultFilter, *, after_id: int = 0, limit: int = 100
) -> tuple[list[dict[str, Any]], int | None]:
    """One page and the cursor of the next one (None on the last page)."""
    stmt = select_rows(conditions(session, f), after_id=after_id, limit=limit + 1)
    rows = [row_dict(r) for r in session.execute(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more and rows else None)


def iter_results(
    factory: Callable[[], Session], f: ResultFilter, *, limit: int | None = None,
    page_size: int = PAGE,
) -> Iterator[dict[str, Any]]:
    """Every matching row in id order; each page reads in its own short transaction, so a long
    export never holds SQLite's lock (or a PostgreSQL snapshot) while the consumer writes."""
    after, sent = 0, 0
    with factory() as session:
        where = conditions(session, f)
    while limit is None or sent < limit:
        size = page_size if limit is None else min(page_size, limit - sent)
        with factory() as session:
            rows = [row_dict(r) for r in session.execute(
                select_rows(where, after_id=after, limit=size))]
        yield from rows
        sent += len(rows)
        if len(rows) < size:
            return
        after = rows[-1]["id"]


def count(session: Session, f: ResultFilter) -> int:
    stmt = (select(func.count()).select_from(JobItem)
            .join(Job, Job.id == JobItem.job_id)
            .where(*conditions(session, f)))
    return int(session.scalar(stmt) or 0)

