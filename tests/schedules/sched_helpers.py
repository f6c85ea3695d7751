"""Helpers of the schedule tests: a real beat process, the CLI, and waiting on firings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from nightowl.cli import cli
from nightowl.platform.db import session_factory
from nightowl.platform.embedded import stop_group
from nightowl.platform.orm import Schedule, ScheduleRun


class Beat:
    """A real `nightowl beat` process on the shared broker and database."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.log_fh = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nightowl", "beat", "--loglevel", "info"],
            env={**os.environ, **env}, stdout=self.log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_group(self.proc, timeout=10)
        self.log_fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def nightowl(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(cli, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


def firings(name: str) -> list[ScheduleRun]:
    with session_factory()() as s:
        sid = s.scalar(select(Schedule.id).where(Schedule.name == name))
        return list(s.scalars(select(ScheduleRun).where(ScheduleRun.schedule_id == sid)
                              .order_by(ScheduleRun.scheduled_for)))


def wait_firings(name: str, n: int, *, timeout: float, beats: list[Beat] | None = None
                 ) -> list[ScheduleRun]:
    """Poll until `name` has n firings past 'firing'; fails with the beats' logs."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [f for f in firings(name) if f.status != "firing"]
        if len(rows) >= n:
            return rows
        if time.monotonic() > deadline:
            logs = "\n".join(b.output()[-3000:] for b in beats or [])
            raise AssertionError(f"{name}: {len(rows)} of {n} firings\n{logs}")
        time.sleep(0.2)
