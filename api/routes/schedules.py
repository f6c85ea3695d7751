"""/v1/schedules: recurring jobs and fine-tunes of the calling tenant, fired by beat."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from nightowl.common.enums import Catchup, ScheduleTarget
from nightowl.platform.orm import utcnow
from nightowl.scheduling import schedules
from nightowl.scheduling.views import FiringView, ScheduleEdit, ScheduleView
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep

router = APIRouter(prefix="/schedules", tags=["schedules"])


class ScheduleCreate(BaseModel):
    name: str = Field(description="Unique name, e.g. nightly-sentiment")
    cron: str = Field(description="'0 2 * * *'; 6 fields with seconds first also accepted")
    timezone: str = Field(default="UTC", description="IANA zone the cron is read in")
    target: ScheduleTarget
    spec: dict[str, Any] = Field(description="Job or fine-tune template; files by file id "
                                             "(input_file_id, train.file_id, eval.file_id)")
    catchup: Catchup = Catchup.ONCE
    enabled: bool = True


def _out(session: SessionDep, name: str, tenant: str) -> ScheduleView:
    row = schedules.get_schedule(session, name, tenant_id=tenant)
    return schedules.describe(session, row, utcnow())


@router.post("", status_code=201)
def create_schedule(body: ScheduleCreate, session: SessionDep, settings: SettingsDep,
                    tenant: TenantDep) -> ScheduleView:
    """Create a schedule; its template is checked now (model, files, rows)."""
    schedules.add_schedule(session=session, settings=settings, name=body.name, cron=body.cron,
                           timezone=body.timezone, target=body.target, spec=body.spec,
                           catchup=body.catchup, enabled=body.enabled, tenant_id=tenant,
                           allow_paths=False)
    return _out(session, body.name, tenant)


@router.get("")
def list_schedules(session: SessionDep, tenant: TenantDep) -> list[ScheduleView]:
    """The tenant's schedules with their next fire time."""
    now = utcnow()
    return [schedules.describe(session, row, now)
            for row in schedules.list_schedules(session, tenant_id=tenant)]


@router.get("/{name}")
def get_schedule(name: str, session: SessionDep, tenant: TenantDep) -> ScheduleView:
    """One schedule: cron, template, state, next fire time and last firing."""
    return _out(session, name, tenant)


@router.patch("/{name}")
def edit_schedule(name: str, body: ScheduleEdit, session: SessionDep, settings: SettingsDep,
                  tenant: TenantDep) -> ScheduleView:
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
def pause_schedule(name: str, session: SessionDep, tenant: TenantDep) -> ScheduleView:
    """Stop firing until resumed."""
    schedules.set_enabled(session, name, False, tenant_id=tenant)
    return _out(session, name, tenant)


@router.post("/{name}/resume")
def resume_schedule(name: str, session: SessionDep, tenant: TenantDep) -> ScheduleView:
    """Fire again from the next slot; slots inside the pause are not made up."""
    schedules.set_enabled(session, name, True, tenant_id=tenant)
    return _out(session, name, tenant)


@router.delete("/{name}", status_code=204)
def delete_schedule(name: str, session: SessionDep, tenant: TenantDep) -> None:
    """Delete the schedule and its firing history (its jobs and runs stay)."""
    schedules.remove_schedule(session, name, tenant_id=tenant)


@router.post("/{name}/run", status_code=201)
def run_schedule_now(name: str, session: SessionDep, settings: SettingsDep,
                     tenant: TenantDep) -> FiringView:
    """Fire once now, outside the cron; the firing names the job or run it created."""
    firing = schedules.run_now(session=session, settings=settings, name=name,
                               fired_by=f"api:{tenant}", tenant_id=tenant)
    return schedules.firing_view(firing)


@router.get("/{name}/history")
def schedule_history(name: str, session: SessionDep, tenant: TenantDep,
                     limit: int = Query(50, ge=1, le=1000)) -> list[FiringView]:
    """Each firing, newest first: its job or run, how it ended, the promotion decision."""
    return schedules.history(session, name, tenant_id=tenant, limit=limit)
