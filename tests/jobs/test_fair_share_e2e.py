"""Two tenants on one real worker over HTTP: a small job of another tenant does not wait for a
big job to finish, and a later high-priority job passes the older one. Ordering, no timings."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from helpers import Worker, wait_for_job
from nightowl.cli import demo_data
from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, JobStatus
from nightowl.platform.db import session_factory
from nightowl.platform.orm import Job, JobChunk
from nightowl_api.main import app

# 400 chunks: whatever the machine's speed, B arrives with most of A left; A is cancelled after.
BIG, CHUNK = 10_000, 25


def _items(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"custom_id": r["custom_id"], "text": r["text"]}
            for r in demo_data.reviews(n, seed=seed)]


@pytest.fixture
def two_tenants(models: Settings, make_api_key: Callable[[str], str]
                ) -> Iterator[tuple[TestClient, TestClient]]:
    suffix = uuid.uuid4().hex[:6]
    with TestClient(app) as a, TestClient(app) as b:
        a.headers["Authorization"] = f"Bearer {make_api_key(f'big-team-{suffix}')}"
        b.headers["Authorization"] = f"Bearer {make_api_key(f'small-team-{suffix}')}"
        yield a, b


def _submit(client: TestClient, items: list[dict[str, Any]], **extra: Any) -> str:
    r = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment@prod",
                                      "items": items, "chunk_size": CHUNK, **extra})
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


def test_small_job_of_another_tenant_and_a_priority_job_finish_while_the_big_job_runs(
    two_tenants: tuple[TestClient, TestClient], start_worker: Callable[..., Worker]
) -> None:
    a, b = two_tenants
    worker = start_worker("-Q", "cpu", "-c", "1")
    big = _submit(a, _items(BIG, seed=3))
    wait_for_job(big, worker=worker, until=lambda j: j.done_items > 0)
    small = _submit(b, _items(40, seed=4))
    # Tenant a's own later job: fair share does not help it past a's big job, age is against
    # it; only its priority can.
    urgent = _submit(a, _items(40, seed=5), priority=50)
    assert a.get(f"/v1/jobs/{urgent}").json()["priority"] == 50

    done = {name: wait_for_job(job_id, worker=worker)
            for name, job_id in (("urgent", urgent), ("small", small))}
    assert all(j.status == JobStatus.COMPLETED for j in done.values())
    assert all(j.succeeded_items == j.total_items for j in done.values())
    with session_factory()() as s:
        running = s.get(Job, big)
        assert running is not None and running.status == JobStatus.IN_PROGRESS
        # Both ran while most of the big job still waited in SQL, not after it.
        big_done = s.scalar(select(func.count()).select_from(JobChunk).where(
            JobChunk.job_id == big, JobChunk.status == ChunkStatus.DONE)) or 0
    assert big_done < BIG // CHUNK // 2
    assert a.post(f"/v1/jobs/{big}/cancel").status_code == 200
    final = wait_for_job(big, worker=worker)
    assert final.status == JobStatus.CANCELLED and 0 < final.succeeded_items < BIG


def test_priority_over_http_is_validated_with_its_range(
    two_tenants: tuple[TestClient, TestClient]
) -> None:
    a, _ = two_tenants
    r = a.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment",
                                 "items": [{"text": "fine"}], "priority": 1000})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "priority"
    assert "100" in r.json()["error"]["message"]
    assert a.get("/v1/jobs").json()["data"] == []
    r = a.post("/v1/finetunes", json={"kind": "sentiment", "base": "tiny-sentiment",
                                      "training_file": "file-x", "priority": -101})
    assert r.status_code == 422 and r.json()["error"]["param"] == "priority"
