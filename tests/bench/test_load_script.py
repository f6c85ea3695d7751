"""bench/load.py --quick: 20 jobs from 4 HTTP clients all complete, counts match, and (on
PostgreSQL, as in CI) the server counts no deadlock. It runs its own stack: in CI a fresh
PostgreSQL database and its own Redis database number, else SQLite and an embedded Valkey."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("NIGHTOWL_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("NIGHTOWL_TEST_REDIS_URL", "")
# A Redis database number of its own: the bench's workers must not take the suite's messages.
BENCH_REDIS_DB = 3


@pytest.fixture
def bench_env() -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NIGHTOWL_HOME", "NIGHTOWL_DATABASE_URL", "NIGHTOWL_REDIS_URL")}
    env["HF_HUB_OFFLINE"] = "1"
    if not PG_URL:
        yield env
        return
    name = f"nightowl_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(PG_URL).set(database="postgres"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    env["NIGHTOWL_DATABASE_URL"] = make_url(PG_URL).set(database=name).render_as_string(
        hide_password=False)
    if REDIS_URL:
        parts = urlsplit(REDIS_URL)
        env["NIGHTOWL_REDIS_URL"] = urlunsplit(parts._replace(path=f"/{BENCH_REDIS_DB}"))
    try:
        yield env
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_load_quick_completes_every_job_without_deadlocks(
    bench_env: dict[str, str], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--quick", "--results-dir",
         str(tmp_path)], env=bench_env, cwd=REPO, capture_output=True, text=True, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    headline = proc.stdout.strip().splitlines()[-1]
    assert headline.startswith("load: 20/20 jobs completed with counts matching"), headline
    print(f"\n{headline}")
    [record] = [json.loads(line) for line in (tmp_path / "load.jsonl").read_text().splitlines()]
    figures = record["figures"]
    assert record["headline"] == headline and figures["problems"] == []
    assert figures["backend"] == ("postgresql" if PG_URL else "sqlite")
    if PG_URL:
        assert figures["pg_deadlocks"] == 0
    assert sum(figures["lock_errors_in_logs"].values()) == 0
