"""Fixtures of the fault suite: a result-write audit, service restarters, the figures table.

Every fault test is marked `faults` and prints one FAULT line (items, lost, duplicated,
recovery seconds); the session's summary repeats them all, so `make test` shows them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fault_helpers import (
    REPORT,
    Audit,
    BrokerRestarter,
    DatabaseRestarter,
    install_audit,
    remove_audit,
)

from nightowl.common.config import Settings
from nightowl.platform.db import session_factory


@pytest.fixture
def audit(migrated: Settings) -> Iterator[Audit]:
    with session_factory(migrated)() as s:
        install_audit(s)
    yield Audit(migrated)
    with session_factory(migrated)() as s:
        remove_audit(s)


@pytest.fixture(scope="session")
def restart_broker(settings: Settings) -> Iterator[BrokerRestarter]:
    # Session-scoped: an embedded broker started in place of the session's own must serve the
    # rest of the session, and stops only at its end.
    restarter = BrokerRestarter(settings)
    yield restarter
    restarter.close()


@pytest.fixture
def restart_database(settings: Settings) -> DatabaseRestarter:
    restarter = DatabaseRestarter(settings)
    if reason := restarter.skip_reason():
        pytest.skip(reason)
    return restarter


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat every FAULT line printed by a test (fault tests outside tests/faults, such as the
    two-beat test in tests/schedules, print one too), so `make test -q` shows the figures."""
    lines: list[str] = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            lines += [line.removeprefix("FAULT ") for line in
                      getattr(rep, "capstdout", "").splitlines() if line.startswith("FAULT ")]
    lines += [f.line() for f in REPORT if f.line() not in lines]  # e.g. under `pytest -s`
    if not lines:
        return
    terminalreporter.section("fault suite: what each fault did")
    for line in sorted(lines):
        terminalreporter.write_line(line)
    totals = [dict(part.split("=", 1) for part in line.split() if "=" in part)
              for line in lines]
    lost = sum(int(t.get("lost", 0)) for t in totals)
    dup = sum(int(t.get("duplicated", 0)) for t in totals)
    terminalreporter.write_line(f"total: {len(lines)} faults, {lost} lost, {dup} duplicated")
