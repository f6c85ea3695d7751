"""Layered fixtures: an isolated home, a real broker and database, models, workers, clients.

With NIGHTOWL_TEST_DATABASE_URL / NIGHTOWL_TEST_REDIS_URL set (CI: PostgreSQL and Redis) the
suite runs on those servers; without them on SQLite and an embedded Valkey.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from nightowl.celery_app import get_celery
from nightowl.config import EMBEDDED, Settings, get_settings
from nightowl.db import dispose_engines, session_factory
from nightowl.embedded import embedded_broker

from helpers import Worker

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
    from nightowl import migrate

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
    with session_factory(migrated)() as s:
        yield s


@pytest.fixture
def cli_runner(migrated: Settings) -> CliRunner:
    return CliRunner()


@pytest.fixture
def start_worker(
    models: Settings, stack_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Worker:
        w = Worker({**stack_env, **(env or {})}, list(args) or ["-Q", "cpu", "-c", "1"],
                   tmp_path / f"worker-{len(started)}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
