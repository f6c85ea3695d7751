"""A live progress bar for one job, polled from SQL (the only place progress lives)."""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nightowl.db import session_factory
from nightowl.enums import JobStatus
from nightowl.jobs import get_job
from nightowl.models import Job


def watch_job(job_id: str, *, interval: float = 0.5, timeout: float | None = None) -> Job:
    """Draw progress until the job is final; returns its final row."""
    console = Console(stderr=True)
    factory = session_factory()
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.fields[status]:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9} items/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(job_id, total=None, status="", rate="-")
        first_done: tuple[float, int] | None = None
        while True:
            with factory() as session:
                job = get_job(session, job_id)
            now = time.monotonic()
            done = job.done_items
            if first_done is None and job.status != JobStatus.QUEUED:
                first_done = (now, done)
            rate = "-"
            if first_done is not None and now > first_done[0] + 0.5:
                rate = f"{(done - first_done[1]) / (now - first_done[0]):.1f}"
            progress.update(task, total=job.total_items, completed=done,
                            status=job.status.value, rate=rate)
            if job.status.terminal:
                break
            if timeout is not None and now - started > timeout:
                raise click.ClickException(f"job {job_id} still {job.status.value} after "
                                           f"{timeout:.0f}s")
            time.sleep(interval)
    summary(job)
    return job


def summary(job: Job) -> None:
    seconds = None
    if job.completed_at or job.cancelled_at or job.expired_at:
        end = job.completed_at or job.cancelled_at or job.expired_at
        start = job.in_progress_at or job.queued_at
        if end and start:
            seconds = (end - start).total_seconds()
    rate = f", {job.succeeded_items / seconds:.1f} items/s" if seconds else ""
    click.echo(
        f"{job.id} {job.status.value}: {job.succeeded_items} succeeded, {job.failed_items} failed,"
        f" {job.cancelled_items} cancelled, {job.expired_items} expired of {job.total_items}"
        f"{rate}",
        err=True,
    )
    sys.stderr.flush()
