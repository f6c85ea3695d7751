"""/v1/jobs: bulk jobs, their control and their results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from nightowl.common.enums import JobStatus
from nightowl.common.errors import InvalidInput
from nightowl.common.specs import JobRequest
from nightowl.fleet.liveness import queue_health
from nightowl.jobs import intake
from nightowl.jobs import service as service
from nightowl.jobs.results import iter_rows, jsonl_lines
from nightowl.jobs.views import JobView, job_view, job_views
from nightowl.platform.db import session_factory
from nightowl.query.query import IDX_CURSOR, parse_cursor
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep, quota_headers
from nightowl_api.schemas import JobCreate, JobHealth, JobList, ResultPage, ResultRow

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=201, dependencies=[quota_headers])
def create_job(body: JobCreate, session: SessionDep, settings: SettingsDep,
               tenant: TenantDep) -> JobView:
    """Submit a bulk job: items inline or a file id; the model is pinned now."""
    if (body.items is None) == (body.file_id is None):
        raise InvalidInput("give exactly one of `items` (inline) or `file_id`")
    spec = service.JobSpec(**body.model_dump(include=set(JobRequest.model_fields)),
                           tenant_id=tenant)
    source: intake.Source
    if body.file_id is not None:
        source = intake.FromFile(body.file_id, body.input_format, body.column, body.id_column)
    else:
        assert body.items is not None
        for field in ("input_format", "column", "id_column"):
            if getattr(body, field) is not None:
                raise InvalidInput(f"`{field}` describes an uploaded file; inline `items` are "
                                   "objects already: drop it, or upload the file and give "
                                   "`file_id`", param=field)
        source = intake.Inline([item.model_dump(exclude_none=True) for item in body.items])
    job = intake.submit(session=session, settings=settings, spec=spec, source=source)
    return job_view(session, job)


@router.get("")
def list_jobs(session: SessionDep, tenant: TenantDep, status: JobStatus | None = None,
              limit: int = Query(20, ge=1, le=1000)) -> JobList:
    """List jobs, newest first."""
    rows = service.list_jobs(session, tenant_id=tenant, status=status, limit=limit + 1)
    return JobList(data=job_views(session, rows[:limit]), has_more=len(rows) > limit)


@router.get("/{job_id}")
def get_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobView:
    """One job with its counts and status timestamps."""
    return job_view(session, service.get_job(session, job_id, tenant_id=tenant))


@router.get("/{job_id}/health")
def job_health(job_id: str, session: SessionDep, settings: SettingsDep,
               tenant: TenantDep) -> JobHealth:
    """Can the job run: is the broker up, and how many workers consume its queue."""
    job = service.get_job(session, job_id, tenant_id=tenant)
    health = queue_health(settings, job.queue)
    return JobHealth(queue=health.queue, broker=health.broker, workers=health.workers,
                     warning=health.warning(settings))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobView:
    """Cancel: running chunks stop at their next micro-batch; finished rows are kept."""
    return job_view(session, service.cancel_job(session, job_id, tenant_id=tenant))


@router.post("/{job_id}/retry", status_code=201)
def retry_job(job_id: str, session: SessionDep, settings: SettingsDep,
              tenant: TenantDep) -> JobView:
    """A child job of the failed, cancelled and expired items."""
    child = service.retry_job(session=session, settings=settings, job_id=job_id,
                              tenant_id=tenant)
    return job_view(session, child)


@router.get("/{job_id}/results", response_model=None, responses={200: {
    "model": ResultPage, "content": {"application/x-ndjson": {}}}})
def job_results(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    limit: int = Query(100, ge=1, le=10_000),
    errors: bool = Query(False, description="Only failed, cancelled and expired items"),
    format: Literal["json", "jsonl"] = Query("json"),
) -> ResultPage | StreamingResponse:
    """Rows in input order: pages of JSON, or the whole job streamed as JSONL."""
    service.get_job(session, job_id, tenant_id=tenant)
    if format == "jsonl":
        # Release the request's transaction: on SQLite it holds the lock the stream's session
        # needs (the request's session only ends after the response is sent).
        session.commit()
        def stream() -> Iterator[str]:
            # Its own session: the request's closes when the handler returns, before streaming.
            with session_factory(settings)() as s:
                yield from jsonl_lines(iter_rows(s, job_id, errors_only=errors, tenant_id=tenant))

        return StreamingResponse(stream(), media_type="application/x-ndjson")
    after = parse_cursor(cursor, IDX_CURSOR)
    rows = list(iter_rows(session, job_id, errors_only=errors, tenant_id=tenant,
                          after_idx=after, limit=limit + 1))
    page = rows[:limit]
    more = len(rows) > limit
    return ResultPage(data=[ResultRow(**r) for _, r in page],
                      next_cursor=str(page[-1][0]) if more and page else None)
