"""Watching one job until it ends, from SQL or through the API: a live bar on a terminal,
plain progress lines when piped, a warning within seconds when nothing can run the job, and a
Ctrl-C that says the job goes on."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import NoReturn

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

from nightowl.common.enums import JobStatus
from nightowl.jobs.views import JobView
from nightowl.registry.outcome import item_counts

# How long a job may sit queued with nothing done before we ask whether anything can run it.
NO_PROGRESS_CHECK_S = 3.0
# Piped output: one line when the status changes, else at most one line this often.
LINE_EVERY_S = 5.0


def follow(job_id: str, fetch: Callable[[], JobView], health: Callable[[], str | None], *,
           interval: float = 0.5, timeout: float | None = None,
           console: Console | None = None) -> JobView:
    """Poll `fetch` until the job is final; returns its last snapshot."""
    console = console or Console(stderr=True)
    try:
        if console.is_terminal:
            return _bar(job_id, fetch, health, interval, timeout, console)
        return _lines(job_id, fetch, health, interval, timeout)
    except KeyboardInterrupt:
        left_running(job_id)


def left_running(job_id: str) -> NoReturn:
    """Ctrl-C stops the watching, never the job: say so, and how to get back to it."""
    click.echo(f"\nstopped watching; job {job_id} goes on without you.\n"
               f"  watch it:  nightowl jobs watch {job_id}\n"
               f"  cancel it: nightowl jobs cancel {job_id}", err=True)
    sys.exit(130)


class _Stall:
    """Asks once whether a worker and a broker are there, when a job shows no progress."""

    def __init__(self, health: Callable[[], str | None], say: Callable[[str], None]) -> None:
        self.health, self.say = health, say
        self.started = time.monotonic()
        self.asked = False

    def check(self, s: JobView) -> None:
        if self.asked or s.done or s.status not in (JobStatus.QUEUED, JobStatus.IN_PROGRESS):
            return
        if time.monotonic() - self.started < NO_PROGRESS_CHECK_S:
            return
        self.asked = True
        warning = self.health()
        if warning:
            self.say(f"warning: {warning}")


def _timed_out(job_id: str, s: JobView, started: float, timeout: float | None) -> None:
    if timeout is not None and time.monotonic() - started > timeout:
        raise click.ClickException(f"job {job_id} still {s.status.value} after {timeout:.0f}s")


def _bar(job_id: str, fetch: Callable[[], JobView], health: Callable[[], str | None],
         interval: float, timeout: float | None, console: Console) -> JobView:
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
    ) as progress:
        task = progress.add_task(job_id, total=None, status="", rate="-")
        stall = _Stall(health, lambda text: progress.console.print(text, style="yellow",
                                                                    markup=False))
        first: tuple[float, int] | None = None
        while True:
            s = fetch()
            now = time.monotonic()
            if first is None and s.status != JobStatus.QUEUED:
                first = (now, s.done)
            rate = "-"
            if first is not None and now > first[0] + 0.5:
                rate = f"{(s.done - first[1]) / (now - first[0]):.1f}"
            progress.update(task, total=s.total, completed=s.done, status=s.status.value,
                            rate=rate)
            if s.status.terminal:
                return s
            stall.check(s)
            _timed_out(job_id, s, started, timeout)
            time.sleep(interval)


def _lines(job_id: str, fetch: Callable[[], JobView], health: Callable[[], str | None],
           interval: float, timeout: float | None) -> JobView:
    """Not a terminal (a pipe, a log file, CI): whole lines, never carriage-return frames."""
    started = time.monotonic()
    stall = _Stall(health, lambda text: click.echo(text, err=True))
    last: tuple[str, int] | None = None
    last_at = 0.0
    while True:
        s = fetch()
        now = time.monotonic()
        state = (s.status.value, s.done)
        if last is None or state[0] != last[0] or (
                state[1] != last[1] and now - last_at >= LINE_EVERY_S):
            click.echo(f"{s.status.value} {s.done}/{s.total}", err=True)
            last, last_at = state, now
        if s.status.terminal:
            return s
        stall.check(s)
        _timed_out(job_id, s, started, timeout)
        time.sleep(interval)


def summary(s: JobView) -> None:
    seconds = None
    end, start = s.end_at, s.in_progress_at or s.queued_at
    if end is not None and start is not None:
        seconds = (end - start).total_seconds()
    rate = f", {s.succeeded / seconds:.1f} items/s" if seconds else ""
    counts = item_counts(succeeded=s.succeeded, failed=s.failed, cancelled=s.cancelled,
                         expired=s.expired, total=s.total)
    click.echo(f"{s.id} {s.status.value}: {counts}{rate}", err=True)
    sys.stderr.flush()


def watch_job(job_id: str, *, interval: float = 0.5, timeout: float | None = None) -> JobView:
    """Watch a job from SQL until it is final; returns its final state."""
    from nightowl.cli.common import settings
    from nightowl.fleet.liveness import queue_health
    from nightowl.jobs.service import get_job
    from nightowl.jobs.views import job_view
    from nightowl.platform.db import session_factory

    factory = session_factory()

    def view() -> JobView:
        with factory() as session:
            return job_view(session, get_job(session, job_id))

    def health() -> str | None:
        s = settings()
        return queue_health(s, view().queue).warning(s)

    follow(job_id, view, health, interval=interval, timeout=timeout)
    job = view()
    summary(job)
    return job
