"""Test helpers: a real worker process, waiting on a job, writing input files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from nightowl.db import session_factory
from nightowl.enums import JobStatus
from nightowl.models import Job

FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)


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
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log_fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


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
