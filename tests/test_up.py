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


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_up_serves_and_stops_without_orphans(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env.update(NIGHTOWL_HOME=str(home), HF_HUB_OFFLINE="1")
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
