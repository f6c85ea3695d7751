"""What a job looks like to its users: one model for the HTTP API and the command line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from nightowl.common.enums import JobStatus, TaskKind
from nightowl.platform.orm import Job
from nightowl.registry.outcome import version_refs

# The first problems of a job whose lines were refused; the rest are in its error rows.
SHOWN_ERRORS = 100


class JobView(BaseModel):
    id: str
    kind: TaskKind
    model: str = Field(description="The model as asked: NAME, NAME@ALIAS or NAME@vN")
    model_version: str = Field(description="The version pinned at submit, NAME@vN: what ran")
    status: JobStatus
    priority: int
    queue: str
    total: int
    succeeded: int
    failed: int
    cancelled: int
    expired: int
    params: dict[str, Any]
    metadata: dict[str, Any]
    parent_job_id: str | None
    errors: list[dict[str, Any]]
    created_at: datetime
    queued_at: datetime | None
    in_progress_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    expired_at: datetime | None
    deadline_at: datetime | None
    # When the maintenance pass purges its results (set once it finishes; null: kept).
    results_expire_at: datetime | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.expired

    @property
    def end_at(self) -> datetime | None:
        return self.completed_at or self.cancelled_at or self.expired_at


class Submitted(JobView):
    """A job as submit answers it."""

    broker_down: bool = Field(False, description="The broker did not answer at submit: the "
                              "job waits in the database until a worker sends its chunks")


def job_views(session: Session, jobs: Sequence[Job]) -> list[JobView]:
    refs = version_refs(session, [j.model_version_id for j in jobs])
    return [JobView(
        id=j.id, kind=j.kind, model=j.model_ref, model_version=refs.get(j.model_version_id, ""),
        status=j.status, priority=j.priority, queue=j.queue, total=j.total_items,
        succeeded=j.succeeded_items, failed=j.failed_items, cancelled=j.cancelled_items,
        expired=j.expired_items, params=j.params, metadata=j.metadata_,
        parent_job_id=j.parent_job_id, errors=j.errors[:SHOWN_ERRORS], created_at=j.created_at,
        queued_at=j.queued_at, in_progress_at=j.in_progress_at, completed_at=j.completed_at,
        cancelled_at=j.cancelled_at, expired_at=j.expired_at, deadline_at=j.deadline_at,
        results_expire_at=j.expires_at,
    ) for j in jobs]


def job_view(session: Session, job: Job) -> JobView:
    return job_views(session, [job])[0]
