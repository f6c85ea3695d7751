"""/metrics for Prometheus, computed at scrape time from SQL and Redis.

The API is not the worker, so it has no in-process counters worth exporting: everything here
is read from where the truth lives (SQL for jobs, items and chunks; Redis for queues; Celery's
control channel for live workers). Histograms are cumulative over every finished chunk, so
they behave like counters for rate() as long as job rows are kept.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.common.enums import (
    TERMINAL_JOB_STATUSES,
    ChunkStatus,
    JobStatus,
    Queue,
    WorkerStatus,
)
from nightowl.fleet import heartbeats as fleet
from nightowl.fleet.views import WorkerView
from nightowl.jobs.stats import seconds_between
from nightowl.platform.broker import queue_depth
from nightowl.platform.db import session_factory
from nightowl.platform.orm import Job, JobChunk, ModelVersion, utcnow

log = logging.getLogger(__name__)
CHUNK_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# A Celery ping waits its whole timeout for stragglers; scrapes come every ~15 s, so one answer
# is reused for a while instead of making every scrape (and the dashboard) slow.
PING_TIMEOUT_S = 1.0
CACHE_S = 10.0
# The model label of series about tenants' own models, whose names are not the public's.
PRIVATE_MODEL = "private"


class _Cached:
    """A slow probe's last answer, reused for CACHE_S seconds."""

    def __init__(self, probe: Callable[[], Any]) -> None:
        self.probe, self.value, self.at, self.lock = probe, None, 0.0, threading.Lock()

    def get(self) -> Any:
        with self.lock:
            if time.monotonic() - self.at > CACHE_S:
                self.value, self.at = self.probe(), time.monotonic()
            return self.value


def _ping_workers() -> int | None:
    from nightowl.platform.celery_app import get_celery

    try:
        return len(get_celery().control.ping(timeout=PING_TIMEOUT_S) or [])
    except Exception as e:  # broker down: report "unknown" rather than fail the scrape
        log.warning("celery ping failed: %s", e)
        return None


def _gpu_memory() -> list[tuple[str, str, float, float]]:
    """(index, name, used bytes, total bytes) per GPU on this host; empty on CPU-only hosts.
    nvidia-smi, not torch: the API must never import torch."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.used,memory.total",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("nvidia-smi failed: %s", e)
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(out: str) -> list[tuple[str, str, float, float]]:
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            mib = 1024.0 * 1024.0
            gpus.append((parts[0], parts[1], float(parts[2]) * mib, float(parts[3]) * mib))
    return gpus


_workers = _Cached(_ping_workers)
_gpus = _Cached(_gpu_memory)


def _histogram(session: Session, name: str, doc: str, value: ColumnElement[Any],
               where: list[ColumnElement[bool]], buckets: Iterable[float]) -> Metric:
    bounds = list(buckets)
    cols = [func.sum(case((value <= b, 1), else_=0)) for b in bounds]
    row = session.execute(select(*cols, func.count(), func.sum(value))
                          .select_from(JobChunk).where(*where)).one()
    counts = [(str(float(b)), int(c or 0)) for b, c in zip(bounds, row, strict=False)]
    counts.append(("+Inf", int(row[-2] or 0)))
    return HistogramMetricFamily(name, doc, buckets=counts, sum_value=float(row[-1] or 0.0))


class NightowlCollector(Collector):
    def __init__(self, settings: Callable[[], Settings] = get_settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        settings = self.settings()
        queues = {q.value for q in Queue}
        try:
            with session_factory(settings)() as session:
                # Collected whole before yielding: a database error mid-way must not leave
                # half of the families in the answer.
                families = list(self._sql(session))
                families += worker_families(fleet.describe(session, settings, tenant_id=None))
                queues |= set(session.scalars(select(Job.queue).where(
                    Job.status.not_in(TERMINAL_JOB_STATUSES)).distinct()))
        except SQLAlchemyError as e:
            log.warning("metrics: database unavailable: %s", e)
            families = []
        yield from families
        yield GaugeMetricFamily("nightowl_database_up", "1 if the database answered",
                                value=1.0 if families else 0.0)
        depth = GaugeMetricFamily("nightowl_queue_depth",
                                  "Messages waiting in each broker queue", labels=["queue"])
        up = 1.0
        for queue in sorted(queues):
            n = queue_depth(settings, queue)
            if n is None:
                up = 0.0
                continue
            depth.add_metric([queue], float(n))
        yield depth
        yield GaugeMetricFamily("nightowl_broker_up", "1 if Redis answered", value=up)
        alive = _workers.get()
        if alive is not None:
            yield GaugeMetricFamily("nightowl_workers_alive",
                                    "Celery workers that answered a control ping", value=alive)
        gpus = _gpus.get() or []
        if gpus:
            used = GaugeMetricFamily("nightowl_gpu_memory_used_bytes", "GPU memory in use",
                                     labels=["gpu", "name"])
            total = GaugeMetricFamily("nightowl_gpu_memory_total_bytes", "GPU memory",
                                      labels=["gpu", "name"])
            for index, name, u, t in gpus:
                used.add_metric([index, name], u)
                total.add_metric([index, name], t)
            yield used
            yield total

    def _sql(self, session: Session) -> Iterator[Metric]:
        by_status = dict(session.execute(
            select(Job.status, func.count()).group_by(Job.status)).tuples().all())
        jobs = GaugeMetricFamily("nightowl_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], float(by_status.get(status, 0)))
        yield jobs
        # Job rows carry running counts that each chunk commit bumps: summing them is cheap
        # where scanning job_items on every scrape would not be.
        # Labelled by shared models only: a tenant's own model names are its private data, and
        # /metrics answers without a key. Every private model's counts go under "private".
        rows = session.execute(
            select(Job.kind, ModelVersion.name, ModelVersion.version,
                   ModelVersion.tenant_id.is_(None),
                   func.sum(Job.succeeded_items), func.sum(Job.failed_items),
                   func.sum(Job.total_items - Job.succeeded_items - Job.failed_items
                            - Job.cancelled_items - Job.expired_items))
            .join(ModelVersion, ModelVersion.id == Job.model_version_id)
            .group_by(Job.kind, ModelVersion.name, ModelVersion.version,
                      ModelVersion.tenant_id.is_(None))
        ).all()
        processed = CounterMetricFamily(
            "nightowl_items_processed", "Items finished by a worker (succeeded or failed)",
            labels=["kind", "model"])
        failed = CounterMetricFamily("nightowl_items_failed", "Items that ended in an error",
                                     labels=["kind", "model"])
        pending = GaugeMetricFamily("nightowl_items_pending", "Items not finished yet",
                                    labels=["kind", "model"])
        sums: dict[tuple[str, str], list[float]] = {}
        for kind, name, version, shared, ok, bad, left in rows:
            label = f"{name}@v{version}" if shared else PRIVATE_MODEL
            row = sums.setdefault((kind.value, label), [0.0, 0.0, 0.0])
            row[0] += float((ok or 0) + (bad or 0))
            row[1] += float(bad or 0)
            row[2] += float(left or 0)
        for labels, (finished, bad_n, left_n) in sums.items():
            processed.add_metric(list(labels), finished)
            failed.add_metric(list(labels), bad_n)
            pending.add_metric(list(labels), left_n)
        yield from (processed, failed, pending)
        # The broker holds only the dispatch window; the rest of the backlog waits in SQL.
        waiting = GaugeMetricFamily(
            "nightowl_chunks_waiting",
            "Chunks of open jobs not started yet, in the broker's window or in SQL",
            labels=["queue", "where"])
        for queue, in_broker, n in session.execute(
            select(Job.queue, JobChunk.enqueued_at.is_not(None), func.count())
            .join(Job, Job.id == JobChunk.job_id)
            .where(Job.status.not_in(TERMINAL_JOB_STATUSES),
                   JobChunk.status == ChunkStatus.PENDING)
            .group_by(Job.queue, JobChunk.enqueued_at.is_not(None))
        ).tuples():
            waiting.add_metric([queue, "broker" if in_broker else "sql"], float(n))
        yield waiting
        done = [JobChunk.status == ChunkStatus.DONE, JobChunk.started_at.is_not(None),
                JobChunk.finished_at.is_not(None)]
        yield _histogram(session, "nightowl_chunk_duration_seconds",
                         "Wall time of each finished chunk, claim to commit",
                         seconds_between(session, JobChunk.started_at, JobChunk.finished_at),
                         done, CHUNK_SECONDS_BUCKETS)
        size = (JobChunk.end_idx - JobChunk.start_idx) * 1.0 / JobChunk.batches
        yield _histogram(session, "nightowl_microbatch_size",
                         "Mean micro-batch size (items) of each finished chunk", size,
                         [*done, JobChunk.batches > 0], BATCH_SIZE_BUCKETS)
        # Workers busy on a chunk cannot always answer a ping (the solo pool is single-threaded):
        # a live lease is the other sign of life.
        busy = session.scalar(
            select(func.count()).select_from(JobChunk).where(
                JobChunk.status == ChunkStatus.RUNNING, JobChunk.lease_expires_at > utcnow()))
        yield GaugeMetricFamily("nightowl_chunks_running",
                                "Chunks held under a live lease by some worker",
                                value=float(busy or 0))


def worker_families(workers: list[WorkerView]) -> list[Metric]:
    """Per-worker gauges from the heartbeats, dead ones included until they age out."""
    labels = ["worker", "host", "queues", "device"]
    up = GaugeMetricFamily("nightowl_worker_up", "1 while the worker heartbeats", labels=labels)
    rate = GaugeMetricFamily("nightowl_worker_items_per_second",
                             "Items finished per second over the last heartbeat", labels=labels)
    seen = GaugeMetricFamily("nightowl_worker_last_seen_seconds",
                             "Seconds since the worker's last heartbeat", labels=labels)
    done = CounterMetricFamily("nightowl_worker_items", "Items the worker finished",
                               labels=labels)
    busy = GaugeMetricFamily("nightowl_worker_chunks_running",
                             "Chunks the worker holds now", labels=labels)
    for w in workers:
        values = [w.name, w.host, w.queues, w.device]
        up.add_metric(values, 1.0 if w.status == WorkerStatus.ALIVE else 0.0)
        rate.add_metric(values, w.items_per_s)
        seen.add_metric(values, w.last_seen_s_ago)
        done.add_metric(values, float(w.items_done))
        busy.add_metric(values, float(len(w.current_chunks)))
    return [up, rate, seen, done, busy]


registry = CollectorRegistry(auto_describe=False)
registry.register(NightowlCollector())
router = APIRouter(tags=["ops"])


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus text format; open, like /healthz, so a scraper needs no key."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
