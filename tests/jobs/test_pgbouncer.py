"""A fleet behind PgBouncer in transaction pooling: the API and a real worker, each with a
pool of its own, share a few server connections; a job submitted through the API runs to the
end. In that mode a transaction may land on any server connection, so nothing may keep session
state between transactions: no session advisory locks (the maintenance pass holds a lease row),
no server-side prepared statements (NIGHTOWL_DATABASE_POOLER turns psycopg's off), no LISTEN."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from helpers import Worker, api_process
from nightowl.platform.db import session_scope
from nightowl.platform.orm import FleetLock, utcnow
from nightowl.platform.orm import Worker as WorkerRow

PG_URL = os.environ.get("NIGHTOWL_TEST_DATABASE_URL", "")
# Fewer server connections than the app opens clients (API, worker parent and child), so the
# test shows them shared.
SERVER_POOL = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pgbouncer() -> Iterator[tuple[str, int]]:
    """PgBouncer (transaction pooling) in front of the test database: (its URL, its port)."""
    if not PG_URL:
        pytest.skip("PgBouncer fronts PostgreSQL: CI runs this (NIGHTOWL_TEST_DATABASE_URL)")
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert os.path.exists(binary), "pgbouncer is not installed: apt-get install -y pgbouncer"
    url = make_url(PG_URL)
    port = _free_port()
    # Not under pytest's tmp_path (private to its user): run as root, pgbouncer drops to the
    # postgres user, which must reach its config and write its log.
    folder = Path(tempfile.mkdtemp(prefix="nightowl-pgbouncer-"))
    folder.chmod(0o777)
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n{url.database} = host={url.host or '127.0.0.1'} port={url.port or 5432} "
        f"dbname={url.database} user={url.username or 'postgres'}\n"
        "[pgbouncer]\nlisten_addr = 127.0.0.1\n"
        f"listen_port = {port}\nunix_socket_dir =\nauth_type = any\npool_mode = transaction\n"
        f"default_pool_size = {SERVER_POOL}\nmax_client_conn = 200\n"
        f"admin_users = {url.username or 'postgres'}\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits\n")
    as_root = ["-u", "postgres"] if os.geteuid() == 0 else []
    out = (folder / "stdout").open("wb")
    proc = subprocess.Popen([binary, *as_root, str(ini)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, dbname=url.database,
                                 user=url.username or "postgres", connect_timeout=1):
                break
        except psycopg.OperationalError:
            assert proc.poll() is None and time.monotonic() < deadline, (
                f"pgbouncer did not start: {(folder / 'stdout').read_text(errors='replace')}")
            time.sleep(0.2)
    try:
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False), port
    finally:
        proc.terminate()
        proc.wait(10)
        out.close()
        shutil.rmtree(folder, ignore_errors=True)


def _admin(port: int, command: str) -> list[dict[str, Any]]:
    """A SHOW command on PgBouncer's admin console."""
    user = make_url(PG_URL).username or "postgres"
    with psycopg.connect(host="127.0.0.1", port=port, dbname="pgbouncer", user=user,
                         autocommit=True, prepare_threshold=None) as conn:
        cur = conn.execute(command)
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _call(url: str, key: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{url}{path}", data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def test_api_and_worker_run_a_job_through_pgbouncer_transaction_pooling(
        pgbouncer: tuple[str, int], stack_env: dict[str, str], tmp_path: Path,
        start_worker: Callable[..., Worker], make_api_key: Callable[[str], str]) -> None:
    db_url, port = pgbouncer
    env = {"NIGHTOWL_DATABASE_URL": db_url, "NIGHTOWL_DATABASE_POOLER": "1",
           "NIGHTOWL_REAP_INTERVAL_SECONDS": "1"}
    key = make_api_key("bouncer")
    worker = start_worker("-Q", "cpu", "-c", "1", env=env)
    with api_process({**stack_env, **env}, tmp_path / "api.log") as api:
        # Six chunks, two jobs: every statement of the claim/commit path runs well past
        # psycopg's default prepare threshold (5), on whichever server connection is free.
        jobs = [_call(api, key, "/v1/jobs", {
            "kind": "sentiment", "model": "tiny-sentiment@prod", "chunk_size": 5,
            "items": [{"custom_id": f"c{i}", "text": f"the film was {'great' if i % 2 else 'dull'}"}
                      for i in range(15)]})["id"] for _ in range(2)]
        deadline = time.monotonic() + 180
        # The most client connections the app held at once while it ran (a count at one moment
        # depends on which pooled connections happen to be open then).
        peak: list[dict[str, Any]] = []
        while not all(_call(api, key, f"/v1/jobs/{j}")["status"] == "completed" for j in jobs):
            assert time.monotonic() < deadline, worker.output()[-4000:]
            now_clients = [c for c in _admin(port, "SHOW CLIENTS") if c["database"] != "pgbouncer"]
            peak = max(peak, now_clients, key=len)
            time.sleep(0.3)
        for job_id in jobs:
            rows = _call(api, key, f"/v1/jobs/{job_id}/results?limit=100")["data"]
            assert [r["custom_id"] for r in rows] == [f"c{i}" for i in range(15)]
            failed = [r for r in rows if r["status"] != "succeeded" or not r["output"]["label"]]
            assert not failed, json.dumps(failed[0])
        clients = _admin(port, "SHOW CLIENTS")
        servers = _admin(port, "SHOW SERVERS")
    # The worker's heartbeat and maintenance pass went through PgBouncer as well.
    with session_scope() as s:
        beats = s.scalars(select(WorkerRow.last_seen_at).where(WorkerRow.status == "alive"))
        assert any(utcnow() - seen < timedelta(seconds=30) for seen in beats)
    # The API's and the worker's pools shared at most SERVER_POOL server connections.
    app_clients = max(peak, [c for c in clients if c["database"] != "pgbouncer"], key=len)
    assert len(app_clients) > SERVER_POOL >= len(servers), (clients, servers)
    log = worker.output()
    assert "prepared statement" not in log and "maintenance pass failed" not in log


def test_one_maintenance_pass_at_a_time_and_a_dead_holder_frees_it(migrated: Any) -> None:
    """The pass's lease row: a second process skips its pass while one runs; one that died
    mid-pass (never released) holds the others up only for the lease."""
    if not PG_URL:
        pytest.skip("SQLite runs every pass (its writers are one at a time anyway)")
    from nightowl.fleet.heartbeats import maintenance_lock

    lease, name = timedelta(seconds=30), f"test-{os.getpid()}-{time.monotonic_ns()}"
    mine = FleetLock.name == name  # not the fleet's own row: live workers may hold that
    with session_scope() as first, session_scope() as second:
        with maintenance_lock(first, lease, holder="a", name=name) as got_a:
            assert got_a
            with maintenance_lock(second, lease, holder="b", name=name) as got_b:
                assert not got_b
        with maintenance_lock(second, lease, holder="b", name=name) as got_b:
            assert got_b  # released when a's pass ended
            second.execute(update(FleetLock).where(mine)
                           .values(holder="dead", expires_at=utcnow() + lease))
            second.commit()
        with maintenance_lock(first, lease, holder="a", name=name) as got_a:
            assert not got_a  # "dead" holds it, until its lease runs out
        first.execute(update(FleetLock).where(mine)
                      .values(expires_at=utcnow() - timedelta(seconds=1)))
        first.commit()
        with maintenance_lock(first, lease, holder="a", name=name) as got_a:
            assert got_a
