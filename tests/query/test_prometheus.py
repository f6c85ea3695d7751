"""/metrics: open, parseable by Prometheus, and live while a job runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from query_support import TEST_QUEUE, chunk_count, register_model, run_chunk, submit, unique
from sqlalchemy.orm import Session

from helpers import FINAL, wait_for_job, write_jsonl
from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform.broker import redis_client
from nightowl.platform.db import session_factory
from nightowl.registry import versions as registry
from nightowl_api import metrics
from nightowl_api.metrics import parse_nvidia_smi

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def anonymous(migrated: Settings) -> Iterator[TestClient]:
    from nightowl_api.main import app

    with TestClient(app) as c:
        yield c


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def waiting(samples: Samples, queue: str) -> float:
    """Chunks not started yet, wherever they wait: the broker's window or SQL."""
    return sum(samples.get(("nightowl_chunks_waiting", (("queue", queue), ("where", where))), 0)
               for where in ("broker", "sql"))


def test_metrics_follow_a_running_job(anonymous: TestClient, migrated: Settings,
                                      session: Session) -> None:
    redis_client(migrated).delete(TEST_QUEUE)
    name = unique("sentiment")
    register_model(session, name)
    model = f"{name}@v1"
    # Other tests' open jobs may use the same queue: count from what waited before.
    earlier = waiting(scrape(anonymous), TEST_QUEUE)
    job = submit(migrated, model=f"{name}@prod", texts=[f"review {i}" for i in range(40)],
                 chunk_size=10)
    chunks = chunk_count(migrated, job)
    queued = scrape(anonymous)
    assert waiting(queued, TEST_QUEUE) == earlier + chunks
    # Only the dispatch window goes to the broker; the rest waits in SQL.
    assert value(queued, "nightowl_queue_depth", queue=TEST_QUEUE) <= migrated.dispatch_window
    assert value(queued, "nightowl_jobs", status="queued") >= 1
    assert value(queued, "nightowl_items_pending", kind="sentiment", model=model) == 40
    assert value(queued, "nightowl_broker_up") == 1

    run_chunk(migrated, job, 0)
    run_chunk(migrated, job, 1, fail=lambda text: text.endswith("3"))
    running = scrape(anonymous)
    assert value(running, "nightowl_jobs", status="in_progress") >= 1
    assert value(running, "nightowl_items_processed_total", kind="sentiment", model=model) == 20
    assert value(running, "nightowl_items_failed_total", kind="sentiment", model=model) == 1
    assert value(running, "nightowl_items_pending", kind="sentiment", model=model) == 20
    assert waiting(running, TEST_QUEUE) == earlier + chunks - 2
    # Histograms are cumulative over every finished chunk, this job's two included.
    before = value(queued, "nightowl_chunk_duration_seconds_count")
    assert value(running, "nightowl_chunk_duration_seconds_count") == before + 2
    assert value(running, "nightowl_chunk_duration_seconds_bucket", le="+Inf") == before + 2
    assert value(running, "nightowl_microbatch_size_count") >= 2
    assert ("nightowl_workers_alive", ()) in running

    for n in range(2, chunks):
        run_chunk(migrated, job, n)
    done = scrape(anonymous)
    assert value(done, "nightowl_items_processed_total", kind="sentiment", model=model) == 40
    # A queue of nightowl's own is always reported; a custom one while open jobs use it.
    assert done.get(("nightowl_queue_depth", (("queue", TEST_QUEUE),)), 0) == 0
    assert value(done, "nightowl_queue_depth", queue="cpu") >= 0
    assert value(done, "nightowl_items_pending", kind="sentiment", model=model) == 0


def test_gpu_memory_is_read_from_nvidia_smi_output() -> None:
    out = "0, NVIDIA H200, 1024, 143771\n1, NVIDIA H200, [N/A], 143771\n"
    assert parse_nvidia_smi(out) == [("0", "NVIDIA H200", 1024 * 2**20, 143771 * 2**20)]


def test_metrics_while_a_real_worker_runs_a_job(
        request: pytest.FixtureRequest, anonymous: TestClient, tmp_path: Path) -> None:
    try:
        settings = request.getfixturevalue("models")
        with session_factory(settings)() as s:
            registry.resolve(s, "tiny-sentiment@prod")
    except Exception as e:  # the ML runtime is someone else's work in progress
        pytest.skip(f"the bootstrap models cannot be built yet: {str(e)[:200]}")
    start_worker = request.getfixturevalue("start_worker")
    # Generation is slow enough per item that scrapes land while the job is part-way.
    n = 600
    rows = [{"custom_id": f"p{i}", "text": f"the king said {i}"} for i in range(n)]
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)  # type: ignore[arg-type]
    submitted = CliRunner().invoke(cli, ["submit", "generate", str(path), "--model",
                                         "tiny-generator@prod", "--chunk-size", "10",
                                         "--param", "max_new_tokens=32"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[-1]
    model = "tiny-generator@v1"
    before = scrape(anonymous)
    assert waiting(before, "cpu") >= n // 10
    # The counter is per model across every job: earlier jobs on this model count too.
    base = value(before, "nightowl_items_processed_total", kind="generate", model=model)
    worker = start_worker("-Q", "cpu", "-c", "1")
    metrics._workers.at = 0.0  # forget an answer cached before the worker was up
    seen: list[float] = []
    while True:
        samples = scrape(anonymous)
        seen.append(value(samples, "nightowl_items_processed_total", kind="generate",
                          model=model) - base)
        if wait_for_job(job_id, timeout=0.01, worker=worker, until=lambda j: True).status in FINAL:
            break
        time.sleep(0.1)
    final = scrape(anonymous)
    # Pings are answered once the worker listens and are cached for a while; a scraper asks
    # again every few seconds, and so does this test until the worker is counted.
    deadline = time.monotonic() + 20
    while value(final, "nightowl_workers_alive") < 1 and time.monotonic() < deadline:
        metrics._workers.at = 0.0
        final = scrape(anonymous)
    assert [d for d in seen if 0 < d < n], f"no scrape saw the job part-way: {seen}"
    assert value(final, "nightowl_items_processed_total", kind="generate", model=model) == base + n
    assert value(final, "nightowl_workers_alive") >= 1
