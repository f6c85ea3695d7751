"""SQL records every direct request of the serving lane after its answer, in bulk.

Each request becomes the rows a one-item job leaves behind (a job, its items with their outputs
and provenance, one chunk), so /v1/jobs, results queries and the dashboard see direct requests
as before; only now they are written together, off the request's path: one transaction per
flush instead of a dozen round trips per request.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from nightowl.common.config import get_settings
from nightowl.common.enums import ChunkStatus, ItemStatus, JobOrigin, JobStatus, TaskKind
from nightowl.jobs.lane import Done, LaneRequest
from nightowl.platform import retention
from nightowl.platform.orm import Job, JobChunk, JobItem

log = logging.getLogger(__name__)
# A flush waits at most this long for more requests to write with it.
FLUSH_EVERY_S = 0.25
FLUSH_MOST = 1000


@dataclass
class LaneRecord:
    request: LaneRequest
    tenant_id: str | None
    model_ref: str
    metadata: dict[str, Any]
    # Per item: its custom_id and its input, as a job item stores them.
    custom_ids: list[str]
    inputs: list[dict[str, Any]]
    done: Done
    priority: int
    created: datetime


def _at(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _job_status(statuses: list[str]) -> JobStatus:
    """As try_finalize decides a one-chunk job's end."""
    if ItemStatus.CANCELLED.value in statuses:
        return JobStatus.CANCELLED
    if ItemStatus.EXPIRED.value in statuses:
        return JobStatus.EXPIRED
    return JobStatus.COMPLETED


def write(session: Session, records: list[LaneRecord]) -> None:
    """Insert every record's job, items and chunk in one transaction."""
    if not records:
        return
    jobs: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    chunks: list[dict[str, Any]] = []
    # Kept as any job of the tenant's is: one policy read per tenant per write, not per request.
    settings = get_settings()
    keep = {t: retention.policy_seconds(session, settings, t)
            for t in {rec.tenant_id for rec in records}}
    for rec in records:
        req, done = rec.request, rec.done
        statuses = [o.status for o in done.outcomes]
        status = _job_status(statuses)
        finished = max((o.finished_at for o in done.outcomes if o.finished_at), default=None)
        started = min((o.started_at for o in done.outcomes if o.started_at), default=None)
        end = _at(finished) or rec.created
        jobs.append({
            "id": req.id, "origin": JobOrigin.DIRECT, "tenant_id": rec.tenant_id,
            "kind": TaskKind(req.kind),
            "model_ref": rec.model_ref, "model_version_id": req.version_id, "params": {},
            "status": status, "truncate": False, "chunk_size": len(req.items),
            "total_items": len(req.items), "total_tokens": None,
            "succeeded_items": statuses.count(ItemStatus.SUCCEEDED.value),
            "failed_items": statuses.count(ItemStatus.FAILED.value),
            "cancelled_items": statuses.count(ItemStatus.CANCELLED.value),
            "expired_items": statuses.count(ItemStatus.EXPIRED.value),
            "queue": req.queue, "deadline_at": _at(req.deadline), "metadata_": rec.metadata,
            "priority": rec.priority, "errors": [], "created_at": rec.created,
            "validating_at": rec.created, "queued_at": rec.created,
            "in_progress_at": _at(started), "finalizing_at": end,
            f"{status.value}_at": end,
            "retain_seconds": keep[rec.tenant_id],
            "expires_at": retention.expiry(end, keep[rec.tenant_id]),
        })
        for idx, (outcome, custom_id, data) in enumerate(
                zip(done.outcomes, rec.custom_ids, rec.inputs, strict=True)):
            items.append({
                "job_id": req.id, "idx": idx, "line_no": idx + 1, "custom_id": custom_id,
                "input": data, "status": ItemStatus(outcome.status), "output": outcome.output,
                "error_code": outcome.error_code, "error_message": outcome.error_message,
                "attempts": req.attempts + 1, "worker": done.worker, "device": done.device,
                "started_at": _at(outcome.started_at), "finished_at": _at(outcome.finished_at),
                "tokens_in": outcome.tokens_in, "tokens_out": outcome.tokens_out,
            })
        chunks.append({
            "job_id": req.id, "chunk_no": 0, "start_idx": 0, "end_idx": len(req.items),
            "status": {JobStatus.CANCELLED: ChunkStatus.CANCELLED,
                       JobStatus.EXPIRED: ChunkStatus.EXPIRED}.get(status, ChunkStatus.DONE),
            "attempts": req.attempts + 1, "enqueued_at": rec.created,
            "started_at": _at(started), "finished_at": end, "batches": 1,
            "device_seconds": done.seconds,
        })
    # One executemany per column set: a job's *_at column differs by its status.
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in jobs:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for rows in shapes.values():
        session.execute(insert(Job), rows)
    session.execute(insert(JobItem), items)
    session.execute(insert(JobChunk), chunks)
    session.commit()


class Recorder:
    """A thread that writes finished requests in bulk, so the answer never waits on SQL.

    What a crash of this process loses is at most one flush interval of records."""

    def __init__(self, factory: Callable[[], Session]) -> None:
        self._factory = factory
        self._queue: queue.Queue[LaneRecord] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Records handed in, and records written (or given up on): flush waits for the first
        # count as it stood to be reached, the batch the thread holds included.
        self._added = self._done = 0
        self._progress = threading.Condition()
        # A stopping API process writes what it answered last (its thread is a daemon).
        atexit.register(self.flush)

    def add(self, record: LaneRecord) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="nightowl-lane-record",
                                                daemon=True)
                self._thread.start()
        with self._progress:
            self._added += 1
        self._queue.put(record)

    def flush(self, wait_s: float = 5.0) -> None:
        """Write now every record handed in so far, the batch the thread is holding included
        (a read that must see what was just answered; the process's exit)."""
        with self._progress:
            target = self._added
        batch: list[LaneRecord] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._write(batch)
        with self._progress:
            self._progress.wait_for(lambda: self._done >= target, timeout=wait_s)

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            time.sleep(FLUSH_EVERY_S)
            while len(batch) < FLUSH_MOST:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[LaneRecord]) -> None:
        if not batch:
            return
        try:
            self._store(batch)
        finally:
            with self._progress:
                self._done += len(batch)
                self._progress.notify_all()

    def _store(self, batch: list[LaneRecord]) -> None:
        try:
            with self._factory() as session:
                write(session, batch)
        except Exception:
            # One bad record must not lose the others: write them one by one.
            log.exception("recording %d direct requests failed; retrying one by one",
                          len(batch))
            for rec in batch:
                try:
                    with self._factory() as session:
                        write(session, [rec])
                except Exception:
                    log.exception("direct request %s was answered but not recorded",
                                  rec.request.id)
