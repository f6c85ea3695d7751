"""Fixtures of the schedule tests: real beat processes, and a registry entry with no weights."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sched_helpers import Beat
from sqlalchemy.orm import Session

from helpers import stopped_after
from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.platform.db import session_scope

# Registered, never trained: runs made on it are cancelled before any worker could take them.
FAKE_SENT = "schedtest-sent"
POLL_S = "0.5"


@pytest.fixture
def start_beat(migrated: Settings, stack_env: dict[str, str],
               tmp_path: Path) -> Iterator[Callable[[], Beat]]:
    with stopped_after() as started:
        def start() -> Beat:
            return started(Beat({**stack_env, "NIGHTOWL_SCHEDULE_POLL_SECONDS": POLL_S},
                                tmp_path / f"beat-{started.count}.log"))

        yield start


@pytest.fixture(scope="session")
def fake_sentiment(migrated: Settings) -> str:
    from nightowl.registry import versions as registry

    with session_scope(migrated) as s:
        if not registry.list_versions(s, FAKE_SENT):
            v = registry.register(s, name=FAKE_SENT, kind=TaskKind.SENTIMENT,
                                  source=str(migrated.models_path / FAKE_SENT))
            registry.set_alias(s, v, "prod")
    return FAKE_SENT




@pytest.fixture
def schedule_name(session: Session, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh schedule name; the schedule is removed afterwards, so no later beat fires it."""
    import uuid

    from nightowl.common.errors import NotFound
    from nightowl.scheduling import schedules

    stem = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name.removeprefix("test_"))[:24]
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    yield name
    # The test's session may hold a transaction (a failed assert): on SQLite that locks all.
    session.rollback()
    with contextlib.suppress(NotFound):
        schedules.remove_schedule(session, name)
