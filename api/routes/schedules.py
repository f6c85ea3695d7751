"""/v1/schedules: recurring jobs and fine-tunes of the calling tenant, fired by beat."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from nightowl.platform.orm import utcnow
from nightowl.scheduling import schedules
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep

router = APIRouter(prefix="/schedules", tags=["schedules"])
Catchup = Literal["once", "all", "none"]


class ScheduleCreate(BaseModel):
    name: str = Field(description="Unique name, e.g. nightly-sentiment")
    cron: str = Field(description="'0 2 * * *'; 6 fields with seconds first also accepted")
    timezone: str = Field(default="UTC", description="IANA zone the cron is read in")
    target: Literal["job", "finetune"]
    spec: dict[str, Any] = Field(description="Job or fine-tune template; files by file id "
                                             "(input_file_id, train.file_id, eval.file_id)")
    catchup: Catchup = "once"
    enabled: bool = True


class ScheduleEdit(BaseModel):
    cron: str | None = None
    timezone: str | None = None
    target: Literal["job", "finetune"] | None = None
    spec: dict[str, Any] | None = None
    catchup: Catchup | None = None
    enabled: bool | None = None


class FiringOut(BaseModel):
    id: int
    scheduled_for: str
    fired_at: str
    fired_by: str | None
    status: str
    job_id: str | None
    training_run_id: str | None
    run_status: str | None
    promotion: dict[str, Any] | None
    version: str | None
    outcome: dict[str, Any]


class ScheduleOut(BaseModel):
    name: str
    cron: str
    timezone: str
    target: str
    spec: dict[str, Any]
    enabled: bool
    catchup: str
    next_fire: str | None
    last_fired_for: str | None = Field(description="The slot the last firing was for")
    slots_due_after: str = Field(description="Slots after this instant are due (moves on each "
                                 "firing, edit and resume)")
    last_firing: FiringOut | None
    created_at: str
    updated_at: str


def _out(session: SessionDep, name: str, tenant: str) -> ScheduleOut:
    row = schedules.get_schedule(session, name, tenant_id=tenant)
    return ScheduleOut(**schedules.describe(session, row, utcnow()))


@router.post("", status_code=201)
def create_schedule(body: ScheduleCreate, session: SessionDep, settings: SettingsDep,
                    tenant: TenantDep) -> ScheduleOut:
    """Create a schedule; its template is checked now (model, files, rows)."""
    schedules.add_schedule(session=session, settings=settings, name=body.name, cron=body.cron,
                           timezone=body.timezone, target=body.target, spec=body.spec,
                           catchup=body.catchup, enabled=body.enabled, tenant_id=tenant,
                           allow_paths=False)
    return _out(session, body.name, tenant)


@router.get("")
def list_schedules(session: SessionDep, tenant: TenantDep) -> list[ScheduleOut]:
    """The tenant's schedules with their next fire time."""
    now = utcnow()
    return [ScheduleOut(**schedules.describe(session, row, now))
            for row in schedules.list_schedules(session, tenant_id=tenant)]


@router.get("/{name}")
def get_schedule(name: str, session: SessionDep, tenant: TenantDep) -> ScheduleOut:
    """One schedule: cron, template, state, next fire time and last firing."""
    return _out(session, name, tenant)


@router.patch("/{name}")
def edit_schedule(name: str, body: ScheduleEdit, session: SessionDep, settings: SettingsDep,
                  tenant: TenantDep) -> ScheduleOut:
    """Change a schedule in place; beat applies it within seconds, without a restart."""
    if any(v is not None for v in (body.cron, body.timezone, body.target, body.spec,
                                   body.catchup)):
        schedules.update_schedule(session=session, settings=settings, name=name,
                                  tenant_id=tenant, cron=body.cron, timezone=body.timezone,
                                  target=body.target, spec=body.spec, catchup=body.catchup,
                                  allow_paths=False)
    if body.enabled is not None:
        schedules.set_enabled(session, name, body.enabled, tenant_id=tenant)
    return _out(session, name, tenant)


@router.post("/{name}/pause")
def pause_schedule(name: str, session: SessionDep, tenant: TenantDep) -> ScheduleOut:
    """Stop firing until resumed."""
    schedules.set_enabled(session, name, False, tenant_id=tenant)
    return _out(session, name, tenant)


@router.post("/{name}/resume")
def resume_schedule(name: str, session: SessionDep, tenant: TenantDep) -> ScheduleOut:
    """Fire again from the next slot; slots inside the pause are not made up."""
    schedules.set_enabled(session, name, True, tenant_id=tenant)
    return _out(session, name, tenant)


@router.delete("/{name}", status_code=204)
def delete_schedule(name: str, session: SessionDep, tenant: TenantDep) -> None:
    """Delete the schedule and its firing history (its jobs and runs stay)."""
    schedules.remove_schedule(session, name, tenant_id=tenant)


@router.post("/{name}/run", status_code=201)
def run_schedule_now(name: str, session: SessionDep, settings: SettingsDep,
                     tenant: TenantDep) -> FiringOut:
    """Fire once now, outside the cron; the firing names the job or run it created."""
    firing = schedules.run_now(session=session, settings=settings, name=name,
                               fired_by=f"api:{tenant}", tenant_id=tenant)
    return FiringOut(**schedules.firing_view(firing))


@router.get("/{name}/history")
def schedule_history(name: str, session: SessionDep, tenant: TenantDep,
                     limit: int = Query(50, ge=1, le=1000)) -> list[FiringOut]:
    """Each firing, newest first: its job or run, how it ended, the promotion decision."""
    return [FiringOut(**v) for v in schedules.history(session, name, tenant_id=tenant,
                                                      limit=limit)]
