"""Where the CLI's commands do their work, chosen once by the root group.

Without --api the local backend calls the core on the database and broker this host is
configured for, as the operator who sees every tenant. With --api (or NIGHTOWL_API_URL) the
remote backend calls that HTTP API as the key's tenant. A command's body is the same either
way: it asks the backend, then prints. Commands that only make sense on the operator's own host
(migrations, keys, quotas, SQL, the processes) are marked `local_only`: through --api they say
so and exit non-zero instead of quietly working on whatever database this host points at.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

import click

if TYPE_CHECKING:
    from nightowl.common.specs import FinetuneRequest
    from nightowl.finetune.views import EventView, MetricView, RunView
    from nightowl.fleet.views import WorkerView
    from nightowl.jobs.service import JobSpec
    from nightowl.jobs.views import JobView, Submitted
    from nightowl.query.query import ResultFilter
    from nightowl.registry.views import VersionView
    from nightowl.scheduling.views import FiringView, ScheduleEdit, ScheduleView

Row = tuple[int, dict[str, Any]]
C = TypeVar("C", bound=click.Command)


class Backend(Protocol):
    """What the commands ask for. A resource comes back as the core's view of it (the model the
    HTTP API answers with), so a command prints the same fields through either backend."""

    def require_local(self, command: str, why: str) -> None:
        """Refuse (non-zero exit, one message) where the command cannot run."""

    # -- jobs and results -----------------------------------------------------------------
    def submit_job(self, *, spec: JobSpec, file: str, fmt: str | None, column: str | None,
                   id_column: str | None) -> Submitted:
        """Store and queue a job."""
    def list_jobs(self, *, status: str | None, limit: int) -> list[JobView]: ...
    def get_job(self, job_id: str) -> JobView: ...
    def watch_job(self, job_id: str, *, timeout: float | None = None) -> JobView:
        """Follow the job until it is final (bar, stall warning, summary); its last state."""
    def cancel_job(self, job_id: str) -> JobView: ...
    def retry_job(self, job_id: str) -> JobView:
        """The child job of the parent's failed, cancelled and expired items."""
    def job_stats(self, job_id: str) -> dict[str, Any]: ...
    def job_rows(self, job_id: str, *,
                 errors: bool) -> AbstractContextManager[tuple[str, Iterator[Row]]]:
        """The job's kind and its rows in input order, valid inside the `with`."""
    def query_results(self, f: ResultFilter, *, limit: int | None) -> Iterator[dict[str, Any]]:
        ...

    # -- models ---------------------------------------------------------------------------
    def list_versions(self, name: str | None) -> list[VersionView]:
        """Every version (of NAME, if given), oldest first per name; what a backend cannot
        see (the server's paths) is None."""
    def compare_models(self, a: str, b: str) -> dict[str, Any]: ...

    # -- fine-tunes -----------------------------------------------------------------------
    def submit_finetune(self, request: FinetuneRequest, *, train_file: Path,
                        eval_file: Path | None) -> RunView:
        """Read (or upload) the files and queue the run."""
    def run_progress(self, run_id: str) -> tuple[str, tuple[int, float] | None]:
        """The run's status and its last train/loss (step, value), if any."""
    def run_outcome_line(self, run_id: str) -> str: ...
    def list_runs(self, limit: int) -> list[RunView]: ...
    def get_run(self, run_id: str) -> RunView: ...
    def run_events(self, run_id: str) -> list[EventView]: ...
    def cancel_run(self, run_id: str) -> RunView: ...
    def run_metrics(self, run_id: str) -> list[MetricView]:
        """The metric points by step."""

    # -- schedules ------------------------------------------------------------------------
    def add_schedule(self, name: str, change: ScheduleEdit) -> ScheduleView: ...
    def edit_schedule(self, name: str, change: ScheduleEdit) -> ScheduleView: ...
    def list_schedules(self) -> list[ScheduleView]: ...
    def get_schedule(self, name: str) -> ScheduleView: ...
    def set_schedule_enabled(self, name: str, enabled: bool) -> ScheduleView: ...
    def remove_schedule(self, name: str) -> None: ...
    def run_schedule(self, name: str) -> FiringView: ...
    def schedule_history(self, name: str, limit: int) -> tuple[str, list[FiringView]]:
        """The schedule's timezone and its firings, newest first."""

    # -- the fleet ------------------------------------------------------------------------
    def list_workers(self) -> list[WorkerView]: ...


def make_backend(api_url: str | None, api_key: str | None) -> Backend:
    if api_url:
        from nightowl.cli.remote_backend import RemoteBackend

        return RemoteBackend(api_url, api_key)
    from nightowl.cli.local_backend import LocalBackend

    return LocalBackend()


def current() -> Backend:
    """The backend the root group chose (local when a command runs outside the root group)."""
    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    if obj is None:
        obj = ctx.find_root().obj = make_backend(None, None)
    backend: Backend = obj
    return backend


def local_only(why: str) -> Callable[[C], C]:
    """Mark a command (or every command of a group) as one that runs only on the operator's
    host: through --api it refuses with `why` instead of running."""

    def mark(command: C) -> C:
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                mark(sub)
            return command
        inner = command.callback
        assert inner is not None

        @functools.wraps(inner)
        def callback(*args: Any, **kwargs: Any) -> Any:
            names, ctx = [], click.get_current_context()
            while ctx.parent is not None:  # the root's name is however it was started
                names.append(ctx.info_name or "")
                ctx = ctx.parent
            current().require_local(" ".join(["nightowl", *reversed(names)]), why)
            return inner(*args, **kwargs)

        command.callback = callback
        return command

    return mark


def jsonl_bytes(rows: Iterable[dict[str, Any]]) -> io.BytesIO:
    """Rows as a JSONL file in memory, to read or upload."""
    return io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in rows))


def open_input(file: str) -> tuple[IO[bytes], str]:
    """FILE ('-' for stdin) opened for reading, and the name to give it; the caller closes it.

    Standard input is copied to a temporary file first: an upload declares its length before
    the body, and a pipe's length is unknown (fstat gives only what is buffered in it)."""
    if file == "-":
        spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned open; the caller closes it)
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.seek(0)
        return spool, "stdin.jsonl"
    path = Path(file)
    if not path.is_file():
        raise click.BadParameter(f"no such file: {file}", param_hint="FILE")
    return path.open("rb"), path.name
