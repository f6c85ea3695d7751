"""The SQL control plane at fleet scale: does a chunk cost the same with 1 or 10,000 live jobs?

A simulated fleet on real PostgreSQL + Redis that goes through the real task path: Celery
worker processes run nightowl's `run_chunk` (claim under a lease, dispatch top-up, result
commit, finalize, the maintenance pass), with the model replaced by an engine that answers at
once (bench/control_plane_worker.py), so only the control plane is timed. Everything runs on
a queue of its own (`cp-bench`), so other work in the database is not dispatched with it;
the bench deletes its jobs when done.

    live jobs       L live jobs waiting (several tenants), 32-item chunks, one worker process:
                    items/s over a fixed window, claim (+ top-up) and commit p50/p99, and the
                    time spent waiting on locks (PostgreSQL backends in a Lock wait, sampled)
    workers         1, 2, 4 worker processes on one big job (256-item chunks)
    drain           K one-item jobs submitted through the job service vs one job of K
                    one-item chunks, one worker process: seconds from the first submit to the
                    last job completed (the issue's 1,000 one-item jobs)
    COPY ceiling    the same result rows written by COPY on one connection: the raw write
                    rate the control plane is a fraction of

Needs NIGHTOWL_DATABASE_URL (PostgreSQL) and NIGHTOWL_REDIS_URL. This host's 2 cores are
shared by PostgreSQL, Redis, the workers and (often) other people's work: figures are lower
bounds; compare ratios from one run.

    NIGHTOWL_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/DB \\
    NIGHTOWL_REDIS_URL=redis://127.0.0.1:6379/N .venv/bin/python bench/control_plane.py --quick
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

QUEUE = "cp-bench"
TEXT = "a quiet, precise film that earns every minute of its running time"


@dataclass
class Window:
    label: str
    live_jobs: int
    workers: int
    chunk_size: int
    items_per_s: float
    claim_p50: float
    claim_p99: float
    topup_p50: float
    commit_p50: float
    commit_p99: float
    dispatch_lock_ms: float
    lock_wait_s: float
    live_at_end: int


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--seconds", type=float, help="measured window per point (quick 5, full 10)")
    args = p.parse_args()
    url = os.environ.get("NIGHTOWL_DATABASE_URL", "")
    if not url.startswith("postgresql") or not os.environ.get("NIGHTOWL_REDIS_URL"):
        raise SystemExit("set NIGHTOWL_DATABASE_URL (postgresql+psycopg://...) and "
                         "NIGHTOWL_REDIS_URL (redis://...): this bench measures the real servers")
    start_machine = c.start(args)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    live_axis = [1, 100, 1000] if args.quick else [1, 100, 1000, 10_000]
    worker_axis = [4] if args.quick else [1, 2, 4]
    drain_k = 100 if args.quick else 1000

    bench = Bench()
    bench.setup()
    try:
        copy_rate = bench.copy_ceiling(20_000 if args.quick else 100_000)
        c.log(f"COPY ceiling: {copy_rate:,.0f} rows/s on one connection")
        writes = bench.write_methods()
        c.log("one chunk's 256 result rows: " + ", ".join(f"{k} {v:.1f} ms"
                                                          for k, v in writes.items()))
        picks = {live: bench.pick_cost(live) for live in [1, 100, 1000, 10_000]}
        c.log("dispatch pick p50: " + ", ".join(f"{k} live {v:.1f} ms" for k, v in picks.items()))
        windows: list[Window] = []
        drains: dict[str, float] = {}
        with bench.workers(1):
            # The host is shared: each point is measured twice, in an order that runs out and
            # back (1, 100, 1000, 1000, 100, 1), and the better of the two kept, so a burst of
            # other people's work does not land on one side of a ratio only.
            for live in [*live_axis, *reversed(live_axis)]:
                windows.append(bench.backlog(f"{live} live", live_jobs=live, chunk_size=32,
                                             workers=1, seconds=seconds))
            for side in ("one_job", "many_jobs", "many_jobs", "one_job"):
                took = bench.drain(drain_k, many=side == "many_jobs")
                drains[side] = min(drains.get(side, took), took)
        for n in worker_axis:
            with bench.workers(n):
                windows.append(bench.backlog(f"1 big job, {n} procs", live_jobs=1,
                                             chunk_size=256, workers=n, seconds=seconds))
                if n == max(worker_axis) and not args.quick:
                    windows.append(bench.backlog(f"1000 live, {n} procs", live_jobs=1000,
                                                 chunk_size=32, workers=n, seconds=seconds))
    finally:
        bench.teardown()

    by: dict[str, Window] = {}
    for w in windows:  # the better of a point's two runs
        if w.label not in by or w.items_per_s > by[w.label].items_per_s:
            by[w.label] = w
    windows = list(by.values())
    one, thousand = by["1 live"], by["1000 live"]
    top = max(worker_axis)
    big = by[f"1 big job, {top} procs"]
    mode = "quick" if args.quick else "full"
    print(f"control plane ({mode}): real PostgreSQL + Redis, Celery workers running run_chunk "
          f"with a no-model engine, dispatch window {bench.window}; {seconds:.0f} s windows")
    print(c.load_note(start_machine))
    print(c.table(
        ["point", "live jobs", "procs", "items/chunk", "items/s", "claim p50 ms", "claim p99",
         "top-up p50", "commit p50", "commit p99", "dispatch lock ms", "lock wait s",
         "live at end"],
        [[w.label, w.live_jobs, w.workers, w.chunk_size, w.items_per_s, w.claim_p50,
          w.claim_p99, w.topup_p50, w.commit_p50, w.commit_p99, w.dispatch_lock_ms,
          w.lock_wait_s, w.live_at_end] for w in windows]))
    print(f"drain {drain_k} one-item items, one worker process: one job of {drain_k} chunks "
          f"{drains['one_job']:.1f} s, {drain_k} one-item jobs {drains['many_jobs']:.1f} s")
    print(f"COPY of the same rows on one connection: {copy_rate:,.0f} rows/s")
    print("one chunk's 256 result rows written and committed, p50: " +
          ", ".join(f"{k} {v:.1f} ms" for k, v in writes.items()))
    print("one dispatch pick (no workers; 1 tenant for 1 live job, else 50), p50: " +
          ", ".join(f"{k:,} live jobs {v:.1f} ms" for k, v in picks.items()))
    ratios = {
        "items_1000_vs_1": thousand.items_per_s / one.items_per_s,
        "claim_p50_1000_vs_1": thousand.claim_p50 / one.claim_p50,
        "drain_many_vs_one": drains["many_jobs"] / drains["one_job"],
        "procs_vs_copy": big.items_per_s / copy_rate,
        # 100 live jobs are already spread over 50 tenants, as 10,000 are: a pick grows with
        # the tenants waiting (one probe each), and this ratio holds them equal.
        "pick_10000_vs_100": picks[10_000] / picks[100],
    }
    if "10000 live" in by:
        ratios["items_10000_vs_1"] = by["10000 live"].items_per_s / one.items_per_s
        ratios["claim_p50_10000_vs_1"] = by["10000 live"].claim_p50 / one.claim_p50
    headline = (
        f"items/s 1000 live vs 1: {ratios['items_1000_vs_1']:.2f}x; claim p50 1000 vs 1: "
        f"{ratios['claim_p50_1000_vs_1']:.2f}x; "
        + (f"10000 vs 1: items/s {ratios['items_10000_vs_1']:.2f}x, claim p50 "
           f"{ratios['claim_p50_10000_vs_1']:.2f}x; " if "items_10000_vs_1" in ratios else "")
        + f"one pick 10000 live vs 100 (50 tenants each): {ratios['pick_10000_vs_100']:.2f}x; "
        + f"{drain_k} one-item jobs vs one job of {drain_k} chunks: "
        f"{ratios['drain_many_vs_one']:.2f}x the time; {top} procs on one job: "
        f"{ratios['procs_vs_copy']:.2f} of the COPY ceiling")
    if not args.no_record:
        figures = {"windows": [w.__dict__ for w in windows], "drain_s": drains,
                   "drain_jobs": drain_k, "copy_rows_per_s": copy_rate, "ratios": ratios,
                   "pick_ms_p50": picks, "write_ms_p50": writes,
                   "dispatch_window": bench.window}
        path = c.write_record("control_plane", mode=mode, args=vars(args), figures=figures,
                              headline=headline, machine_at_start=start_machine)
        print(f"recorded in {os.path.relpath(path)}")
    print(headline)


class Bench:
    def __init__(self) -> None:
        self.timings = Path(tempfile.mkdtemp(prefix="cp-timings-"))
        self.window = 0

    # --- the database ---------------------------------------------------------------------

    def setup(self) -> None:
        from nightowl.common.config import get_settings
        from nightowl.common.enums import TaskKind
        from nightowl.platform import migrate
        from nightowl.platform.db import session_factory
        from nightowl.platform.orm import ModelVersion, Tenant

        self.settings = get_settings()
        self.window = self.settings.dispatch_window
        migrate.upgrade(self.settings)
        self.factory = session_factory(self.settings)
        self.clean()
        with self.factory() as s:
            version = s.query(ModelVersion).filter_by(name="cp-bench-null").first()
            if version is None:
                version = ModelVersion(name="cp-bench-null", version=1, kind=TaskKind.SENTIMENT,
                                       source="/nonexistent/cp-bench-null")
                s.add(version)
            self.tenants = [f"cpbench-t{n:02d}" for n in range(50)]
            have = set(s.scalars(Tenant.__table__.select().with_only_columns(Tenant.id)
                                 .where(Tenant.id.in_(self.tenants))))
            s.add_all(Tenant(id=t, name=t) for t in self.tenants if t not in have)
            s.commit()
            self.version_id = version.id

    def clean(self) -> None:
        import redis
        from sqlalchemy import delete, select
        from sqlalchemy.exc import OperationalError

        from nightowl.platform.orm import Job

        with self.factory() as s:
            ids = s.scalars(select(Job.id).where(Job.queue == QUEUE)).all()
            for n in range(0, len(ids), 500):
                for attempt in range(5):
                    # Workers may still be committing chunks of these jobs: a deadlock with
                    # them is retried.
                    try:
                        s.execute(delete(Job).where(Job.id.in_(ids[n:n + 500])))
                        s.commit()
                        break
                    except OperationalError:
                        s.rollback()
                        if attempt == 4:
                            raise
                        time.sleep(0.2)
        redis.Redis.from_url(self.settings.redis_url).delete(QUEUE)

    def teardown(self) -> None:
        import shutil

        self.clean()
        shutil.rmtree(self.timings, ignore_errors=True)

    def copy_ceiling(self, rows: int) -> float:
        """Rows/s of COPY into a table shaped (and indexed) like job_items, one connection."""
        import json

        from nightowl.platform.db import get_engine

        now = datetime.now(UTC)
        output = json.dumps({"label": "POSITIVE", "score": 0.99})
        item_input = json.dumps({"text": TEXT})
        raw = get_engine(self.settings).raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("DROP TABLE IF EXISTS cp_bench_copy")
            cur.execute("CREATE TABLE cp_bench_copy (LIKE job_items INCLUDING DEFAULTS "
                        "INCLUDING INDEXES)")
            raw.commit()
            t0 = time.perf_counter()
            with cur.copy("COPY cp_bench_copy (job_id, idx, line_no, custom_id, input, status, "  # type: ignore[attr-defined]
                          "output, attempts, worker, device, started_at, finished_at, "
                          "tokens_in, tokens_out) FROM STDIN") as cp:
                for i in range(rows):
                    cp.write_row(("job_cpbench_copy", i, i + 1, f"i{i}", item_input,
                                  "succeeded", output, 1, "cp-bench:1", "cpu", now, now, 8, 0))
            raw.commit()
            rate = rows / (time.perf_counter() - t0)
            cur.execute("DROP TABLE cp_bench_copy")
            raw.commit()
            return rate
        finally:
            raw.close()

    # --- workers -------------------------------------------------------------------------------

    @contextmanager
    def workers(self, n: int) -> Iterator[None]:
        from nightowl.platform.embedded import stop_group

        log = self.timings / f"worker-{n}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, str(c.BENCH / "control_plane_worker.py"), QUEUE, str(n),
                 str(self.timings)],
                env={**os.environ, "NIGHTOWL_REAP_INTERVAL_SECONDS": "30"},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(proc, log)
            yield
        finally:
            stop_group(proc)
            self.clean()

    def _wait_ready(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        """A one-item job through the workers: they are up and every import is done."""
        job_id = self.submit(items=1, chunk_size=1, tenant=self.tenants[0])
        self.wait_done([job_id], timeout=60, proc=proc, log=log)

    # --- jobs -------------------------------------------------------------------------------------

    def submit(self, *, items: int, chunk_size: int, tenant: str | None) -> str:
        """One job through the job service, as the API and the CLI submit it."""
        from nightowl.common.enums import TaskKind
        from nightowl.jobs.inputs import ParsedLine
        from nightowl.jobs.service import JobSpec, submit_job
        from nightowl.platform.orm import ModelVersion

        with self.factory() as s:
            version = s.get(ModelVersion, self.version_id)
            spec = JobSpec(kind=TaskKind.SENTIMENT, model="cp-bench-null@v1",
                           chunk_size=chunk_size, queue=QUEUE, tenant_id=tenant)
            lines = (ParsedLine(i + 1, f"i{i}", {"text": TEXT}) for i in range(items))
            job = submit_job(session=s, settings=self.settings, spec=spec, lines=lines,
                             version=version)
            return job.id

    def wait_done(self, job_ids: list[str], *, timeout: float,
                  proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> float:
        """Seconds (bench clock) when the last of `job_ids` is completed."""
        from sqlalchemy import func, select

        from nightowl.common.enums import JobStatus
        from nightowl.platform.orm import Job

        deadline = time.monotonic() + timeout
        while True:
            with self.factory() as s:
                left = s.scalar(select(func.count()).select_from(Job).where(
                    Job.id.in_(job_ids), Job.status != JobStatus.COMPLETED))
            if not left:
                return time.perf_counter()
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the worker died:\n{log.read_text()[-3000:] if log else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} jobs not completed after {timeout}s")
            time.sleep(0.05)

    def drain(self, k: int, *, many: bool) -> float:
        """Seconds from the first submit until every item of K is done."""
        c.log(f"drain: {f'{k} one-item jobs' if many else f'one job of {k} chunks'}")
        t0 = time.perf_counter()
        if many:
            ids = [self.submit(items=1, chunk_size=1, tenant=self.tenants[n % 10])
                   for n in range(k)]
        else:
            ids = [self.submit(items=k, chunk_size=1, tenant=self.tenants[0])]
        seconds = self.wait_done(ids, timeout=600) - t0
        self.clean()
        return seconds

    def build_backlog(self, live_jobs: int, chunk_size: int, items: int) -> None:
        """`live_jobs` queued jobs (spread over tenants, oldest first) holding `items` items in
        all, written in bulk: the backlog is the setting, not what is measured. Rows are the
        ones submit writes (nightowl.jobs.service)."""
        from sqlalchemy import insert

        from nightowl.common.enums import ItemStatus, JobStatus, TaskKind
        from nightowl.jobs import service
        from nightowl.platform.orm import Job, JobChunk, new_id

        per_job = max(chunk_size, items // live_jobs // chunk_size * chunk_size)
        tenants = self.tenants[:1] if live_jobs == 1 else self.tenants[:min(50, live_jobs // 2)]
        base = datetime.now(UTC) - timedelta(hours=1)
        jobs, chunk_rows = [], []
        for n in range(live_jobs):
            job = Job(id=new_id("job"), tenant_id=tenants[n % len(tenants)],
                      kind=TaskKind.SENTIMENT, model_ref="cp-bench-null@v1",
                      model_version_id=self.version_id, params={}, status=JobStatus.QUEUED,
                      truncate=False, chunk_size=chunk_size, total_items=per_job, queue=QUEUE,
                      metadata_={}, priority=0, errors=[],
                      created_at=base + timedelta(milliseconds=n), queued_at=base)
            jobs.append(job)
            chunk_rows += service.chunk_rows(job, per_job)
        import json

        from nightowl.platform.db import get_engine

        with self.factory() as s:
            s.add_all(jobs)
            for n in range(0, len(chunk_rows), 5000):
                s.execute(insert(JobChunk), chunk_rows[n:n + 5000])
            s.commit()
        item_input = json.dumps({"text": TEXT})
        raw = get_engine(self.settings).raw_connection()
        try:
            cur = raw.cursor()
            with cur.copy("COPY job_items (job_id, idx, line_no, custom_id, input, status, "  # type: ignore[attr-defined]
                          "attempts) FROM STDIN") as cp:
                for job in jobs:
                    for i in range(per_job):
                        cp.write_row((job.id, i, i + 1, f"i{i}", item_input,
                                      ItemStatus.PENDING.value, 0))
            raw.commit()
            # Settle what a bulk load leaves behind before the window opens, as a database that
            # grew its backlog over time would be: the planner sees the real sizes, the
            # visibility map is set (autovacuum would otherwise start mid-window), and the
            # load's WAL is checkpointed.
            driver = raw.driver_connection
            driver.autocommit = True  # type: ignore[union-attr]
            try:
                cur.execute("VACUUM ANALYZE jobs, job_chunks, job_items")
                cur.execute("CHECKPOINT")
            finally:
                driver.autocommit = False  # type: ignore[union-attr]
        finally:
            raw.close()

    def backlog(self, label: str, *, live_jobs: int, chunk_size: int, workers: int,
                seconds: float) -> Window:
        from sqlalchemy import func, select

        from nightowl.common.enums import JobStatus
        from nightowl.jobs import dispatch
        from nightowl.platform.orm import Job, JobChunk

        # Enough work that the window never runs dry: ~3x what the window can drain.
        items = max(live_jobs * 2 * chunk_size, int(20_000 * workers * seconds / 10)
                    if chunk_size > 64 else 12_800)
        c.log(f"{label}: building {live_jobs} live jobs, {items:,} items")
        self.build_backlog(live_jobs, chunk_size, items)
        with self.factory() as s:
            dispatch.top_up(s, self.settings, QUEUE)
        time.sleep(1.0)  # let the workers reach a steady pace
        sampler = LockSampler(self.factory)
        t0, w0 = time.perf_counter(), time.time()
        start = datetime.now(UTC)
        sampler.start()
        time.sleep(seconds)
        end = datetime.now(UTC)
        w1 = time.time()
        lock_wait = sampler.stop()
        elapsed = time.perf_counter() - t0
        with self.factory() as s:
            done = s.scalar(
                select(func.coalesce(func.sum(JobChunk.end_idx - JobChunk.start_idx), 0))
                .join(Job, Job.id == JobChunk.job_id)
                .where(Job.queue == QUEUE, JobChunk.finished_at >= start.replace(tzinfo=None),
                       JobChunk.finished_at < end.replace(tzinfo=None))) or 0
            live_end = s.scalar(select(func.count()).select_from(Job).where(
                Job.queue == QUEUE, Job.status.in_([JobStatus.QUEUED, JobStatus.IN_PROGRESS])))
        ops = self.read_timings(w0, w1)
        claim = ops.get("take", [])
        window = Window(label=label, live_jobs=live_jobs, workers=workers,
                        chunk_size=chunk_size, items_per_s=done / elapsed,
                        claim_p50=c.percentile(claim, 0.5), claim_p99=c.percentile(claim, 0.99),
                        topup_p50=c.percentile(ops.get("topup", []), 0.5),
                        commit_p50=c.percentile(ops.get("commit", []), 0.5),
                        commit_p99=c.percentile(ops.get("commit", []), 0.99),
                        dispatch_lock_ms=sum(ops.get("lock", [])), lock_wait_s=lock_wait,
                        live_at_end=live_end or 0)
        c.log(f"{label}: {window.items_per_s:,.0f} items/s, claim p50 {window.claim_p50:.1f} ms, "
              f"commit p50 {window.commit_p50:.1f} ms, {live_end} live at the end")
        self.clean()
        return window

    def pick_cost(self, live_jobs: int, repeat: int = 15) -> float:
        """p50 ms of one dispatch pick (the top-up's choice of `dispatch_window` chunks, rolled
        back) with `live_jobs` live jobs of 2 one-item chunks each, no workers: the dispatch
        cost alone, free of the workers' noise."""
        from nightowl.jobs import dispatch

        self.build_backlog(live_jobs, 1, max(2 * live_jobs, 4 * self.window))
        took = []
        with self.factory() as s:
            for _ in range(repeat):
                t0 = time.perf_counter()
                picked = dispatch._pick(s, QUEUE, self.window)  # type: ignore[attr-defined]
                took.append((time.perf_counter() - t0) * 1000)
                s.rollback()
                assert len(picked) == self.window, picked
        self.clean()
        return c.percentile(took, 0.5)

    def write_methods(self, rows: int = 256, repeat: int = 10) -> dict[str, float]:
        """p50 ms to write one chunk's result rows (and commit), three ways on PostgreSQL: an
        executemany of UPDATEs (psycopg pipelines it), one UPDATE FROM unnest of arrays (what
        chunks.complete does), and a COPY into a temporary table then one UPDATE FROM it."""
        import json

        from sqlalchemy import text, update

        from nightowl.common.enums import ItemStatus
        from nightowl.jobs import chunks
        from nightowl.platform.orm import JobItem

        self.build_backlog(1, rows, rows * repeat * 3)
        now = datetime.now(UTC)
        with self.factory() as s:
            ids = list(s.scalars(text("SELECT i.id FROM job_items i JOIN jobs j ON j.id = "
                                      "i.job_id WHERE j.queue = :q ORDER BY i.id"),
                                 {"q": QUEUE}))
            job_id = s.scalar(text("SELECT id FROM jobs WHERE queue = :q"), {"q": QUEUE})
        groups = [ids[n:n + rows] for n in range(0, len(ids), rows)]
        output = {"label": "POSITIVE", "score": 0.99}

        def outcomes(group: list[int]) -> list[Any]:
            return [chunks.ItemOutcome.succeeded(i, output, 8, 0, started_at=now,
                                                 finished_at=now) for i in group]

        def executemany(s: Any, group: list[int]) -> None:
            s.execute(update(JobItem).execution_options(synchronize_session=False), [
                {"id": i, "job_id": job_id, "status": ItemStatus.SUCCEEDED, "output": output,
                 "error_code": None,
                 "error_message": None, "tokens_in": 8, "tokens_out": 0, "attempts": 1,
                 "worker": "w", "device": "cpu", "started_at": now, "finished_at": now}
                for i in group])

        def unnest(s: Any, group: list[int]) -> None:
            chunks.write_items(s, outcomes(group), job_id=job_id, attempts=1, worker="w",
                               device="cpu", now=now)

        def copy(s: Any, group: list[int]) -> None:
            raw = s.connection().connection.driver_connection
            cur = raw.cursor()
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS cp_results (id bigint, status text, "
                        "output text, tokens_in int, tokens_out int, started_at timestamptz, "
                        "finished_at timestamptz) ON COMMIT DELETE ROWS")
            with cur.copy("COPY cp_results FROM STDIN") as cp:
                for i in group:
                    cp.write_row((i, "succeeded", json.dumps(output), 8, 0, now, now))
            cur.execute("UPDATE job_items AS i SET status = r.status, output = "
                        "CAST(r.output AS json), tokens_in = r.tokens_in, tokens_out = "
                        "r.tokens_out, attempts = 1, worker = 'w', device = 'cpu', started_at "
                        "= r.started_at, finished_at = r.finished_at FROM cp_results r WHERE "
                        "i.job_id = %s AND i.id = r.id", (job_id,))

        took: dict[str, list[float]] = {"executemany": [], "unnest": [], "copy": []}
        methods = {"executemany": executemany, "unnest": unnest, "copy": copy}
        with self.factory() as s:
            for n, group in enumerate(groups):
                name = list(methods)[n % 3]
                t0 = time.perf_counter()
                methods[name](s, group)
                s.commit()
                took[name].append((time.perf_counter() - t0) * 1000)
        self.clean()
        return {name: c.percentile(ms, 0.5) for name, ms in took.items()}

    def read_timings(self, t0: float, t1: float) -> dict[str, list[float]]:
        """Per op, in order of start: the ms of each call that started in [t0, t1)."""
        by_op: dict[str, list[tuple[float, float]]] = {}
        for path in self.timings.glob("*.tsv"):
            for line in path.read_text().splitlines():
                op, started, ms = line.split("\t")
                if t0 <= float(started) < t1:
                    by_op.setdefault(op, []).append((float(started), float(ms)))
        return {op: [ms for _, ms in sorted(rows)] for op, rows in by_op.items()}


class LockSampler:
    """Seconds PostgreSQL backends spent waiting on a lock (row or advisory), sampled every
    20 ms from pg_stat_activity."""

    def __init__(self, factory: Any) -> None:
        self.factory, self.waited, self.stopping = factory, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> float:
        self.stopping.set()
        self.thread.join()
        return self.waited

    def _run(self) -> None:
        from sqlalchemy import text

        with self.factory() as s:
            last = time.perf_counter()
            while not self.stopping.wait(0.02):
                n = s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE "
                                  "wait_event_type = 'Lock' AND datname = current_database()"))
                s.commit()
                now = time.perf_counter()
                self.waited += (n or 0) * (now - last)
                last = now


if __name__ == "__main__":
    main()
