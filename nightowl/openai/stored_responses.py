"""GET /v1/responses/{id}: a response read back from its job row (a direct request's or a
/v1/responses batch line's), in whatever state it is."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nightowl.common.enums import ItemStatus
from nightowl.common.errors import NotFound
from nightowl.openai import responses
from nightowl.openai.fields import read_openai
from nightowl.openai.output import output_line
from nightowl.platform.orm import Job, JobItem

_STOPPED = {ItemStatus.CANCELLED: "cancelled", ItemStatus.EXPIRED: "failed",
            ItemStatus.FAILED: "failed"}


def retrieve(session: Session, rid: str, *, tenant_id: str | None) -> dict[str, Any]:
    """The response object; NotFound for an id that is not one of this tenant's responses, or
    one created with store=false (as OpenAI keeps those from being read back)."""
    missing = NotFound(f"no response {rid!r}")
    where = responses.parse_id(rid)
    if where is None:
        raise missing
    job = session.get(Job, where[0])
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise missing
    meta = read_openai(job)
    if meta.endpoint != responses.RESPONSES:
        raise missing
    item = session.scalars(select(JobItem).where(JobItem.job_id == job.id,
                                                 JobItem.idx == where[1])).first()
    echo = ((item.input or {}).get("response") if item is not None else None)
    if item is None or echo is None or echo.get("store") is False:
        raise missing
    model = meta.model or job.model_ref
    if item.status == ItemStatus.SUCCEEDED:
        body: dict[str, Any] = output_line(job.id, item, responses.RESPONSES, model)[
            "response"]["body"]
        return body
    created = job.created_at.timestamp()
    if item.status in _STOPPED:
        error = {"code": item.error_code or item.status.value,
                 "message": item.error_message or "the response was not produced"}
        return responses.response_object(rid=rid, model=model, created=created, echo=echo,
                                         status=_STOPPED[item.status], error=error)
    return responses.response_object(rid=rid, model=model, created=created, echo=echo)
