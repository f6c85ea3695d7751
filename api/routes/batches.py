"""/v1/batches: OpenAI's Batch API over nightowl jobs; the openai SDK works unchanged."""

from __future__ import annotations

from fastapi import APIRouter, Query

from nightowl.openai import batches as service
from nightowl.openai import validation as batch_async
from nightowl.platform import retention
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep, quota_headers
from nightowl_api.openai_schemas import Batch, BatchCreate, BatchList

router = APIRouter(prefix="/batches", tags=["batches"])


@router.post("", dependencies=[quota_headers])
def create_batch(body: BatchCreate, session: SessionDep, settings: SettingsDep,
                 tenant: TenantDep) -> Batch:
    """Create a batch from an uploaded JSONL file; it answers "validating", as OpenAI does.
    A small file is checked before the answer (a bad one is "failed" when next retrieved); a
    large one is checked by a worker."""
    job = batch_async.create_batch(
        session=session, settings=settings, tenant_id=tenant, input_file_id=body.input_file_id,
        endpoint=body.endpoint, completion_window=body.completion_window,
        metadata=body.metadata,
        output_expires_after=retention.expires_after_seconds(
            body.output_expires_after, param="output_expires_after"),
    )
    return Batch(**service.as_created(service.batch_object(job, session)))


@router.get("")
def list_batches(session: SessionDep, tenant: TenantDep,
                 after: str | None = Query(None, description="Last id of the previous page"),
                 limit: int = Query(20, ge=1, le=100)) -> BatchList:
    """Your batches, newest first."""
    rows, more = service.list_batches(session, tenant_id=tenant, after=after, limit=limit)
    data = [Batch(**service.batch_object(j, session)) for j in rows]
    return BatchList(data=data, first_id=data[0].id if data else None,
                     last_id=data[-1].id if data else None, has_more=more)


@router.get("/{batch_id}")
def get_batch(batch_id: str, session: SessionDep, tenant: TenantDep) -> Batch:
    """One batch: status, timestamps, request counts, output and error file ids."""
    return Batch(**service.batch_object(
        service.get_batch(session, batch_id, tenant_id=tenant), session))


@router.post("/{batch_id}/cancel")
def cancel_batch(batch_id: str, session: SessionDep, tenant: TenantDep) -> Batch:
    """Cancel: unstarted requests are dropped, running chunks stop at the next micro-batch."""
    job = service.cancel_batch(session, batch_id, tenant_id=tenant)
    return Batch(**service.batch_object(job, session))
