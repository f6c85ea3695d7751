"""`nightowl up` runs broker, worker and API in the foreground; SIGTERM leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def _processes_with(marker: str) -> dict[int, str]:
    """Live processes whose environment or command line carries `marker`, with their command."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if marker.encode() in (entry / "environ").read_bytes() + cmdline:
                state = (entry / "stat").read_text().split()[2]
                if state != "Z":
                    found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fresh_home(tmp_path: Path) -> tuple[Path, int, dict[str, str]]:
    """A NIGHTOWL_HOME of the test's own, a free port, and an environment without the
    caller's NIGHTOWL_* settings."""
    home = tmp_path / "home"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env.update(NIGHTOWL_HOME=str(home), HF_HUB_OFFLINE="1")
    return home, port, env


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_up_serves_and_stops_without_orphans(tmp_path: Path) -> None:
    home, port, env = _fresh_home(tmp_path)
    log = (tmp_path / "up.log").open("wb")
    out = tmp_path / "up.out"
    proc = subprocess.Popen([sys.executable, "-m", "nightowl", "up", "--port", str(port),
                             "-c", "1"], env=env, stdout=out.open("wb"), stderr=log)
    try:
        deadline = time.monotonic() + 120
        # `up` prints the key (its only stdout line) once the API answers.
        while not out.read_text().strip():
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        key = out.read_text().strip()
        assert key.startswith("nk-") and len(out.read_text().splitlines()) == 1
        assert (home / "valkey.sock").exists()
        assert (home / "nightowl.db").exists()
        commands = " | ".join(_processes_with(str(home)).values())
        for part in ("valkey-server", "celery -A nightowl_tasks.app --quiet worker",
                     "nightowl api"):
            assert part in commands
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    deadline = time.monotonic() + 10
    while (left := _processes_with(str(home))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == {}, f"processes left behind: {left}\n{(tmp_path / 'up.log').read_text()}"
    assert not (home / "valkey.sock").exists()
    said = (tmp_path / "up.log").read_text()
    # One line per service, the dashboard and how to log in; no key in any URL.
    for line in ("broker:    embedded Valkey on", "database:  sqlite:///", "worker:    queues",
                 f"api:       http://127.0.0.1:{port}/v1",
                 f"dashboard: http://127.0.0.1:{port}/  (log in with the API key below)"):
        assert line in said, said
    assert key not in said and "key=" not in said
    # No Celery banner, root warning or queue table, and no access log unless --access-log.
    for noise in ("SecurityWarning", "superuser", "exchange=", "[queues]", "celery@",
                  "-------------- ", "GET /healthz", "Uvicorn running", "Traceback"):
        assert noise not in said, f"{noise!r} in:\n{said}"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_up_restarts_a_dead_worker_and_ctrl_c_stops_each_child_once(tmp_path: Path) -> None:
    home, port, env = _fresh_home(tmp_path)
    err = tmp_path / "up.log"
    out = tmp_path / "up.out"
    # As from a terminal: its own process group, which Ctrl-C signals as a whole.
    proc = subprocess.Popen([sys.executable, "-m", "nightowl", "up", "--port", str(port),
                             "-c", "1"], env=env, stdout=out.open("wb"), stderr=err.open("wb"),
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def worker_pids() -> list[int]:
        return [pid for pid, cmd in _processes_with(str(home)).items()
                if "celery -A nightowl_tasks.app --quiet worker" in cmd
                and pid == int(Path(f"/proc/{pid}/stat").read_text().split()[4])]

    def wait_for(what: str, check: Any, seconds: float = 120) -> Any:
        deadline = time.monotonic() + seconds
        while not (found := check()):
            assert proc.poll() is None, f"up ended while waiting for {what}:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"no {what}:\n{err.read_text()}"
            time.sleep(0.3)
        return found

    try:
        wait_for("key", lambda: out.read_text().strip())
        first = wait_for("worker", worker_pids)[0]
        os.kill(first, signal.SIGTERM)  # the worker dies; `up` must keep the stack going
        line = wait_for("restart line", lambda: [ln for ln in err.read_text().splitlines()
                                                 if "restarting" in ln])
        # Said on one line: which child, how it ended (an exit code, or a signal when it died
        # before Celery took SIGTERM over), and when it comes back.
        assert line[0].startswith("worker ") and "restarting it in 1 s" in line[0], line
        assert "exited with code 0" in line[0] or "killed by SIGTERM" in line[0], line
        wait_for("new worker", lambda: [p for p in worker_pids() if p != first])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200  # the API never went down
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    said = err.read_text()
    assert "Warm shutdown" not in said and "Traceback" not in said, said
    assert said.rstrip().endswith("stopped")
    assert out.read_text().strip().startswith("nk-") and len(out.read_text().split()) == 1


def test_a_child_that_keeps_dying_at_start_ends_up_naming_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import click

    from nightowl.cli import services
    from nightowl.platform.embedded import Children

    monkeypatch.setattr(services, "MAX_BACKOFF_SECONDS", 0.0)
    children = Children()
    children.start("worker", [sys.executable, "-c", "raise SystemExit(3)"])
    try:
        with pytest.raises(click.ClickException) as raised:
            services.supervise(children)
    finally:
        children.stop()
    assert str(raised.value).startswith("worker exited with code 3 5 times in a row")
    assert "`nightowl worker` alone" in str(raised.value)
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 4 and all(ln.startswith("worker exited with code 3 after") for ln in said)
