"""Rows for the query tests: models, jobs submitted through the job service, and chunks run
through the same SQL a worker uses (nightowl.jobs.chunks claim/complete) with canned outputs, so
these tests do not need the ML runtime and can pin when each result was produced."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import ErrorCode, ItemStatus, TaskKind
from nightowl.jobs import chunks
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, submit_job
from nightowl.platform.broker import redis_client
from nightowl.platform.db import session_factory
from nightowl.platform.orm import JobChunk, ModelVersion, utcnow
from nightowl.registry import versions as registry

# Nobody consumes this queue: its messages stay put, so its depth is observable.
TEST_QUEUE = "querytest"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register_model(session: Session, name: str, *, alias: str | None = "prod",
                   metrics: dict[str, Any] | None = None) -> ModelVersion:
    version = registry.register(session, name=name, kind=TaskKind.SENTIMENT,
                                source=f"/nonexistent/{name}", metrics=metrics)
    if alias:
        registry.set_alias(session, version, alias)
    session.commit()
    return version


def submit(settings: Settings, *, model: str, texts: list[str], tenant_id: str | None = None,
           chunk_size: int = 100, parent_job_id: str | None = None,
           custom_ids: list[str] | None = None) -> str:
    ids = custom_ids or [f"r{i}" for i in range(len(texts))]
    lines = [ParsedLine(i + 1, ids[i], {"text": t}) for i, t in enumerate(texts)]
    spec = JobSpec(kind=TaskKind.SENTIMENT, model=model, chunk_size=chunk_size,
                   queue=TEST_QUEUE, tenant_id=tenant_id, parent_job_id=parent_job_id)
    with session_factory(settings)() as s:
        return submit_job(session=s, settings=settings, spec=spec, lines=lines).id


def sentiment(text: str) -> dict[str, Any]:
    bad = any(w in text.lower() for w in ("terrible", "broken"))
    return {"label": "negative" if bad else "positive", "score": 0.91 if bad else 0.88}


def run_chunk(settings: Settings, job_id: str, chunk_no: int, *,
              finished_at: Callable[[int], datetime] | None = None,
              fail: Callable[[str], bool] = lambda _t: False,
              take_message: bool = True) -> None:
    """Do what a worker does with one chunk, through the worker's own SQL."""
    if take_message:
        # As the worker would have: take one doorbell off the queue.
        redis_client(settings).rpop(TEST_QUEUE)
    with session_factory(settings)() as s:
        owner = f"fake:{uuid.uuid4().hex[:6]}"
        claimed = chunks.claim(s, job_id, chunk_no, owner=owner, lease_seconds=60)
        assert claimed is not None, f"chunk {chunk_no} of {job_id} could not be claimed"
        outcomes = []
        for item in claimed.items:
            text = item.input["text"]
            end = finished_at(item.idx) if finished_at else utcnow()
            start = end - timedelta(milliseconds=20 + item.idx % 7)
            if fail(text):
                outcomes.append(chunks.ItemOutcome(
                    item.id, ItemStatus.FAILED, error_code=ErrorCode.TOO_LONG.value,
                    error_message="longer than the model's 512 tokens", started_at=start,
                    finished_at=end))
            else:
                outcomes.append(chunks.ItemOutcome(
                    item.id, ItemStatus.SUCCEEDED, output=sentiment(text),
                    tokens_in=len(text.split()) + 2, tokens_out=1, started_at=start,
                    finished_at=end))
        assert chunks.complete(s, claimed, outcomes, owner=owner,
                               worker="fake@test", device="cpu",
                               batches=max(1, len(outcomes) // 4), device_seconds=0.05)


def chunk_count(settings: Settings, job_id: str) -> int:
    with session_factory(settings)() as s:
        return s.query(JobChunk).filter(JobChunk.job_id == job_id).count()


def run_job(settings: Settings, job_id: str, **kwargs: Any) -> None:
    for n in range(chunk_count(settings, job_id)):
        run_chunk(settings, job_id, n, **kwargs)
