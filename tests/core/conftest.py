"""The core state machine on a real database and broker, with no worker process and no Celery
worker: the tests call claim / complete / cancel / reap / top_up themselves, in the order a
race would run them, and read the broker's queue the way a worker would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from core_support import Core

from helpers import register_unloaded_model
from nightowl.common.config import Settings
from nightowl.jobs import service as jobs
from nightowl.platform import broker
from nightowl.platform.db import session_scope


@pytest.fixture(scope="session")
def core_model(migrated: Settings) -> str:
    """A sentiment model row of the session's own; nothing loads it, so no files are needed."""
    return register_unloaded_model(migrated, "core")


@pytest.fixture
def core(migrated: Settings, core_model: str) -> Iterator[Core]:
    queue = f"core-{uuid.uuid4().hex[:8]}"
    settings = migrated.model_copy(update={"dispatch_window": 4})
    made = Core(settings, queue, core_model, [])
    yield made
    # No job of this test stays live: a later test's reap would send its chunks again.
    with session_scope(settings) as s:
        for job_id in made.jobs:
            if not jobs.get_job(s, job_id).status.terminal:
                jobs.cancel_job(s, job_id)
    broker.redis_client(settings).delete(queue)
