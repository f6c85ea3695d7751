"""Batches checked in the background and written up at the end: the row says validating until
a worker checks it, and the reaper rings again for one whose message was lost; it says
finalizing until its files are written up, and the reaper finishes one a crash left so. Real
SQL and a real broker; the check is the core function the worker's task calls, in-process."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, JobStatus, TaskName
from nightowl.common.errors import Conflict, QuotaExceeded
from nightowl.fleet.reaper import reap
from nightowl.jobs import quotas
from nightowl.jobs.service import cancel_job, stop_pending_chunks, try_finalize
from nightowl.openai import finalize as batch_finalize
from nightowl.openai import validation as batch_async
from nightowl.openai.batches import batch_object, cancel_batch
from nightowl.openai.output import get_batch_file, iter_lines
from nightowl.platform import broker
from nightowl.platform.auth import get_or_create_tenant
from nightowl.platform.db import session_scope
from nightowl.platform.orm import Job, utcnow
from nightowl.storage.files import create_file

GEN = "apitest-gen"  # tests/api/conftest.py registers it; jobs on it go to the gpu queue
GPU = {"nightowl_queue": "gpu"}


def _big_file(settings: Settings, tenant_id: str, lines: list[str]) -> str:
    # Whitespace inside each JSON line pads it past the inline limit without adding requests.
    pad = " " * (settings.batch_inline_check_bytes // len(lines) + 1)
    data = "".join(line[:-1] + pad + "}\n" for line in lines).encode()
    with session_scope(settings) as s:
        return create_file(s, settings, stream=io.BytesIO(data), filename="big.jsonl",
                           purpose="batch", tenant_id=tenant_id).id


def _chat(custom_id: str, model: str = GEN) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}})


def _tenant(settings: Settings, name: str | None = None) -> str:
    with session_scope(settings) as s:
        return get_or_create_tenant(s, name or f"validate-{uuid.uuid4().hex[:6]}").id


def _create(settings: Settings, tenant: str, lines: list[str]) -> str:
    file_id = _big_file(settings, tenant, lines)
    with session_scope(settings) as s:
        job = batch_async.create_batch(session=s, settings=settings, tenant_id=tenant,
                                       input_file_id=file_id, endpoint="/v1/chat/completions",
                                       completion_window="24h", metadata=GPU)
        assert batch_object(job)["status"] == "validating"
        return job.id


def _status(settings: Settings, job_id: str) -> dict[str, object]:
    with session_scope(settings) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return batch_object(job)


def _messages_for(settings: Settings, job_id: str, *, drop: bool = False) -> int:
    """Validation messages for this batch waiting in the cpu queue; `drop` loses them, as a
    broker restart without persistence would."""
    r = broker.redis_client(settings)
    found = [m for m in r.lrange("cpu", 0, -1)
             if job_id.encode() in m and TaskName.VALIDATE_BATCH.value.encode() in m]
    if drop:
        for m in found:
            r.lrem("cpu", 0, m)
    return len(found)


def _tidy(settings: Settings, job_ids: list[str], *, cancel: str) -> None:
    """Leave nothing for the next test: the jobs' validation messages dropped, and the one
    still running cancelled."""
    for job_id in job_ids:
        _messages_for(settings, job_id, drop=True)
    with session_scope(settings) as s:
        cancel_job(s, cancel)


def _reap(settings: Settings) -> int:
    with session_scope(settings) as s:
        report = reap(s, settings, queue_depth=lambda q: broker.queue_depth(settings, q))
    return report.batches_resent


def test_a_lost_validation_is_sent_again_once_and_checks_once(fake_models: Settings) -> None:
    settings = fake_models
    tenant = _tenant(settings)
    job_id = _create(settings, tenant, [_chat("a"), _chat("b"), _chat("c")])
    assert _messages_for(settings, job_id, drop=True) == 1  # rung at create, then lost
    with session_scope(settings) as s:  # long enough ago that the message counts as lost
        s.execute(update(Job).where(Job.id == job_id)
                  .values(validating_at=utcnow() - timedelta(minutes=10)))
    assert _reap(settings) >= 1
    assert _messages_for(settings, job_id) == 1
    _reap(settings)  # just rung: not rung again
    assert _messages_for(settings, job_id) == 1
    assert _status(settings, job_id)["status"] == "validating"

    with session_scope(settings) as s:
        assert batch_async.validate(s, settings, job_id) == JobStatus.QUEUED.value
    shown = _status(settings, job_id)
    assert shown["status"] == "in_progress" and shown["model"] == GEN
    assert shown["request_counts"] == {"total": 3, "completed": 0, "failed": 0,  # type: ignore[comparison-overlap]
                                       "cancelled": 0, "expired": 0}
    with session_scope(settings) as s:  # the duplicate message finds nothing to do
        assert batch_async.validate(s, settings, job_id) == "not validating"
    assert _status(settings, job_id)["request_counts"]["total"] == 3  # type: ignore[index]
    _tidy(settings, [job_id], cancel=job_id)


def test_cancel_while_validating_and_errors_found_in_the_background(
        fake_models: Settings) -> None:
    settings = fake_models
    tenant = _tenant(settings)
    cancelled = _create(settings, tenant, [_chat("a")])
    with session_scope(settings) as s:
        cancel_job(s, cancelled)
        assert batch_async.validate(s, settings, cancelled) == "not validating"
    assert _status(settings, cancelled)["status"] == "cancelled"

    # An unknown model fails only its line; the batch runs the rest.
    bad = _create(settings, tenant, [_chat("a"), _chat("b", model="no-such")])
    with session_scope(settings) as s:
        assert batch_async.validate(s, settings, bad) == JobStatus.QUEUED.value
    counts = _status(settings, bad)["request_counts"]
    assert (counts["total"], counts["failed"]) == (2, 1)  # type: ignore[index]
    # The same per-line answers as the inline path: a duplicate custom_id fails the batch.
    bad2 = _create(settings, tenant, [_chat("x"), _chat("x")])
    with session_scope(settings) as s:
        assert batch_async.validate(s, settings, bad2) == "failed"
    shown = _status(settings, bad2)
    errors = shown["errors"]["data"]  # type: ignore[index]
    assert [(e["code"], e["line"]) for e in errors] == [("duplicate_custom_id", 2)]
    _tidy(settings, [cancelled, bad, bad2], cancel=bad)


def test_quota_known_at_create_is_a_429_else_the_batch_fails_saying_so(
        fake_models: Settings) -> None:
    settings = fake_models
    name = f"validate-{uuid.uuid4().hex[:6]}"
    tenant = _tenant(settings, name)
    with session_scope(settings) as s:
        quotas.set_quota(s, name, max_queued_items=2, max_running_jobs=1)
    over = _create(settings, tenant, [_chat("a"), _chat("b"), _chat("c")])
    with pytest.raises(QuotaExceeded, match="max_running_jobs"):  # one validating already
        _create(settings, tenant, [_chat("a")])
    with session_scope(settings) as s:
        assert batch_async.validate(s, settings, over) == "failed"
    errors = _status(settings, over)["errors"]["data"]  # type: ignore[index]
    assert errors[0]["code"] == "quota_exceeded"
    assert "max_queued_items quota of 2" in errors[0]["message"]
    _messages_for(settings, over, drop=True)


def test_a_batch_left_finalizing_is_written_up_by_the_reaper(fake_models: Settings) -> None:
    settings = fake_models
    tenant = _tenant(settings)
    job_id = _create(settings, tenant, [_chat("a"), _chat("b"), _chat("c", model="no-such")])
    with session_scope(settings) as s:
        assert batch_async.validate(s, settings, job_id) == JobStatus.QUEUED.value
    _messages_for(settings, job_id, drop=True)
    # Its deadline passes with nothing run; the pass that expires it stops at finalizing, as
    # a worker that died before writing the files up would leave it.
    with session_scope(settings) as s:
        job = s.get(Job, job_id)
        assert job is not None
        stop_pending_chunks(s, job, ChunkStatus.EXPIRED)
        assert try_finalize(s, job_id)
    shown = _status(settings, job_id)
    assert shown["status"] == "finalizing" and shown["finalizing_at"] is not None
    assert shown["error_file_id"] is None and shown["completed_at"] is None
    with pytest.raises(Conflict, match="being written"), session_scope(settings) as s:
        cancel_batch(s, job_id, tenant_id=tenant)

    _reap(settings)
    shown = _status(settings, job_id)
    hexid = job_id.removeprefix("batch_")
    assert shown["status"] == "expired" and shown["error_file_id"] == f"file-{hexid}err"
    assert shown["request_counts"] == {"total": 3, "completed": 0, "failed": 1,  # type: ignore[comparison-overlap]
                                       "cancelled": 0, "expired": 2}
    with session_scope(settings) as s:
        bf = get_batch_file(s, f"file-{hexid}err", tenant_id=tenant)
        assert bf is not None
        # The older form of the id, as a stored reference may hold it, names the same file.
        old = get_batch_file(s, f"{job_id}_errors", tenant_id=tenant)
        assert old is not None and (old.job.id, old.which) == (bf.job.id, bf.which)
        lines = list(iter_lines(s, bf))
        assert [json.loads(x)["custom_id"] for x in lines] == ["a", "b", "c"]
        # Counted while finalizing, so files.retrieve does not render the file to answer.
        assert bf.job.metadata_["openai"]["file_bytes"] == {
            "errors": sum(len(x.encode()) for x in lines)}
        assert not batch_finalize.finish(s, job_id)  # a second finisher finds nothing to do
