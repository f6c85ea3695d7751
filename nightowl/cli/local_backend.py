"""The CLI on this host's database and broker, as the operator (sees every tenant's rows)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nightowl.cli.backend import Row
from nightowl.cli.common import db_session, settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from nightowl.common.specs import FinetuneRequest
    from nightowl.finetune.views import EventView, MetricView, RunView
    from nightowl.fleet.views import WorkerView
    from nightowl.jobs.service import JobSpec
    from nightowl.jobs.views import JobView, Submitted
    from nightowl.platform.orm import Schedule
    from nightowl.query.query import ResultFilter
    from nightowl.registry.views import VersionView
    from nightowl.scheduling.views import FiringView, ScheduleEdit, ScheduleView

# The core is imported inside the methods: the root group builds this backend before any
# command runs, and `nightowl jobs --help` should not pay for Celery and every ORM module.


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _unsent() -> Iterator[list[logging.LogRecord]]:
    """Dispatch logs a chunk it could not send (the broker is down) for operators; a user at
    the CLI gets one sentence from `submit` instead of that raw line."""
    held = _Held()
    logger = logging.getLogger("nightowl.jobs.dispatch")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(held)
    try:
        yield held.records
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate


class LocalBackend:
    def require_local(self, command: str, why: str) -> None:
        return None

    # -- jobs and results -----------------------------------------------------------------
    def submit_job(self, *, spec: JobSpec, file: str, fmt: str | None, column: str | None,
                   id_column: str | None) -> Submitted:
        from nightowl.jobs import intake
        from nightowl.jobs.views import Submitted, job_view
        from nightowl.platform import broker
        from nightowl.platform.auth import operator_tenant_id

        if file != "-" and not Path(file).is_file():
            raise click.BadParameter(f"no such file: {file}", param_hint="FILE")
        with db_session() as session, _unsent() as unsent:
            spec.tenant_id = operator_tenant_id(session)
            job = intake.submit(session=session, settings=settings(), spec=spec,
                                source=intake.FromPath(file, fmt, column, id_column))
            # A failed send says the broker is down; with the window already full nothing was
            # sent, so ask the broker itself.
            down = bool(unsent) or not broker.ping(settings())
            return Submitted(**job_view(session, job).model_dump(), broker_down=down)

    def list_jobs(self, *, status: str | None, limit: int) -> list[JobView]:
        from nightowl.common.enums import JobStatus
        from nightowl.jobs import service as job_service
        from nightowl.jobs.views import job_views

        with db_session() as session:
            return job_views(session, job_service.list_jobs(
                session, status=JobStatus(status) if status else None, limit=limit))

    def get_job(self, job_id: str) -> JobView:
        from nightowl.jobs import service as job_service
        from nightowl.jobs.views import job_view

        with db_session() as session:
            return job_view(session, job_service.get_job(session, job_id))

    def watch_job(self, job_id: str, *, timeout: float | None = None) -> JobView:
        from nightowl.cli.watch import watch_job

        return watch_job(job_id, timeout=timeout)

    def cancel_job(self, job_id: str) -> JobView:
        from nightowl.jobs import service as job_service
        from nightowl.jobs.views import job_view

        with db_session() as session:
            return job_view(session, job_service.cancel_job(session, job_id))

    def retry_job(self, job_id: str) -> JobView:
        from nightowl.jobs import service as job_service
        from nightowl.jobs.views import job_view

        with db_session() as session:
            child = job_service.retry_job(session=session, settings=settings(), job_id=job_id)
            return job_view(session, child)

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
    def list_versions(self, name: str | None) -> list[VersionView]:
        from nightowl.platform.auth import operator_tenant_id
        from nightowl.registry import versions as registry
        from nightowl.registry.views import version_views

        with db_session() as session:
            return version_views(session, registry.list_versions(session, name),
                                 tenant_id=operator_tenant_id(session))

    def compare_models(self, a: str, b: str) -> dict[str, Any]:
        from nightowl.jobs.stats import compare_models

        with db_session() as session:
            return compare_models(session, a, b)

    # -- fine-tunes -----------------------------------------------------------------------
    def submit_finetune(self, request: FinetuneRequest, *, train_file: Path,
                        eval_file: Path | None) -> RunView:
        from nightowl.finetune import data as finetune_data
        from nightowl.finetune import service as finetunes
        from nightowl.finetune.views import run_view
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
            return run_view(session, run)

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

    def list_runs(self, limit: int) -> list[RunView]:
        from nightowl.finetune import service as finetunes
        from nightowl.finetune.views import run_views

        with db_session() as session:
            return run_views(session, finetunes.list_runs(session, limit=limit))

    def get_run(self, run_id: str) -> RunView:
        from nightowl.finetune import service as finetunes
        from nightowl.finetune.views import run_view

        with db_session() as session:
            return run_view(session, finetunes.get_run(session, run_id))

    def run_events(self, run_id: str) -> list[EventView]:
        from nightowl.finetune.views import run_events

        with db_session() as session:
            return run_events(session, run_id)

    def cancel_run(self, run_id: str) -> RunView:
        from nightowl.finetune import service as finetunes
        from nightowl.finetune.views import run_view

        with db_session() as session:
            return run_view(session, finetunes.cancel_run(session, run_id))

    def run_metrics(self, run_id: str) -> list[MetricView]:
        from nightowl.finetune.views import run_metrics

        with db_session() as session:
            return run_metrics(session, run_id)

    # -- schedules ------------------------------------------------------------------------
    @staticmethod
    def _view(session: Session, row: Schedule) -> ScheduleView:
        from nightowl.platform.orm import utcnow
        from nightowl.scheduling import schedules

        # The next slot even while paused: `schedule add --paused` says when it would fire.
        now = utcnow()
        return schedules.describe(session, row, now).model_copy(
            update={"next_fire": schedules.next_fire(row, now).isoformat()})

    def add_schedule(self, name: str, change: ScheduleEdit) -> ScheduleView:
        from nightowl.common.enums import Catchup
        from nightowl.platform.auth import operator_tenant_id
        from nightowl.scheduling import schedules

        assert change.cron is not None and change.target is not None
        with db_session() as session:
            row = schedules.add_schedule(
                session=session, settings=settings(), name=name, cron=change.cron,
                timezone=change.timezone or "UTC", target=change.target, spec=change.spec,
                catchup=change.catchup or Catchup.ONCE, enabled=change.enabled is not False,
                tenant_id=operator_tenant_id(session))
            return self._view(session, row)

    def edit_schedule(self, name: str, change: ScheduleEdit) -> ScheduleView:
        from nightowl.scheduling import schedules

        with db_session() as session:
            row = schedules.update_schedule(
                session=session, settings=settings(), name=name, cron=change.cron,
                timezone=change.timezone, target=change.target, spec=change.spec,
                catchup=change.catchup)
            return self._view(session, row)

    def list_schedules(self) -> list[ScheduleView]:
        from nightowl.platform.orm import utcnow
        from nightowl.scheduling import schedules

        now = utcnow()
        with db_session() as session:
            return [schedules.describe(session, row, now)
                    for row in schedules.list_schedules(session)]

    def get_schedule(self, name: str) -> ScheduleView:
        from nightowl.platform.orm import utcnow
        from nightowl.scheduling import schedules

        with db_session() as session:
            return schedules.describe(session, schedules.get_schedule(session, name), utcnow())

    def set_schedule_enabled(self, name: str, enabled: bool) -> ScheduleView:
        from nightowl.scheduling import schedules

        with db_session() as session:
            return self._view(session, schedules.set_enabled(session, name, enabled))

    def remove_schedule(self, name: str) -> None:
        from nightowl.scheduling import schedules

        with db_session() as session:
            schedules.remove_schedule(session, name)

    def run_schedule(self, name: str) -> FiringView:
        from nightowl.scheduling import schedules

        who = os.getenv("USER") or os.getenv("LOGNAME") or "operator"
        with db_session() as session:
            firing = schedules.run_now(session=session, settings=settings(), name=name,
                                       fired_by=f"cli:{who}")
            return schedules.firing_view(firing)

    def schedule_history(self, name: str, limit: int) -> tuple[str, list[FiringView]]:
        from nightowl.scheduling import schedules

        with db_session() as session:
            tz = schedules.get_schedule(session, name).timezone
            return tz, schedules.history(session, name, limit=limit)

    # -- the fleet ------------------------------------------------------------------------
    def list_workers(self) -> list[WorkerView]:
        from nightowl.fleet import heartbeats as fleet

        with db_session() as session:
            return fleet.describe(session, settings(), tenant_id=None)
