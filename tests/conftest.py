"""Layered fixtures: an isolated home, a real broker and database, models, workers, clients.

With NIGHTOWL_TEST_DATABASE_URL / NIGHTOWL_TEST_REDIS_URL set (CI: PostgreSQL and Redis) the
suite runs on those servers; without them on SQLite and an embedded Valkey.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from helpers import Worker, api_process, stopped_after
from nightowl.common.config import EMBEDDED, Settings, get_settings
from nightowl.platform.celery_app import get_celery
from nightowl.platform.db import dispose_engines, make_engine
from nightowl.platform.embedded import embedded_broker

PG_URL = os.environ.get("NIGHTOWL_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("NIGHTOWL_TEST_REDIS_URL", "")


def apply_env(env: dict[str, str]) -> None:
    os.environ.update(env)
    get_settings.cache_clear()
    get_celery.cache_clear()
    dispose_engines()


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment every test and every child process shares: one home, one broker, one DB."""
    home = tmp_path_factory.mktemp("home")
    env = {
        "NIGHTOWL_HOME": str(home),
        "NIGHTOWL_DATABASE_URL": PG_URL or f"sqlite:///{home / 'nightowl.db'}",
        "NIGHTOWL_LEASE_SECONDS": "20",
        "NIGHTOWL_REAP_INTERVAL_SECONDS": "2",
        "NIGHTOWL_REQUEUE_AFTER_SECONDS": "30",
        # Beat tests fire every second or two; the operator's default floor is a minute.
        "NIGHTOWL_SCHEDULE_MIN_INTERVAL_SECONDS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    saved = dict(os.environ)
    if REDIS_URL:
        env["NIGHTOWL_REDIS_URL"] = REDIS_URL
        apply_env(env)
        yield env
    else:
        env["NIGHTOWL_REDIS_URL"] = EMBEDDED
        apply_env(env)
        with embedded_broker(get_settings()) as sock:
            env["NIGHTOWL_REDIS_URL"] = f"redis+socket://{sock}"
            apply_env(env)
            yield env
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    from nightowl.platform import migrate

    migrate.upgrade(settings)
    return settings


@pytest.fixture(scope="session")
def models(migrated: Settings) -> Settings:
    """The three bootstrap models, built offline and registered once per session."""
    from nightowl.cli import cli

    result = CliRunner().invoke(cli, ["models", "bootstrap"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return migrated


@pytest.fixture
def session(migrated: Settings) -> Iterator[Session]:
    """A session for the test's own checks. On SQLite each statement stands alone, so a test
    that polls while a CLI command or worker writes neither holds the lock nor sees old data."""
    engine = make_engine(migrated.sqlalchemy_url, sqlite_autocommit=True)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


@pytest.fixture
def cli_runner(migrated: Settings) -> CliRunner:
    return CliRunner()


@pytest.fixture
def start_worker(
    models: Settings, stack_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    with stopped_after() as started:
        def start(*args: str, env: dict[str, str] | None = None) -> Worker:
            return started(Worker({**stack_env, **(env or {})},
                                  list(args) or ["-Q", "cpu", "-c", "1"],
                                  tmp_path / f"worker-{started.count}.log"))

        yield start


# -- API keys, an authenticated TestClient, a real API process (tenancy: every /v1 call needs a
# key; each tenant sees only its own rows) ------------------------------------------------------


@pytest.fixture
def make_api_key(migrated: Settings) -> Callable[[str], str]:
    """make_api_key("acme") -> a new key for tenant acme (the tenant is created if new)."""
    from nightowl.platform.auth import create_key
    from nightowl.platform.db import session_scope

    def make(tenant: str) -> str:
        with session_scope(migrated) as s:
            return create_key(s, tenant_name=tenant)[1]

    return make


@pytest.fixture
def api_key(make_api_key: Callable[[str], str]) -> str:
    """A key for a tenant of this test's own."""
    import uuid

    return make_api_key(f"tenant-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def client(migrated: Settings, api_key: str) -> Iterator[Any]:
    """A TestClient over the app, sending `api_key` as its Bearer key."""
    from fastapi.testclient import TestClient

    from nightowl_api.main import app

    with TestClient(app, headers={"Authorization": f"Bearer {api_key}"}) as c:
        yield c


@pytest.fixture(scope="session")
def api_server(migrated: Settings, stack_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `nightowl api` process on a free 127.0.0.1 port; yields its base URL."""
    with api_process(stack_env, tmp_path_factory.mktemp("api") / "api.log") as url:
        yield url
