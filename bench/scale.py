"""P3: does cost grow linearly with job size, and does memory stay flat?

For each size, a fresh isolated stack (temp home, SQLite or NIGHTOWL_DATABASE_URL, embedded
Valkey or NIGHTOWL_REDIS_URL) and a fresh real worker on `tiny-sentiment` (warmed on a small
job first; its peak-RSS marks are reset after the warm-up), then:

  submit s        `nightowl submit` in its own process: read and validate the JSONL, insert
                  the items and chunks, send one message per chunk
  submit peak     that process's peak RSS (ru_maxrss)
  e2e items/s     items / (submit start -> the job's completed_at)
  worker peak     the highest peak RSS (VmHWM) among the worker's pool processes over the job,
                  and the Celery parent's

Inputs: SST-2 sentences cycled to the size (synthetic reviews if the datasets are absent).
Sizes: 10k, 100k, 1M (full; --sizes to change, e.g. --sizes 10000,100000,300000 on a slow
box), 1k, 10k, 30k (--quick). Fixed costs (process start, imports, the first chunk) dominate
small jobs, so linearity is judged on the marginal cost per item between successive sizes:
the last line gives the last step's marginal cost over the first's (1.00 = linear) and the
peak-RSS growth in MiB from the smallest size to the largest.

    .venv/bin/python bench/scale.py --quick
    .venv/bin/python bench/scale.py                          # 10k, 100k, 1M
    .venv/bin/python bench/scale.py --sizes 10000,100000     # what fits your time
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def texts_for(data: Path, n: int) -> list[str]:
    try:
        return [r["text"] for r in c.sst2_rows(data, n)]
    except SystemExit:
        from nightowl.cli import demo_data

        return [r["text"] for r in demo_data.reviews(n)]


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--sizes", help="comma list of item counts (10000,100000,1000000; quick "
                                   "1000,10000,30000)")
    p.add_argument("--concurrency", type=int, default=2, help="worker processes (-c)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    args = p.parse_args()
    start_machine = c.start(args)
    default = "1000,10000,30000" if args.quick else "10000,100000,1000000"
    sizes = [int(x) for x in (args.sizes or default).split(",")]
    if len(sizes) < 2 or sizes != sorted(sizes):
        p.error("--sizes needs at least two item counts, smallest first")
    pool = texts_for(args.data, min(max(sizes), 67_349))

    rows: list[dict[str, Any]] = []
    for n in sizes:
        with c.stack() as st:
            path = st.home / f"items-{n}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for i in range(n):
                    fh.write(f'{{"custom_id": "i{i}", "text": {_json(pool[i % len(pool)])}}}\n')
            worker = st.start_worker(concurrency=args.concurrency, threads=args.threads)
            st.warm_up("sentiment", "tiny-sentiment@prod", pool[0], worker=worker,
                       chunks=2 * args.concurrency)
            pool_pids, parent = worker.pool_pids(), worker.proc.pid
            base_rss = max(c.rss_mib(pid) for pid in pool_pids)
            reset = c.reset_peak_rss([parent, *pool_pids])
            c.log(f"{n:,} items: submitting")
            submitted = st.submit("sentiment", path, "tiny-sentiment@prod")
            c.log(f"{n:,} items: submitted in {submitted.seconds:.1f}s; running")
            finished = st.wait(submitted, worker=worker, timeout=6 * 3600)
            if finished.status != "completed" or finished.succeeded != n:
                raise RuntimeError(f"{n} items: job ended {finished.status}, "
                                   f"{finished.succeeded} succeeded")
            worker_peak = max(c.peak_rss_mib(pid) for pid in pool_pids)
            parent_peak = c.peak_rss_mib(parent)
            db = st.home / "nightowl.db"
            db_mib = db.stat().st_size / 2**20 if db.exists() else None
            c.log(f"{n:,} items: end-to-end {finished.end_to_end_s:.1f}s")
            rows.append({
                "items": n, "submit_s": submitted.seconds,
                "submit_items_per_s": n / submitted.seconds,
                "submit_peak_mib": submitted.peak_rss_mib,
                "e2e_s": finished.end_to_end_s, "e2e_items_per_s": n / finished.end_to_end_s,
                "worker_s": finished.run_s, "worker_base_mib": base_rss,
                "worker_peak_mib": worker_peak, "worker_parent_peak_mib": parent_peak,
                "peak_reset": reset, "sqlite_mib": db_mib,
            })
            time.sleep(0.5)

    small, large = rows[0], rows[-1]
    # Fixed costs (process start, imports, the first chunk's latency) dominate small jobs, so
    # linearity is judged on the marginal cost per item between successive sizes.
    marginal = [
        {"from": a["items"], "to": b["items"],
         "submit_us": 1e6 * (b["submit_s"] - a["submit_s"]) / (b["items"] - a["items"]),
         "e2e_us": 1e6 * (b["e2e_s"] - a["e2e_s"]) / (b["items"] - a["items"])}
        for a, b in itertools.pairwise(rows)
    ]
    submit_growth = large["submit_peak_mib"] - small["submit_peak_mib"]
    worker_growth = large["worker_peak_mib"] - small["worker_peak_mib"]
    mode = "quick" if args.quick else "full"
    resets = all(r["peak_reset"] for r in rows)
    print(f"scale ({mode}): tiny-sentiment, worker -c {args.concurrency} x {args.threads} "
          f"torch threads, a fresh stack and worker per size; worker peaks "
          f"{'since the warm-up (VmHWM reset)' if resets else 'over the process lifetime'}")
    print(c.load_note(start_machine))
    print(c.table(
        ["items", "submit s", "submit items/s", "submit peak MiB", "e2e s", "e2e items/s",
         "worker MiB warm", "worker peak MiB", "parent peak MiB", "sqlite MiB"],
        [[r["items"], r["submit_s"], r["submit_items_per_s"], r["submit_peak_mib"], r["e2e_s"],
          r["e2e_items_per_s"], r["worker_base_mib"], r["worker_peak_mib"],
          r["worker_parent_peak_mib"],
          r["sqlite_mib"] if r["sqlite_mib"] is not None else "-"] for r in rows]))
    print(c.table(["marginal cost", "submit us/item", "end-to-end us/item"],
                  [[f"{m['from']:,} -> {m['to']:,}", m["submit_us"], m["e2e_us"]]
                   for m in marginal]))
    first, last = marginal[0], marginal[-1]
    submit_cost = last["submit_us"] / first["submit_us"]
    e2e_cost = last["e2e_us"] / first["e2e_us"]
    headline = (f"marginal cost per item, last step vs first (1.00 = linear): submit "
                f"{submit_cost:.2f}x, end-to-end {e2e_cost:.2f}x; peak RSS "
                f"{small['items']:,} -> {large['items']:,} items: submit "
                f"{submit_growth:+.0f} MiB, worker {worker_growth:+.0f} MiB")
    if not args.no_record:
        figures = {"sizes": rows, "marginal": marginal, "submit_cost_ratio": submit_cost,
                   "e2e_cost_ratio": e2e_cost,
                   "submit_peak_growth_mib": submit_growth,
                   "worker_peak_growth_mib": worker_growth}
        path = c.write_record("scale", mode=mode, args=vars(args), figures=figures,
                              headline=headline, machine_at_start=start_machine)
        print(f"recorded in {os.path.relpath(path)}")
    print(headline)


def _json(text: str) -> str:
    import json

    return json.dumps(text)


if __name__ == "__main__":
    main()
