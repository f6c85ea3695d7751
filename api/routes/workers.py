"""/v1/workers: the fleet, from the workers' heartbeats in SQL (operators' view)."""

from __future__ import annotations

from fastapi import APIRouter

from nightowl.fleet import heartbeats as fleet
from nightowl.fleet.views import WorkerView
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep

router = APIRouter(prefix="/workers", tags=["ops"])


@router.get("")
def list_workers(session: SessionDep, settings: SettingsDep,
                 tenant: TenantDep) -> list[WorkerView]:
    """Live and recently dead workers: host, queues, device, your current jobs, items/s, last
    seen."""
    return fleet.describe(session, settings, tenant_id=tenant)
