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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

import click

if TYPE_CHECKING:
    from nightowl.common.specs import FinetuneRequest
    from nightowl.jobs.service import JobSpec
    from nightowl.query.query import ResultFilter

Row = tuple[int, dict[str, Any]]
C = TypeVar("C", bound=click.Command)


@dataclass
class ScheduleChange:
    """`schedule add` / `schedule edit`: what to set (None keeps the stored value)."""

    cron: str | None = None
    timezone: str | None = None
    target: str | None = None
    spec: dict[str, Any] | None = None
    catchup: str | None = None
    enabled: bool | None = None


class Backend(Protocol):
    """What the commands ask for; every answer is plain data, printed by the command."""

    def require_local(self, command: str, why: str) -> None:
        """Refuse (non-zero exit, one message) where the command cannot run."""

    # -- jobs and results -----------------------------------------------------------------
    def submit_job(self, *, spec: JobSpec, file: str, fmt: str | None, column: str | None,
                   id_column: str | None) -> dict[str, Any]:
        """Store and queue a job; {id, total, failed, model_version}."""
    def list_jobs(self, *, status: str | None, limit: int) -> list[dict[str, Any]]: ...
    def get_job(self, job_id: str) -> dict[str, Any]: ...
    def watch_job(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Follow the job until it is final (bar, stall warning, summary); its last state."""
    def cancel_job(self, job_id: str) -> dict[str, Any]: ...
    def retry_job(self, job_id: str) -> dict[str, Any]: ...
    def job_stats(self, job_id: str) -> dict[str, Any]: ...
    def job_rows(self, job_id: str, *,
                 errors: bool) -> AbstractContextManager[tuple[str, Iterator[Row]]]:
        """The job's kind and its rows in input order, valid inside the `with`."""
    def query_results(self, f: ResultFilter, *, limit: int | None) -> Iterator[dict[str, Any]]:
        ...

    # -- models ---------------------------------------------------------------------------
    def list_models(self, name: str | None) -> list[dict[str, Any]]:
        """Versions: {model, owner, kind, aliases, source, metrics}."""
    def model_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of NAME, oldest first; keys a backend cannot see are None."""
    def compare_models(self, a: str, b: str) -> dict[str, Any]: ...

    # -- fine-tunes -----------------------------------------------------------------------
    def submit_finetune(self, request: FinetuneRequest, *, train_file: Path,
                        eval_file: Path | None) -> dict[str, Any]:
        """Read (or upload) the files and queue the run; {id, train_rows, eval_rows}."""
    def run_progress(self, run_id: str) -> tuple[str, tuple[int, float] | None]:
        """The run's status and its last train/loss (step, value), if any."""
    def run_outcome_line(self, run_id: str) -> str: ...
    def list_runs(self, limit: int) -> list[dict[str, Any]]: ...
    def get_run(self, run_id: str) -> dict[str, Any]: ...
    def cancel_run(self, run_id: str) -> dict[str, Any]: ...
    def run_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """{step, key, value, ts} by step."""

    # -- schedules ------------------------------------------------------------------------
    def add_schedule(self, name: str, change: ScheduleChange) -> dict[str, Any]: ...
    def edit_schedule(self, name: str, change: ScheduleChange) -> dict[str, Any]: ...
    def list_schedules(self) -> list[dict[str, Any]]: ...
    def get_schedule(self, name: str) -> dict[str, Any]: ...
    def set_schedule_enabled(self, name: str, enabled: bool) -> dict[str, Any]: ...
    def remove_schedule(self, name: str) -> None: ...
    def run_schedule(self, name: str) -> dict[str, Any]: ...
    def schedule_history(self, name: str, limit: int) -> tuple[str, list[dict[str, Any]]]:
        """The schedule's timezone and its firings, newest first."""

    # -- the fleet ------------------------------------------------------------------------
    def list_workers(self) -> list[dict[str, Any]]: ...


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
