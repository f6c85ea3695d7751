"""Test helpers: a real worker process, waiting on a job, writing input files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from nightowl.common.config import Settings
from nightowl.common.enums import TERMINAL_JOB_STATUSES, TERMINAL_RUN_STATUSES, TaskKind
from nightowl.platform.db import session_factory, session_scope
from nightowl.platform.embedded import stop_group
from nightowl.platform.orm import Job, TrainingRun
from nightowl.registry import versions as registry

FINAL = TERMINAL_JOB_STATUSES
RUN_FINAL = TERMINAL_RUN_STATUSES


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


class Started:
    """The processes a fixture started: call it with one to keep it; all stop at teardown."""

    def __init__(self) -> None:
        self.processes: list[Stoppable] = []

    def __call__(self, process: S) -> S:
        self.processes.append(process)
        return process

    @property
    def count(self) -> int:
        return len(self.processes)


@contextmanager
def stopped_after() -> Iterator[Started]:
    started = Started()
    try:
        yield started
    finally:
        for process in started.processes:
            process.stop()


class Worker:
    """A real `nightowl worker` process on the shared broker and database."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path) -> None:
        self.log = log
        self.log_fh = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nightowl", "worker", "--loglevel", "info",
             "-n", f"test-{uuid.uuid4().hex[:6]}@%h", *args],
            env={**os.environ, **env}, stdout=self.log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children), as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        stop_group(self.proc)
        self.log_fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def module_worker(env: dict[str, str], args: list[str],
                  tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Worker]:
    """A worker for a whole test module (`yield from` it in a module-scoped fixture)."""
    w = Worker(env, args, tmp_path_factory.mktemp(name) / "worker.log")
    yield w
    w.stop()


def register_unloaded_model(settings: Settings, prefix: str) -> str:
    """A sentiment model row under a fresh name; nothing loads it, so no files are needed."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with session_scope(settings) as s:
        registry.register(s, name=name, kind=TaskKind.SENTIMENT,
                          source=f"/nowhere/{prefix}-model")
    return name


def wait_for_job(job_id: str, *, timeout: float = 180, worker: Worker | None = None,
                 until: Callable[[Job], bool] | None = None) -> Job:
    """Poll SQL until the job is final (or `until` holds); fails with the worker's log."""
    factory = session_factory()
    deadline = time.monotonic() + timeout
    while True:
        with factory() as s:
            job = s.get(Job, job_id)
            assert job is not None
            if until(job) if until else job.status in FINAL:
                return job
        if time.monotonic() > deadline:
            log = worker.output()[-4000:] if worker else ""
            raise AssertionError(f"job {job_id} still {job.status.value} "
                                 f"({job.done_items}/{job.total_items})\n{log}")
        time.sleep(0.2)


def write_jsonl(path: Path, rows: list[dict[str, object]] | list[str]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def wait_for_run(run_id: str, worker: Worker, *, timeout: float = 300,
                 until: Callable[[Session, TrainingRun], bool] | None = None,
                 factory: sessionmaker[Session] | None = None) -> TrainingRun:
    """Poll SQL until the fine-tune is final (or `until` holds); fails with the worker's log."""
    factory = factory or session_factory()
    deadline = time.monotonic() + timeout
    while True:
        with factory() as s:
            run = s.get(TrainingRun, run_id)
            assert run is not None
            if until(s, run) if until else run.status in RUN_FINAL:
                return run
        assert time.monotonic() < deadline, f"run {run_id} {run.status}\n{worker.output()[-4000:]}"
        time.sleep(0.2)


@contextmanager
def api_process(env: dict[str, str], log: Path, args: tuple[str, ...] = ()) -> Iterator[str]:
    """A real `nightowl api` process on a free 127.0.0.1 port; yields its base URL. `args`:
    more of `nightowl api`'s options (e.g. --access-log)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nightowl", "api", "--host", "127.0.0.1", "--port", str(port),
             *args],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the API did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def count_rows(session: Session, model: Any) -> int:
    """Rows of a table as another process would see them now."""
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(model)) or 0
    session.commit()
    return n
