"""What a schedule and one of its firings look like to their users: one model each for the
HTTP API and the command line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from nightowl.common.enums import Catchup, FiringStatus, ScheduleTarget


class FiringView(BaseModel):
    id: int
    scheduled_for: str
    fired_at: str
    fired_by: str | None
    status: FiringStatus
    job_id: str | None
    training_run_id: str | None
    run_status: str | None = Field(description="How the job or run it created stands now")
    promotion: dict[str, Any] | None
    version: str | None
    outcome: dict[str, Any]


class ScheduleEdit(BaseModel):
    """What to change on a schedule (None keeps the stored value): `schedule add` and `edit`,
    and PATCH /v1/schedules/{name}."""

    cron: str | None = None
    timezone: str | None = None
    target: ScheduleTarget | None = None
    spec: dict[str, Any] | None = None
    catchup: Catchup | None = None
    enabled: bool | None = None


class ScheduleView(BaseModel):
    name: str
    cron: str
    timezone: str
    target: ScheduleTarget
    spec: dict[str, Any]
    enabled: bool
    catchup: Catchup
    next_fire: str | None
    last_fired_for: str | None = Field(description="The slot the last firing was for")
    slots_due_after: str = Field(description="Slots after this instant are due (moves on each "
                                 "firing, edit and resume)")
    last_firing: FiringView | None
    created_at: str
    updated_at: str
