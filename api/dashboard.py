"""The web dashboard at `/`: server-rendered pages plus small JSON endpoints the pages poll.

Pages read through the same core services as the API and are scoped to the caller's tenant.
The charting library (uPlot, MIT) is vendored under api/static: nothing is fetched at run time.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select
from sqlalchemy.orm import Session

from nightowl.common.enums import ItemStatus
from nightowl.common.errors import InvalidInput, Unauthorized
from nightowl.common.specs import effective_hyperparams
from nightowl.common.timespec import parse_when
from nightowl.finetune import service as finetunes
from nightowl.fleet import heartbeats as fleet
from nightowl.jobs import service as job_service
from nightowl.jobs import stats
from nightowl.platform import auth
from nightowl.platform.orm import Job, ModelVersion, Schedule, TrainingMetric, TrainingRun
from nightowl.query import query
from nightowl.registry import versions as registry
from nightowl.registry.outcome import item_counts, run_outcome
from nightowl.scheduling import schedules
from nightowl_api import dashboard_ops
from nightowl_api.dashboard_auth import (
    COOKIE,
    CSRF_COOKIE,
    DashboardKeyMiddleware,
    safe_next,
)
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep

HERE = Path(__file__).parent
# One environment for every page, the error pages' included (its globals set once there).
templates = dashboard_ops.templates
router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(dashboard_ops.router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.add_middleware(DashboardKeyMiddleware)


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"nav": name.split(".")[0], **context})


def _refs(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(ModelVersion.id, ModelVersion.name, ModelVersion.version)
                           .where(ModelVersion.id.in_(ids)))
    return {i: f"{n}@v{v}" for i, n, v in rows}


def job_json(job: Job, refs: dict[int, str]) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind.value, "model": job.model_ref,
        "version": refs.get(job.model_version_id, ""), "status": job.status.value,
        "terminal": job.status.terminal, "total": job.total_items, "done": job.done_items,
        "succeeded": job.succeeded_items, "failed": job.failed_items,
        "cancelled": job.cancelled_items, "expired": job.expired_items,
        "counts": item_counts(succeeded=job.succeeded_items, failed=job.failed_items,
                              cancelled=job.cancelled_items, expired=job.expired_items,
                              total=job.total_items),
        "percent": round(100.0 * job.done_items / job.total_items, 1) if job.total_items else 0,
        # The succeeded part of what is done: a cancelled job's bar keeps what it finished.
        "ok_percent": round(100.0 * job.succeeded_items / job.done_items, 1)
        if job.done_items else 0,
        "created_at": job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _jobs(session: Session, tenant: str | None, limit: int = 50) -> list[dict[str, Any]]:
    rows = job_service.list_jobs(session, tenant_id=tenant, limit=limit)
    refs = _refs(session, {j.model_version_id for j in rows})
    return [job_json(j, refs) for j in rows]


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    """Recent jobs with live progress."""
    return _page(request, "jobs.html", jobs=_jobs(session, tenant))


@router.get("/ui/api/jobs")
def jobs_json(session: SessionDep, tenant: TenantDep,
              limit: int = Query(50, ge=1, le=500)) -> list[dict[str, Any]]:
    return _jobs(session, tenant, limit)


@router.get("/ui/api/jobs/{job_id}")
def job_json_one(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    job = job_service.get_job(session, job_id, tenant_id=tenant)
    return job_json(job, _refs(session, {job.model_version_id}))


def _filter_from(job_id: str, tenant: str | None, params: dict[str, str]) -> query.ResultFilter:
    status = params.get("status") or None
    known = [s.value for s in ItemStatus]
    if status is not None and status not in known:
        raise InvalidInput(f"status {status!r} is not one of {', '.join(known)}")
    since, until = params.get("since") or None, params.get("until") or None
    return query.ResultFilter(
        job_id=job_id, tenant_id=tenant, status=ItemStatus(status) if status else None,
        label=params.get("label") or None, contains=params.get("contains") or None,
        since=parse_when(since, tz=UTC) if since else None,
        until=parse_when(until, tz=UTC) if until else None)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, session: SessionDep, tenant: TenantDep,
             cursor: int = Query(0, ge=0)) -> HTMLResponse:
    """One job: live progress, its numbers, and its results with filters and pages."""
    job = job_service.get_job(session, job_id, tenant_id=tenant)
    filters = {k: request.query_params.get(k, "")
               for k in ("status", "label", "contains", "since", "until")}
    error = None
    try:
        rows, nxt = query.page(session, _filter_from(job_id, tenant, filters),
                               after_id=cursor, limit=PAGE_SIZE)
    except InvalidInput as e:
        rows, nxt, error = [], None, str(e)
    active = {k: v for k, v in filters.items() if v}
    return _page(
        request, "job.html", job=job_json(job, _refs(session, {job.model_version_id})),
        stats=stats.job_stats(session, job_id, tenant_id=tenant), rows=rows, filters=filters,
        statuses=[s.value for s in ItemStatus], error=error, first_page=cursor > 0,
        first_url=f"?{urlencode(active)}",
        next_url=f"?{urlencode({**active, 'cursor': nxt})}" if nxt is not None else None)


def run_json(run: TrainingRun, refs: dict[int, str]) -> dict[str, Any]:
    return {
        "id": run.id, "kind": run.kind.value, "status": run.status.value,
        "base": refs.get(run.base_version_id, ""),
        "result": refs.get(run.result_version_id, "") if run.result_version_id else "",
        "register_as": run.register_as or "", "promote_to": run.promote_to or "",
        "promotion": run.promotion, "error": run.error,
        "promotion_summary": run_outcome(run, refs)["promotion_summary"],
        "created_at": run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "finished": run.status.terminal,
    }


def _run_refs(session: Session, runs: list[TrainingRun]) -> dict[int, str]:
    ids = {r.base_version_id for r in runs} | {r.result_version_id for r in runs
                                              if r.result_version_id}
    return _refs(session, ids)


@router.get("/ui/runs", response_class=HTMLResponse)
def runs_page(request: Request, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    """Fine-tune runs, newest first."""
    runs = finetunes.list_runs(session, tenant_id=tenant, limit=100)
    refs = _run_refs(session, runs)
    return _page(request, "runs.html", runs=[run_json(r, refs) for r in runs])


@router.get("/ui/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, session: SessionDep,
             tenant: TenantDep) -> HTMLResponse:
    """One fine-tune: its training curves, drawn from training_metrics, and its events."""
    run = finetunes.get_run(session, run_id, tenant_id=tenant)
    events = finetunes.events_of(session, run_id)[-200:]
    return _page(request, "run.html", run=run_json(run, _run_refs(session, [run])),
                 hyperparams=effective_hyperparams(run.hyperparams),
                 given=sorted(k for k, v in run.hyperparams.items() if v is not None),
                 events=events)


@router.get("/ui/api/runs/{run_id}/metrics")
def run_metrics(run_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    run = finetunes.get_run(session, run_id, tenant_id=tenant)
    series: dict[str, dict[str, list[float]]] = {}
    rows = session.execute(select(TrainingMetric.key, TrainingMetric.step, TrainingMetric.value)
                           .where(TrainingMetric.run_id == run_id)
                           .order_by(TrainingMetric.key, TrainingMetric.step))
    for key, step, value in rows:
        s = series.setdefault(key, {"steps": [], "values": []})
        s["steps"].append(step)
        s["values"].append(value)
    return {"status": run.status.value, "series": series}


@router.get("/ui/workers", response_class=HTMLResponse)
def workers_page(request: Request, session: SessionDep, settings: SettingsDep,
                 tenant: TenantDep) -> HTMLResponse:
    """The fleet from its heartbeats: live and recently dead workers, with your work on them."""
    workers = fleet.describe(session, settings, tenant_id=tenant)
    return _page(request, "workers.html", workers=workers)


@router.get("/ui/models", response_class=HTMLResponse)
def models_page(request: Request, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    """The caller's own and the shared model versions, with aliases and eval metrics."""
    aliases = registry.aliases_by_version(session, tenant_id=tenant)
    listed = registry.list_versions(session, tenant_id=tenant)
    owners = auth.owner_names(session, [v.tenant_id for v in listed])
    versions = [
        {"ref": v.ref, "kind": v.kind.value, "aliases": aliases.get(v.id, []),
         "source": owners.get(v.tenant_id, v.tenant_id),
         "created_at": v.created_at.strftime("%Y-%m-%d %H:%M"),
         "metrics": {k: m for k, m in sorted(v.metrics.items()) if isinstance(m, int | float)}}
        for v in listed
    ]
    return _page(request, "models.html", versions=versions)


def fire_text(schedule: Schedule, now: datetime | None = None) -> str:
    """The next firing as the scheduler itself computes it (DST folds included)."""
    try:
        fire = schedules.next_fire(schedule, now or datetime.now(UTC))
    except Exception as e:  # a bad row should show as bad, not take the page down
        return f"invalid ({e})"
    local = fire.astimezone(ZoneInfo(schedule.timezone))
    return f"{local.strftime('%Y-%m-%d %H:%M %Z')} ({fire.strftime('%H:%M')} UTC)"


@router.get("/ui/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    """Schedules with their next fire times."""
    rows = [
        {"name": s.name, "cron": s.cron, "timezone": s.timezone, "target": s.target,
         "enabled": s.enabled,
         "last": (last.scheduled_for.strftime("%Y-%m-%d %H:%M")
                  if (last := schedules.last_firing(session, s.id)) else "-"),
         "next": fire_text(s) if s.enabled else "disabled"}
        for s in schedules.list_schedules(session, tenant_id=tenant)
    ]
    return _page(request, "schedules.html", schedules=rows)


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", refused: bool = False) -> HTMLResponse:
    # Double-submit token: another site's page can post this form, but cannot read the cookie
    # or the page, so it cannot log a visitor into the attacker's tenant.
    token = secrets.token_urlsafe(24)
    response = _page(request, "login.html", next=safe_next(next), refused=refused, csrf=token)
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/ui/login")
    return response


@router.post("/ui/login")
def login(request: Request, session: SessionDep, key: str = Form(...), next: str = Form("/"),
          csrf: str = Form("")) -> Response:
    """Open a session for a valid API key; the cookie holds the session's id, not the key."""
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf):
        return RedirectResponse(f"/ui/login?next={quote(safe_next(next), safe='')}",
                                status_code=303)
    try:
        sid = auth.open_session(session, key.strip())
    except Unauthorized:
        return RedirectResponse(
            f"/ui/login?refused=1&next={quote(safe_next(next), safe='')}", status_code=303)
    session.commit()
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict",
                        max_age=int(auth.SESSION_LIFETIME.total_seconds()))
    response.delete_cookie(CSRF_COOKIE, path="/ui/login")
    return response


@router.post("/ui/logout")
def logout(request: Request, session: SessionDep, csrf: str = Form("")) -> Response:
    """End the session (a POST carrying the page's token: a link elsewhere cannot log you out)."""
    sid = request.cookies.get(COOKIE, "")
    if not sid or not secrets.compare_digest(auth.session_token(sid, "logout"), csrf):
        return RedirectResponse("/", status_code=303)
    auth.close_session(session, sid)
    session.commit()
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response
