"""Retrying a finished job twice gives the same child job: a double click, or a client that
retries its POST, does not run the failures twice."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.platform.orm import Job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from query_support import register_model, run_job, submit, unique


def test_a_second_retry_returns_the_first_child(migrated: Settings, session: Session,
                                                client: Any) -> None:
    name = unique("sentiment")
    register_model(session, name)
    texts = ["fine", "broken", "also fine", "broken too"]
    from nightowl.platform.auth import authenticate

    tenant = authenticate(session, client.headers["Authorization"].split()[1])
    session.commit()
    parent = submit(migrated, model=f"{name}@prod", texts=texts, tenant_id=tenant)
    run_job(migrated, parent, fail=lambda t: t.startswith("broken"))
    first = client.post(f"/v1/jobs/{parent}/retry")
    second = client.post(f"/v1/jobs/{parent}/retry")
    assert first.status_code < 300 and second.status_code < 300, (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["total"] == 2
    session.expire_all()
    children = session.scalar(select(func.count()).select_from(Job)
                              .where(Job.parent_job_id == parent))
    assert children == 1
