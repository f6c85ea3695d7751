"""run_chunk: claim a chunk in SQL, run its items through the model in micro-batches, write back."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.common.enums import ErrorCode, ItemStatus, JobOrigin, JobStatus, TaskName
from nightowl.common.errors import ArtifactError, ModelLoadError
from nightowl.common.items import STOPS, TEXTS, ItemOutcome, item_texts, utcnow
from nightowl.jobs import chunks, dispatch
from nightowl.jobs.chunks import ClaimedChunk
from nightowl.openai import finalize as batch_finalize
from nightowl.platform.db import session_factory
from nightowl.storage.cache import local_dir
from nightowl_tasks.app import app, lease_owner, worker_name
from nightowl_tasks.heartbeat import count_items
from nightowl_tasks.retry import with_db_retry
from nightowl_tasks.serving import GATE
from nightowl_workers.cache import get_runner
from nightowl_workers.device import choose_device
from nightowl_workers.engine import WorkItem, run_batched
from nightowl_workers.several import Fanout

log = logging.getLogger(__name__)
# How often the micro-batch loop looks at SQL for a cancel and renews the lease.
CHECK_EVERY_S = 1.0


@app.task(name=TaskName.RUN_CHUNK.value)
def run_chunk(job_id: str, chunk_no: int) -> dict[str, Any]:
    settings = get_settings()
    owner = lease_owner()
    with session_factory(settings)() as session:
        claimed = with_db_retry(
            lambda: chunks.claim(
                session, job_id, chunk_no, owner=owner, lease_seconds=settings.lease_seconds
            ),
            session=session,
        )
        # This message has left the broker's window: send the next chunk now, so the next free
        # worker finds it waiting (and a chunk of a newly submitted job can be that one).
        _top_up(session, settings, claimed.job.queue if claimed else None)
        if claimed is None:
            _finish_batch(session, job_id)  # a cancelled or expired batch's last chunk
            return {"job_id": job_id, "chunk_no": chunk_no, "skipped": True}
        result = _run(session, settings, claimed, owner)
        _top_up(session, settings, claimed.job.queue)
        _finish_batch(session, job_id, claimed.job.origin)
        return result


def _finish_batch(session: Session, job_id: str, origin: JobOrigin | None = None) -> None:
    """If this chunk was a batch's last, write up its files now; on failure the reaper will."""
    try:
        batch_finalize.finish(session, job_id, origin=origin)
    except Exception:
        session.rollback()
        log.exception("finalizing batch %s failed; the reaper will", job_id)


def _top_up(session: Session, settings: Settings, queue: str | None) -> None:
    """Refill the window; a failure here must not fail the chunk: the reaper refills it too."""
    try:
        if queue is None:
            dispatch.top_up_all(session, settings)
        else:
            with_db_retry(lambda: dispatch.top_up(session, settings, queue), session=session,
                          attempts=3)
    except Exception:
        session.rollback()
        log.exception("topping up the dispatch window failed; the reaper will")


def _run(session: Session, settings: Settings, claimed: ClaimedChunk, owner: str) -> dict[str, Any]:
    device = choose_device(settings.device)
    started = time.perf_counter()
    outcomes: list[ItemOutcome] = []
    batches = 0
    try:
        runner = get_runner(
            kind=claimed.job.kind,
            version_key=str(claimed.version.id),
            source=local_dir(claimed.version.source, claimed.version.sha256, settings),
            revision=claimed.version.revision,
            settings=settings,
            device=device,
        )
    except (ModelLoadError, ArtifactError) as e:
        now = utcnow()
        outcomes = [ItemOutcome.failed(item.id, ErrorCode.MODEL_ERROR, str(e), started_at=now,
                                       finished_at=now) for item in claimed.items]
    else:
        field = claimed.job.kind.input_field
        fanout = Fanout()
        work: list[WorkItem] = []
        for item in claimed.items:
            params = {**claimed.job.params, **item.input.get("params", {})}
            if TEXTS in item.input:
                work += fanout.split(item.id, item_texts(item.input, field), params)
            else:
                work.append(WorkItem(key=item.id, text=item.input[field], params=params))
        try:
            for results in run_batched(
                runner,
                work,
                max_batch_tokens=settings.max_batch_tokens,
                max_batch_size=settings.max_batch_size,
                truncate=claimed.job.truncate,
                should_stop=_StopChecker(session, settings, claimed, owner),
            ):
                # The last list of a stopped chunk holds the items that never ran: no batch.
                batches += int(results[0].status not in STOPS)
                outcomes.extend(fanout.gather(results))
        finally:
            GATE.bulk_done()
    elapsed = time.perf_counter() - started
    committed = with_db_retry(
        lambda: chunks.complete(
            session,
            claimed,
            outcomes,
            owner=owner,
            worker=worker_name(),
            device=str(device),
            batches=batches,
            device_seconds=elapsed,
        ),
        session=session,
    )
    if committed:
        count_items(len(outcomes))
    return {
        "job_id": claimed.job.id,
        "chunk_no": claimed.chunk.chunk_no,
        "items": len(outcomes),
        "committed": committed,
        "seconds": round(elapsed, 3),
    }


class _StopChecker:
    """Between micro-batches: renew the lease, and name the stop on a cancel or a passed
    deadline (None: go on)."""

    def __init__(
        self, session: Session, settings: Settings, claimed: ClaimedChunk, owner: str
    ) -> None:
        self.session, self.settings, self.claimed, self.owner = session, settings, claimed, owner
        self.last = time.monotonic()
        self.deadline: datetime | None = claimed.job.deadline_at

    def __call__(self) -> ItemStatus | None:
        # Direct requests waiting in this process's lane run first (between micro-batches).
        GATE.bulk_step()
        if self.deadline is not None and utcnow() >= self.deadline:
            return ItemStatus.EXPIRED
        if time.monotonic() - self.last < CHECK_EVERY_S:
            return None
        self.last = time.monotonic()
        status, self.deadline = with_db_retry(
            lambda: chunks.job_state(self.session, self.claimed.job.id), session=self.session
        )
        self.session.commit()
        if status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
            return ItemStatus.CANCELLED
        with_db_retry(
            lambda: chunks.heartbeat(
                self.session,
                self.claimed.chunk.id,
                owner=self.owner,
                lease_seconds=self.settings.lease_seconds,
            ),
            session=self.session,
        )
        return None
