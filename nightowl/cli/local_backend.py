"""The CLI on this host's database and broker, as the operator (sees every tenant's rows)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nightowl.cli.backend import Row, ScheduleChange
from nightowl.cli.common import db_session, settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from nightowl.common.specs import FinetuneRequest
    from nightowl.jobs.service import JobSpec
    from nightowl.platform.orm import Job, Schedule
    from nightowl.query.query import ResultFilter

# The core is imported inside the methods: the root group builds this backend before any
# command runs, and `nightowl jobs --help` should not pay for Celery and every ORM module.


def job_dict(job: Job) -> dict[str, Any]:
    from nightowl.common.enums import JobStatus

    return {
        "id": job.id, "kind": job.kind.value, "model": job.model_ref,
        "model_version_id": job.model_version_id, "status": job.status.value,
        "total": job.total_items, "succeeded": job.succeeded_items, "failed": job.failed_items,
        "cancelled": job.cancelled_items, "expired": job.expired_items,
        "params": job.params, "metadata": job.metadata_, "parent_job_id": job.parent_job_id,
        "queue": job.queue, "deadline_at": job.deadline_at,
        **{f"{s.value}_at": getattr(job, f"{s.value}_at") for s in JobStatus},
        "errors": job.errors[:20],
    }


class LocalBackend:
    def require_local(self, command: str, why: str) -> None:
        return None

    # -- jobs and results -----------------------------------------------------------------
    def submit_job(self, *, spec: JobSpec, file: str, fmt: str | None, column: str | None,
                   id_column: str | None) -> dict[str, Any]:
        from nightowl.jobs import intake
        from nightowl.platform.auth import operator_tenant_id
        from nightowl.platform.orm import ModelVersion

        if file != "-" and not Path(file).is_file():
            raise click.BadParameter(f"no such file: {file}", param_hint="FILE")
        with db_session() as session:
            spec.tenant_id = operator_tenant_id(session)
            job = intake.submit(session=session, settings=settings(), spec=spec,
                                source=intake.FromPath(file, fmt, column, id_column))
            version = session.get(ModelVersion, job.model_version_id)
            return {"id": job.id, "total": job.total_items, "failed": job.failed_items,
                    "model_version": version.ref if version else job.model_ref}

    def list_jobs(self, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        from nightowl.common.enums import JobStatus
        from nightowl.jobs import service as job_service
        from nightowl.registry import outcome

        with db_session() as session:
            rows = job_service.list_jobs(session, status=JobStatus(status) if status else None,
                                         limit=limit)
            refs = outcome.version_refs(session, [j.model_version_id for j in rows])
            return [{
                "id": j.id, "kind": j.kind.value, "model": j.model_ref,
                "model_version": refs.get(j.model_version_id, ""), "status": j.status.value,
                "succeeded": j.succeeded_items, "failed": j.failed_items,
                "cancelled": j.cancelled_items, "expired": j.expired_items,
                "total": j.total_items, "created_at": j.created_at.isoformat(),
            } for j in rows]

    def get_job(self, job_id: str) -> dict[str, Any]:
        from nightowl.jobs import service as job_service

        with db_session() as session:
            return job_dict(job_service.get_job(session, job_id))

    def watch_job(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        from nightowl.cli.watch import snapshot, watch_job

        return snapshot(watch_job(job_id, timeout=timeout))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        from nightowl.jobs import service as job_service

        with db_session() as session:
            job = job_service.cancel_job(session, job_id)
            return {"id": job.id, "status": job.status.value}

    def retry_job(self, job_id: str) -> dict[str, Any]:
        from nightowl.jobs import service as job_service

        with db_session() as session:
            child = job_service.retry_job(session=session, settings=settings(), job_id=job_id)
            return {"id": child.id, "total": child.total_items}

    def job_stats(self, job_id: str) -> dict[str, Any]:
        from nightowl.jobs.stats import job_stats

        with db_session() as session:
            return job_stats(session, job_id)

    @contextmanager
    def job_rows(self, job_id: str, *, errors: bool) -> Iterator[tuple[str, Iterator[Row]]]:
        from nightowl.jobs import service as job_service
        from nightowl.jobs.results import iter_rows

        with db_session() as session:
            kind = job_service.get_job(session, job_id).kind.value
            yield kind, iter_rows(session, job_id, errors_only=errors)

    def query_results(self, f: ResultFilter, *, limit: int | None) -> Iterator[dict[str, Any]]:
        from nightowl.platform.db import session_factory
        from nightowl.query.query import iter_results

        yield from iter_results(session_factory(settings()), f, limit=limit)

    # -- models ---------------------------------------------------------------------------
    def list_models(self, name: str | None) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from nightowl.platform.orm import Tenant
        from nightowl.registry import versions as registry

        with db_session() as session:
            versions = registry.list_versions(session, name)
            aliases = registry.aliases_by_version(session)
            owners = dict(session.execute(select(Tenant.id, Tenant.name)).tuples().all())
            return [{
                "model": v.ref, "kind": v.kind.value, "aliases": aliases.get(v.id, []),
                "owner": "shared" if v.tenant_id is None else owners.get(v.tenant_id,
                                                                         v.tenant_id),
                "source": v.source, "metrics": dict(v.metrics),
            } for v in versions]

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        from nightowl.registry import outcome
        from nightowl.registry import versions as registry

        with db_session() as session:
            versions = registry.list_versions(session, name.split("@")[0])
            aliases = registry.aliases_by_version(session)
            bases = outcome.version_refs(session, [v.base_version_id for v in versions])
            return [{
                "ref": v.ref, "kind": v.kind.value, "aliases": aliases.get(v.id, []),
                "base_version": bases.get(v.base_version_id) if v.base_version_id else None,
                "training_run_id": v.training_run_id,
                "owner": "shared" if v.tenant_id is None else v.tenant_id,
                "metrics": dict(v.metrics), "source": v.source, "revision": v.revision,
                "sha256": v.sha256, "created_at": v.created_at,
            } for v in versions]

    def compare_models(self, a: str, b: str) -> dict[str, Any]:
        from nightowl.jobs.stats import compare_models

        with db_session() as session:
            return compare_models(session, a, b)

    # -- fine-tunes -----------------------------------------------------------------------
    def submit_finetune(self, request: FinetuneRequest, *, train_file: Path,
                        eval_file: Path | None) -> dict[str, Any]:
        from nightowl.finetune import data as finetune_data
        from nightowl.finetune import service as finetunes
        from nightowl.platform.auth import operator_tenant_id

        finetunes.check_request(settings(), request)
        train_rows = finetune_data.read_rows(train_file, request.kind)
        eval_rows = (finetune_data.read_rows(eval_file, request.kind, what="eval file")
                     if eval_file else None)
        with db_session() as session:
            run = finetunes.submit_finetune(session=session, settings=settings(), spec=(
                finetunes.FinetuneSpec(
                    **request.model_dump(), train_rows=train_rows, eval_rows=eval_rows,
                    tenant_id=operator_tenant_id(session),
                    dataset_info={"train_file": str(train_file),
                                  "eval_file": str(eval_file) if eval_file else None},
                )))
            return {"id": run.id, "train_rows": run.dataset["train_rows"],
                    "eval_rows": run.dataset["eval_rows"]}

    def run_progress(self, run_id: str) -> tuple[str, tuple[int, float] | None]:
        from nightowl.finetune import service as finetunes
        from nightowl.platform.db import session_factory

        with session_factory()() as session:
            run = finetunes.get_run(session, run_id)
            loss = finetunes.metrics_of(session, run_id, "train/loss")
            return run.status.value, (loss[-1].step, loss[-1].value) if loss else None

    def run_outcome_line(self, run_id: str) -> str:
        from nightowl.finetune import service as finetunes
        from nightowl.platform.db import session_factory
        from nightowl.platform.orm import ModelVersion
        from nightowl.registry import outcome

        with session_factory()() as session:
            run = finetunes.get_run(session, run_id)
            refs = outcome.version_refs(session, [run.base_version_id, run.result_version_id])
            result = (session.get(ModelVersion, run.result_version_id)
                      if run.result_version_id else None)
            return outcome.outcome_line(run, refs, result.metrics if result else None)

    def list_runs(self, limit: int) -> list[dict[str, Any]]:
        from nightowl.finetune import service as finetunes
        from nightowl.registry import outcome

        with db_session() as session:
            rows = finetunes.list_runs(session, limit=limit)
            refs = outcome.version_refs(session, [i for r in rows for i in
                                                  (r.base_version_id, r.result_version_id)])
            return [{
                "id": r.id, "kind": r.kind.value, "status": r.status.value,
                "register_as": r.register_as, "created_at": r.created_at.isoformat(),
                **outcome.run_outcome(r, refs),
            } for r in rows]

    def get_run(self, run_id: str) -> dict[str, Any]:
        from nightowl.finetune import service as finetunes
        from nightowl.registry import outcome

        with db_session() as session:
            run = finetunes.get_run(session, run_id)
            events = finetunes.events_of(session, run_id)
            out = outcome.run_outcome(run, outcome.version_refs(
                session, [run.base_version_id, run.result_version_id]))
            return {
                "id": run.id, "kind": run.kind.value, "status": run.status.value,
                "base_version": out["base_version"], "dataset": run.dataset,
                "hyperparams": run.hyperparams, "register_as": run.register_as,
                "promote_to": run.promote_to, "gate": run.gate_metric,
                "result_version": out["result_version"],
                "promotion_summary": out["promotion_summary"], "promotion": run.promotion,
                "attempts": run.attempts, "error": run.error,
                "events": [{"kind": e.kind, "details": e.details, "ts": e.ts.isoformat()}
                           for e in events],
            }

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        from nightowl.finetune import service as finetunes

        with db_session() as session:
            run = finetunes.cancel_run(session, run_id)
            return {"id": run.id, "status": run.status.value}

    def run_metrics(self, run_id: str) -> list[dict[str, Any]]:
        from nightowl.finetune import service as finetunes

        with db_session() as session:
            finetunes.get_run(session, run_id)
            return [{"step": m.step, "key": m.key, "value": m.value, "ts": m.ts.isoformat()}
                    for m in finetunes.metrics_of(session, run_id)]

    # -- schedules ------------------------------------------------------------------------
    @staticmethod
    def _view(session: Session, row: Schedule) -> dict[str, Any]:
        from nightowl.platform.orm import utcnow
        from nightowl.scheduling import schedules

        # The next slot even while paused: `schedule add --paused` says when it would fire.
        now = utcnow()
        return {**schedules.describe(session, row, now),
                "next_fire": schedules.next_fire(row, now).isoformat()}

    def add_schedule(self, name: str, change: ScheduleChange) -> dict[str, Any]:
        from nightowl.platform.auth import operator_tenant_id
        from nightowl.scheduling import schedules

        assert change.cron is not None and change.target is not None
        with db_session() as session:
            row = schedules.add_schedule(
                session=session, settings=settings(), name=name, cron=change.cron,
                timezone=change.timezone or "UTC", target=change.target, spec=change.spec,
                catchup=change.catchup or "once", enabled=change.enabled is not False,
                tenant_id=operator_tenant_id(session))
            return self._view(session, row)

    def edit_schedule(self, name: str, change: ScheduleChange) -> dict[str, Any]:
        from nightowl.scheduling import schedules

        with db_session() as session:
            row = schedules.update_schedule(
                session=session, settings=settings(), name=name, cron=change.cron,
                timezone=change.timezone, target=change.target, spec=change.spec,
                catchup=change.catchup)
            return self._view(session, row)

    def list_schedules(self) -> list[dict[str, Any]]:
        from nightowl.platform.orm import utcnow
        from nightowl.scheduling import schedules

        now = utcnow()
        with db_session() as session:
            return [schedules.describe(session, row, now)
                    for row in schedules.list_schedules(session)]

    def get_schedule(self, name: str) -> dict[str, Any]:
        from nightowl.platform.orm import utcnow
        from nightowl.scheduling import schedules

        with db_session() as session:
            return schedules.describe(session, schedules.get_schedule(session, name), utcnow())

    def set_schedule_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        from nightowl.scheduling import schedules

        with db_session() as session:
            return self._view(session, schedules.set_enabled(session, name, enabled))

    def remove_schedule(self, name: str) -> None:
        from nightowl.scheduling import schedules

        with db_session() as session:
            schedules.remove_schedule(session, name)

    def run_schedule(self, name: str) -> dict[str, Any]:
        from nightowl.scheduling import schedules

        who = os.getenv("USER") or os.getenv("LOGNAME") or "operator"
        with db_session() as session:
            firing = schedules.run_now(session=session, settings=settings(), name=name,
                                       fired_by=f"cli:{who}")
            return schedules.firing_view(firing)

    def schedule_history(self, name: str, limit: int) -> tuple[str, list[dict[str, Any]]]:
        from nightowl.scheduling import schedules

        with db_session() as session:
            tz = schedules.get_schedule(session, name).timezone
            return tz, schedules.history(session, name, limit=limit)

    # -- the fleet ------------------------------------------------------------------------
    def list_workers(self) -> list[dict[str, Any]]:
        from nightowl.fleet import heartbeats as fleet

        with db_session() as session:
            return fleet.describe(session, settings())
