"""A worker's steps on the core state machine as plain calls, for tests/core."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, update

from nightowl.common.config import Settings
from nightowl.common.enums import ChunkStatus, ItemStatus, TaskKind
from nightowl.fleet import reaper
from nightowl.jobs import chunks, dispatch
from nightowl.jobs.chunks import ClaimedChunk, ItemOutcome
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, submit_job
from nightowl.platform import auth, broker
from nightowl.platform.db import session_scope
from nightowl.platform.orm import JobChunk, utcnow


@dataclass
class Core:
    """One test's queue (no real worker reads it), with a worker's steps as calls."""

    settings: Settings
    queue: str
    model: str
    jobs: list[str]

    def tenant(self, name: str) -> str:
        with session_scope(self.settings) as s:
            return auth.get_or_create_tenant(s, f"{name}-{uuid.uuid4().hex[:6]}").id

    def submit(self, items: int, *, chunk_size: int = 1, tenant: str | None = None,
               priority: int = 0) -> str:
        lines = (ParsedLine(n + 1, f"c{n}", {"text": f"review {n}"}) for n in range(items))
        spec = JobSpec(kind=TaskKind.SENTIMENT, model=self.model, chunk_size=chunk_size,
                       queue=self.queue, tenant_id=tenant, priority=priority)
        with session_scope(self.settings) as s:
            job_id = submit_job(session=s, settings=self.settings, spec=spec, lines=lines).id
        self.jobs.append(job_id)
        return job_id

    def claim(self, job_id: str, chunk_no: int, owner: str = "w1",
              lease_seconds: int = 300) -> ClaimedChunk | None:
        """run_chunk's first step: claim, then top the window up (the message has left it)."""
        with session_scope(self.settings) as s:
            claimed = chunks.claim(s, job_id, chunk_no, owner=owner, lease_seconds=lease_seconds)
            dispatch.top_up(s, self.settings, self.queue)
        return claimed

    def complete(self, claimed: ClaimedChunk, owner: str = "w1",
                 outcomes: list[ItemOutcome] | None = None) -> bool:
        """What run_chunk writes when every item succeeded (or `outcomes`), then the top-up."""
        if outcomes is None:
            outcomes = [ItemOutcome(item.id, ItemStatus.SUCCEEDED, output={"label": "positive"},
                                    tokens_in=3, tokens_out=0) for item in claimed.items]
        with session_scope(self.settings) as s:
            done = chunks.complete(s, claimed, outcomes, owner=owner, worker="test",
                                   device="cpu", batches=1, device_seconds=0.01)
            dispatch.top_up(s, self.settings, self.queue)
        return done

    def take(self) -> tuple[str, int] | None:
        """The next message in the broker, as a worker's pool would receive it: (job, chunk)."""
        raw = broker.redis_client(self.settings).rpop(self.queue)
        return None if raw is None else _chunk_of(raw)

    def messages(self) -> list[tuple[str, int]]:
        """Every message waiting in the broker, oldest first, left in place."""
        raws = broker.redis_client(self.settings).lrange(self.queue, 0, -1)
        return [_chunk_of(raw) for raw in reversed(raws)]

    def depth(self) -> int | None:
        return broker.queue_depth(self.settings, self.queue)

    def run_all(self, owner: str = "w1") -> list[tuple[str, int]]:
        """A worker draining the queue: take, claim, complete (each tops the window up).
        Returns the chunks it ran, in order; a message for a chunk already done runs nothing."""
        ran = []
        while (message := self.take()) is not None:
            assert (self.depth() or 0) < self.settings.dispatch_window
            claimed = self.claim(*message, owner=owner)
            if claimed is not None:
                assert self.complete(claimed, owner=owner)
                ran.append(message)
        return ran

    def reap(self) -> reaper.ReapReport:
        with session_scope(self.settings) as s:
            return reaper.reap(s, self.settings,
                               queue_depth=lambda q: broker.queue_depth(self.settings, q))

    def expire_leases(self, job_id: str) -> None:
        """Let the job's leases run out, as if their owners had hung."""
        self._set(job_id, JobChunk.status == ChunkStatus.RUNNING,
                  lease_expires_at=self.ago(1))

    def age_window(self, job_id: str, seconds: float) -> None:
        """Make the job's chunks in the broker's window look sent `seconds` ago."""
        self._set(job_id, JobChunk.enqueued_at.is_not(None), enqueued_at=self.ago(seconds))

    def _set(self, job_id: str, where: ColumnElement[bool], **values: object) -> None:
        with session_scope(self.settings) as s:
            s.execute(update(JobChunk).where(JobChunk.job_id == job_id, where).values(**values))

    def ago(self, seconds: float) -> datetime:
        return utcnow() - timedelta(seconds=seconds)


def _chunk_of(raw: object) -> tuple[str, int]:
    """(job, chunk) of a run_chunk message as kombu stores it in Redis (body: base64 JSON)."""
    assert isinstance(raw, bytes | str)
    args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
    return str(args[0]), int(args[1])
