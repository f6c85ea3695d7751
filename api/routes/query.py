"""/v1/results across jobs, /v1/jobs/{id}/stats and /v1/models/compare."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from nightowl.common.enums import ItemStatus, TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.common.timespec import HELP as WHEN_HELP
from nightowl.common.timespec import parse_when
from nightowl.jobs import stats
from nightowl.platform.db import session_factory
from nightowl.query import export, query
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep
from nightowl_api.schemas import ResultRow

router = APIRouter(tags=["results"])


class QueryRow(ResultRow):
    """A job's result row, plus where it came from: results span jobs here."""

    id: int
    job_id: str
    kind: str


class QueryPage(BaseModel):
    data: list[QueryRow]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page")


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value, tz=UTC)
    except InvalidInput as e:
        raise InvalidInput(f"{name}: {e}") from e


@router.get("/results", response_model=None, responses={200: {
    "model": QueryPage, "content": {"application/x-ndjson": {}, "text/csv": {}}}})
def results(
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    job: str | None = Query(None, description="Only this job"),
    kind: TaskKind | None = None,
    model: str | None = Query(None, description="NAME (all versions), NAME@ALIAS (the version "
                              "the alias points to now) or NAME@vN"),
    status: ItemStatus | None = None,
    since: str | None = Query(None, description=f"Finished at or after: {WHEN_HELP}; UTC"),
    until: str | None = Query(None, description="Finished before; same forms as since"),
    label: str | None = Query(None, description="output.label equals (case-insensitive)"),
    contains: str | None = Query(None, description="Input text contains (case-insensitive)"),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    limit: int = Query(100, ge=1, le=1000, description="Page size (json)"),
    format: Literal["json", "jsonl", "csv"] = Query(
        "json", description="json pages, or every match streamed as jsonl or csv"),
) -> QueryPage | StreamingResponse:
    """Results across jobs, filtered; pages of JSON with a cursor, or streamed as JSONL/CSV."""
    f = query.ResultFilter(job_id=job, kind=kind, model=model, status=status,
                           since=_when(since, "since"), until=_when(until, "until"),
                           label=label, contains=contains, tenant_id=tenant)
    if format != "json":
        query.conditions(session, f)  # a bad filter answers 400 now, not mid-stream
        # The request's session lives until the response is sent: end its transaction, or on
        # SQLite it would hold the lock that the stream's own sessions wait for.
        session.commit()

        def rows() -> Iterator[str]:
            factory = session_factory(settings)
            stream = query.iter_results(factory, f)
            yield from export.csv_lines(stream) if format == "csv" else export.jsonl_lines(stream)

        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(rows(), media_type=media)
    after = query.parse_cursor(cursor, query.ID_CURSOR)
    data, nxt = query.page(session, f, after_id=after, limit=limit)
    return QueryPage(data=[QueryRow(**r) for r in data],
                     next_cursor=str(nxt) if nxt is not None else None)


@router.get("/jobs/{job_id}/stats")
def job_stats(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """Throughput, latency percentiles per chunk and per item, tokens, errors by code."""
    return stats.job_stats(session, job_id, tenant_id=tenant)


@router.get("/models/compare")
def compare_models(session: SessionDep, tenant: TenantDep,
                   a: str = Query(..., description="NAME@vN or NAME@ALIAS"),
                   b: str = Query(..., description="NAME@vN or NAME@ALIAS")) -> dict[str, Any]:
    """Eval metrics of two model versions side by side, with b - a."""
    return stats.compare_models(session, a, b, tenant_id=tenant)
