"""Fairness: tenant A's big job is running; tenant B submits a small one on the same workers.

Chunks reach the broker from SQL through a small window (nightowl.jobs.dispatch), so B's job should
start within about a window of A's chunks, not after all of them, and cost A little: the goal
is B starting within 2 s and completing within 5 s, A's throughput down under 5%.

A is measured alone for `--window-s` seconds, then B is submitted and A is measured again over
the same length of time, then alone once more: A's rate drifts as its tables grow and the
database tidies up after them, so "with B" is compared with the mean of the two alone windows
around it, and the drift (after / before) is printed beside it. Both jobs are submitted with
the core service (as the API and CLI do), each for its own tenant. A is scaled down from the
goal's 1,000,000 items (submitting a million rows takes minutes on a small host; pass
--a-items 1000000 to run it): only A's chunks waiting ahead of B matter, never how many wait in
SQL. A is cancelled at the end.

Prints B's start latency and completion time against the goal, and A's throughput without and
with B side by side as a ratio; appends a JSON record to bench/results/fairness.jsonl.

    .venv/bin/python bench/fairness.py --quick
    .venv/bin/python bench/fairness.py                  # A: 300,000 items
    NIGHTOWL_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/DB \\
    NIGHTOWL_REDIS_URL=redis://127.0.0.1:6379/N .venv/bin/python bench/fairness.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

MODEL = "tiny-sentiment@prod"


def _items(n: int, seed: int) -> Any:
    from nightowl.cli import demo_data
    from nightowl.jobs.inputs import ParsedLine

    for k, row in enumerate(demo_data.reviews(n, seed=seed)):
        yield ParsedLine(k + 1, str(row["custom_id"]), {"text": row["text"]}, None)


def _submit(tenant: str, items: int, seed: int, chunk_size: int) -> str:
    from nightowl.common.config import get_settings
    from nightowl.common.enums import TaskKind
    from nightowl.jobs.service import JobSpec, submit_job
    from nightowl.platform.db import session_scope

    spec = JobSpec(kind=TaskKind.SENTIMENT, model=MODEL, tenant_id=tenant, chunk_size=chunk_size)
    with session_scope() as s:
        return submit_job(session=s, settings=get_settings(), spec=spec,
                          lines=_items(items, seed)).id


def _done(job_id: str) -> tuple[int, str, Any, Any]:
    from sqlalchemy import func, select

    from nightowl.platform.db import session_factory
    from nightowl.platform.orm import Job, JobChunk

    with session_factory()() as s:
        job = s.get(Job, job_id)
        assert job is not None
        first = s.scalar(select(func.min(JobChunk.started_at)).where(JobChunk.job_id == job_id))
        return job.done_items, job.status.value, first, job.completed_at


def _throughput(job_id: str, seconds: float) -> float:
    start_items, _, _, _ = _done(job_id)
    t0 = time.perf_counter()
    time.sleep(seconds)
    end_items, status, _, _ = _done(job_id)
    if status != "in_progress":
        raise RuntimeError(f"A is {status} before the measurement ended; raise --a-items")
    return (end_items - start_items) / (time.perf_counter() - t0)


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--a-items", type=int, help="items in A's job (300,000; quick 60,000)")
    p.add_argument("--b-items", type=int, default=100, help="items in B's job (100)")
    p.add_argument("--chunk-size", type=int, default=256, help="items per chunk (256)")
    p.add_argument("--window-s", type=float, help="seconds A is measured, alone and with B "
                   "(15; quick 6)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    args = p.parse_args()
    machine = c.start(args)
    a_items = args.a_items or (60_000 if args.quick else 300_000)
    window_s = args.window_s or (6.0 if args.quick else 15.0)

    with c.stack() as st:
        from nightowl.common.config import get_settings
        from nightowl.jobs.service import cancel_job
        from nightowl.platform.auth import get_or_create_tenant
        from nightowl.platform.db import get_engine, session_scope

        backend = get_engine().dialect.name
        with session_scope() as s:
            team_a = get_or_create_tenant(s, "team-a").id
            team_b = get_or_create_tenant(s, "team-b").id
        c.log(f"{backend}; submitting A: {a_items:,} items")
        t = time.perf_counter()
        job_a = _submit(team_a, a_items, 1, args.chunk_size)
        a_submit_s = time.perf_counter() - t
        workers = [st.start_worker(concurrency=args.concurrency, threads=1)
                   for _ in range(args.workers)]
        # Warm: every pool process has loaded the model and committed a chunk.
        while _done(job_a)[0] < args.chunk_size * args.workers * args.concurrency * 2:
            if not all(w.alive() for w in workers):
                raise RuntimeError(workers[0].output())
            time.sleep(0.2)
        c.log(f"A running; measuring A alone for {window_s:.0f}s")
        alone = _throughput(job_a, window_s)

        c.log("submitting B")
        submitted = time.time()
        t_submit = time.perf_counter()
        job_b = _submit(team_b, args.b_items, 2, args.chunk_size)
        b_submit_s = time.perf_counter() - t_submit
        start_a = _done(job_a)[0]
        t0 = time.perf_counter()
        while (b := _done(job_b))[3] is None:
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"B did not complete in 120 s ({b[1]})")
            time.sleep(0.05)
        remaining = window_s - (time.perf_counter() - t0)
        if remaining > 0:
            time.sleep(remaining)
        end_a, status_a, _, _ = _done(job_a)
        if status_a != "in_progress":
            raise RuntimeError(f"A is {status_a} before the measurement ended; raise --a-items")
        with_b = (end_a - start_a) / (time.perf_counter() - t0)
        b_start_s = b[2].timestamp() - submitted
        b_done_s = b[3].timestamp() - submitted
        c.log(f"B done; measuring A alone again for {window_s:.0f}s")
        after = _throughput(job_a, window_s)
        with session_scope() as s:
            cancel_job(s, job_a)
        window = get_settings().dispatch_window

    figures: dict[str, Any] = {
        "backend": backend, "a_items": a_items, "b_items": args.b_items,
        "chunk_size": args.chunk_size, "workers": args.workers,
        "concurrency": args.concurrency, "dispatch_window": window, "window_s": window_s,
        "a_submit_s": a_submit_s, "b_submit_s": b_submit_s,
        "b_start_s": b_start_s, "b_complete_s": b_done_s,
        "a_items_per_s_alone": alone, "a_items_per_s_with_b": with_b,
        "a_items_per_s_alone_after": after,
        "a_drift_after_before": after / alone if alone else 0.0,
        "a_throughput_ratio": 2 * with_b / (alone + after) if alone + after else 0.0,
    }
    print(f"fairness ({'quick' if args.quick else 'full'}): A {a_items:,} items (tenant "
          f"team-a) running, B {args.b_items} items (team-b) submitted; {args.workers} "
          f"worker(s) x -c {args.concurrency}, chunk {args.chunk_size}, window {window}, "
          f"{backend}")
    print(c.load_note(machine))
    print(c.table(["B (seconds from its submit)", "measured", "goal", "measured / goal"], [
        ["first chunk started", b_start_s, 2.0, b_start_s / 2.0],
        ["job completed", b_done_s, 5.0, b_done_s / 5.0],
    ]))
    print(c.table(["A's throughput", "alone before", "with B", "alone after",
                   "with / mean(alone)", "after / before"], [
        ["items/s", alone, with_b, after, figures["a_throughput_ratio"],
         figures["a_drift_after_before"]],
    ]))
    print(f"(B's submit itself took {b_submit_s:.2f}s; A's {a_submit_s:.1f}s)")
    if not args.no_record:
        path = c.write_record("fairness", mode="quick" if args.quick else "full",
                              args=vars(args), figures=figures, machine_at_start=machine,
                              headline=f"B starts {b_start_s:.2f}s, completes {b_done_s:.2f}s; "
                                       f"A with/alone {figures['a_throughput_ratio']:.3f} "
                                       f"(drift {figures['a_drift_after_before']:.3f})")
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
