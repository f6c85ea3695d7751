"""What a worker says of itself, and what it looks like to the operator: one model for the
HTTP API, the command line, the dashboard and the metrics."""

from __future__ import annotations

from pydantic import BaseModel, Field

from nightowl.common.enums import WorkerStatus


class WorkerInfo(BaseModel):
    """What a worker process says of itself when it starts."""

    id: str
    name: str
    host: str
    pid: int
    queues: str
    device: str
    concurrency: int


class WorkerView(WorkerInfo):
    """A worker as its heartbeats show it now."""

    status: WorkerStatus = Field(description="alive, stopped, or dead (no heartbeat past its "
                                    "dead-after, recorded or not yet)")
    current_jobs: list[str]
    current_chunks: list[str]
    current_runs: list[str]
    items_done: int
    items_per_s: float
    started_at: str
    last_seen_at: str
    last_seen_s_ago: float
