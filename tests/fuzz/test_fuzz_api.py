"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): whatever a stranger sends, no
request gets a 5xx, and every documented response matches its schema.

Bounded and deterministic for CI: a few derandomized examples per operation, no deadline. The
requests run in-process against the ASGI app, authenticated with a key of a tenant of their
own, whose rows are removed afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from sqlalchemy import delete

from nightowl.common.config import Settings
from nightowl.platform.orm import Schedule
from nightowl_api.main import app

# A few per operation keeps CI quick; NIGHTOWL_FUZZ_EXAMPLES=500 digs deeper by hand.
MAX_EXAMPLES = int(os.environ.get("NIGHTOWL_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzz_tenant(migrated: Settings) -> Iterator[tuple[str, str]]:
    """(tenant name, key); the tenant's jobs, files, runs and schedules go afterwards."""
    from nightowl.platform.auth import create_key
    from nightowl.platform.db import session_scope

    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    with session_scope(migrated) as s:
        row, key = create_key(s, tenant_name=name)
        tenant_id = row.tenant_id
    yield name, key
    # A schedule the fuzzer managed to create must not fire in later tests' beats.
    with session_scope(migrated) as s:
        s.execute(delete(Schedule).where(Schedule.tenant_id == tenant_id))


# Loaded at import: building the OpenAPI document reads no settings and touches no database.
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
def test_no_server_error_and_responses_match_the_schema(
    case: Any, fuzz_tenant: tuple[str, str]
) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_tenant[1]}"}, checks=CHECKS)
