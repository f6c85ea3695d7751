"""`nightowl jobs`: list, show, watch, cancel, retry."""

from __future__ import annotations

import json
import sys

import click

from nightowl import jobs as service
from nightowl.cli import remote
from nightowl.cli.common import db_session, settings
from nightowl.enums import JobStatus
from nightowl.models import Job
from nightowl.outcome import version_refs


@click.group()
def jobs() -> None:
    """List, show, watch, cancel and retry jobs."""


def job_dict(job: Job) -> dict[str, object]:
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


@jobs.command("list")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many, newest first.")
def list_(status: str | None, limit: int) -> None:
    """List recent jobs, newest first."""
    if (api := remote.client()) is not None:
        remote.print_jobs(api.jobs(status=status, limit=limit))
        return
    with db_session() as session:
        rows = service.list_jobs(session, status=JobStatus(status) if status else None,
                                 limit=limit)
        refs = version_refs(session, [j.model_version_id for j in rows])
    remote.print_jobs([{
        "id": j.id, "kind": j.kind.value, "model": j.model_ref,
        "model_version": refs.get(j.model_version_id, ""), "status": j.status.value,
        "succeeded": j.succeeded_items, "failed": j.failed_items,
        "cancelled": j.cancelled_items, "expired": j.expired_items, "total": j.total_items,
        "created_at": j.created_at.isoformat(),
    } for j in rows])


@jobs.command()
@click.argument("job_id")
def show(job_id: str) -> None:
    """Print one job as JSON."""
    if (api := remote.client()) is not None:
        click.echo(json.dumps(api.job(job_id), indent=2))
        return
    with db_session() as session:
        job = service.get_job(session, job_id)
        click.echo(json.dumps(job_dict(job), default=str, indent=2))


@jobs.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
def watch(job_id: str, timeout: float | None) -> None:
    """Draw a progress bar with items/s and ETA until the job finishes."""
    if (api := remote.client()) is not None:
        sys.exit(0 if api.watch(job_id, timeout=timeout)["status"] == "completed" else 1)
    from nightowl.cli.watch import watch_job

    final = watch_job(job_id, timeout=timeout)
    sys.exit(0 if final.status == JobStatus.COMPLETED else 1)


@jobs.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job: running chunks stop at the next micro-batch; finished rows are kept."""
    if (api := remote.client()) is not None:
        cancelled = api.cancel(job_id)
        click.echo(f"{cancelled['id']} {cancelled['status']}")
        return
    with db_session() as session:
        job = service.cancel_job(session, job_id)
        click.echo(f"{job.id} {job.status.value}")


@jobs.command()
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Make a child job of the failed, cancelled and expired items; prints its id last."""
    if (api := remote.client()) is not None:
        click.echo(api.retry(job_id)["id"])
        return
    with db_session() as session:
        child = service.retry_job(session=session, settings=settings(), job_id=job_id)
        click.echo(f"retrying {child.total_items} items of {job_id}", err=True)
        click.echo(child.id)


def _add_stats() -> None:
    from nightowl.cli.stats import stats

    jobs.add_command(stats)


_add_stats()
