"""Load: 20 jobs submitted at once by 4 HTTP clients (4 tenants) to a real `nightowl api`
process while workers run. Every job must complete with its counts matching (each item's
result exactly once, read back over HTTP), and no SQL deadlock may occur: on PostgreSQL the
server's own deadlock counter (pg_stat_database) and the logs are checked; on SQLite the logs
("database is locked").

Prints submit latency (upload + create, per job) p50 / p95 / max and appends a JSON record to
bench/results/load.jsonl. Exits non-zero if a job did not complete, a count is off, or a
deadlock happened.

    .venv/bin/python bench/load.py --quick        # 20 jobs x 50 items, under a minute
    .venv/bin/python bench/load.py                # 20 jobs x 1,000 items
    NIGHTOWL_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/DB \\
    NIGHTOWL_REDIS_URL=redis://127.0.0.1:6379/1 .venv/bin/python bench/load.py --quick
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

FINAL = ("completed", "failed", "cancelled", "expired")
# What a log line says when two transactions blocked each other.
LOCK_ERRORS = ("deadlock detected", "database is locked")


@dataclass
class Submission:
    client: int
    path: Path
    items: int
    job_id: str = ""
    upload_s: float = 0.0
    create_s: float = 0.0
    status: str = ""
    succeeded: int = 0
    result_rows: int = 0
    distinct_ids: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def submit_s(self) -> float:
        return self.upload_s + self.create_s


def start_api(st: c.Stack) -> tuple[subprocess.Popen[bytes], str, Path]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = st.home / "api.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nightowl", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=st.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return proc, url, log_path
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"the API did not start:\n{log_path.read_text()[-3000:]}") \
                    from None
            time.sleep(0.1)


def pg_deadlocks() -> int | None:
    """PostgreSQL's count of deadlocks in this database; None on SQLite."""
    from sqlalchemy import text

    from nightowl.platform.db import get_engine

    engine = get_engine()
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(conn.execute(text(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )).scalar_one())


def submit_one(http: Any, sub: Submission, kind: str, model: str, chunk_size: int) -> None:
    t0 = time.perf_counter()
    with sub.path.open("rb") as fh:
        uploaded = http.post("/v1/files", data={"purpose": "jobs"},
                             files={"file": (sub.path.name, fh, "application/jsonl")})
    sub.upload_s = time.perf_counter() - t0
    if uploaded.status_code != 200:
        sub.problems.append(f"upload: {uploaded.status_code} {uploaded.text[:300]}")
        return
    t1 = time.perf_counter()
    created = http.post("/v1/jobs", json={"kind": kind, "model": model, "chunk_size": chunk_size,
                                          "file_id": uploaded.json()["id"]})
    sub.create_s = time.perf_counter() - t1
    if created.status_code != 201:
        sub.problems.append(f"create: {created.status_code} {created.text[:300]}")
        return
    sub.job_id = created.json()["id"]


def wait_and_check(http: Any, sub: Submission, timeout: float) -> None:
    """Poll until the job is final, then read its results back and count them."""
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{sub.job_id}").json()
        if job["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            sub.problems.append(f"still {job['status']} after {timeout:.0f}s")
            return
        time.sleep(0.25)
    sub.status, sub.succeeded = job["status"], job["succeeded"]
    ids = []
    with http.stream("GET", f"/v1/jobs/{sub.job_id}/results", params={"format": "jsonl"}) as r:
        for line in r.iter_lines():
            if line.strip():
                row = json.loads(line)
                ids.append(row["custom_id"])
                if row["status"] != "succeeded":
                    sub.problems.append(f"{row['custom_id']}: {row['status']}")
    sub.result_rows, sub.distinct_ids = len(ids), len(set(ids))
    if sub.status != "completed":
        sub.problems.append(f"ended {sub.status}")
    if not sub.succeeded == sub.result_rows == sub.distinct_ids == sub.items:
        sub.problems.append(f"{sub.items} items, {sub.succeeded} succeeded, {sub.result_rows} "
                            f"result rows, {sub.distinct_ids} distinct custom_ids")


def log_errors(paths: list[Path]) -> dict[str, int]:
    counts = dict.fromkeys(LOCK_ERRORS, 0)
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        for needle in LOCK_ERRORS:
            counts[needle] += text.count(needle)
    return counts


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--jobs", type=int, default=20, help="jobs to submit (default 20)")
    p.add_argument("--clients", type=int, default=4, help="HTTP clients, one tenant each")
    p.add_argument("--items", type=int, help="items per job (1,000; quick 50)")
    p.add_argument("--chunk-size", type=int, help="items per chunk (200; quick 25)")
    p.add_argument("--workers", type=int, default=1, help="worker processes to start")
    p.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (-c)")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the jobs")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where load.jsonl goes (default bench/results)")
    args = p.parse_args()
    machine = c.start(args)
    items = args.items or (50 if args.quick else 1_000)
    chunk_size = args.chunk_size or (25 if args.quick else 200)
    kind, model = "sentiment", "tiny-sentiment@prod"

    with c.stack() as st:
        import httpx

        from nightowl.cli import demo_data
        from nightowl.platform.auth import create_key
        from nightowl.platform.db import get_engine, session_scope

        backend = get_engine().dialect.name
        c.log(f"database: {backend}; starting the API and {args.workers} worker(s)")
        api, url, api_log = start_api(st)
        try:
            workers = [st.start_worker(concurrency=args.concurrency, threads=1)
                       for _ in range(args.workers)]
            with session_scope() as s:
                keys = [create_key(s, tenant_name=f"load-{i}")[1] for i in range(args.clients)]
            clients = [httpx.Client(base_url=url, timeout=120,
                                    headers={"Authorization": f"Bearer {k}"}) for k in keys]
            subs = []
            for n in range(args.jobs):
                path = st.home / f"job-{n}.jsonl"
                with path.open("w") as fh:
                    for row in demo_data.reviews(items, seed=n):
                        fh.write(json.dumps(row) + "\n")
                subs.append(Submission(client=n % args.clients, path=path, items=items))
            deadlocks_before = pg_deadlocks()

            c.log(f"submitting {args.jobs} jobs of {items} items at once from "
                  f"{args.clients} clients")
            started = time.perf_counter()
            go = threading.Barrier(args.jobs)

            def submit(sub: Submission) -> None:
                go.wait()  # every submission starts together
                submit_one(clients[sub.client], sub, kind, model, chunk_size)

            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(submit, subs))
            submitted = time.perf_counter() - started
            c.log(f"all submitted in {submitted:.1f}s; waiting for the workers")
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(lambda s: wait_and_check(clients[s.client], s, args.timeout),
                              [s for s in subs if s.job_id]))
            wall = time.perf_counter() - started
            # Tenancy under load: another tenant's key sees none of these jobs.
            if args.clients > 1 and subs[0].job_id:
                other = clients[(subs[0].client + 1) % args.clients]
                if other.get(f"/v1/jobs/{subs[0].job_id}").status_code != 404:
                    subs[0].problems.append("another tenant could read this job")
            time.sleep(1.0)  # PostgreSQL reports a backend's counters when it goes idle
            deadlocks_after = pg_deadlocks()
        finally:
            api.terminate()
            api.wait(20)
        logs = log_errors([api_log, *(w.log_path for w in workers)])

    submit_ms = [s.submit_s * 1000 for s in subs if s.job_id]
    upload_ms = [s.upload_s * 1000 for s in subs if s.job_id]
    create_ms = [s.create_s * 1000 for s in subs if s.job_id]
    completed = sum(1 for s in subs if s.status == "completed" and not s.problems)
    deadlocks = None if deadlocks_before is None or deadlocks_after is None else (
        deadlocks_after - deadlocks_before)
    lock_lines = sum(logs.values())
    problems = [f"job {s.job_id or '(not created)'} (client {s.client}): {p}"
                for s in subs for p in s.problems]
    total_items = items * args.jobs
    figures = {
        "backend": backend, "jobs": args.jobs, "clients": args.clients,
        "items_per_job": items, "chunk_size": chunk_size, "workers": args.workers,
        "concurrency": args.concurrency, "completed": completed,
        "submit_ms": {"p50": c.percentile(submit_ms, 0.5), "p95": c.percentile(submit_ms, 0.95),
                      "max": max(submit_ms, default=0.0)},
        "upload_ms_p50": c.percentile(upload_ms, 0.5),
        "create_ms_p50": c.percentile(create_ms, 0.5),
        "all_submitted_s": submitted, "wall_s": wall, "items_per_s": total_items / wall,
        "pg_deadlocks": deadlocks, "lock_errors_in_logs": logs, "problems": problems[:50],
    }
    print(f"load ({'quick' if args.quick else 'full'}): {args.jobs} jobs x {items} items from "
          f"{args.clients} HTTP clients, {args.workers} worker(s) x -c {args.concurrency}, "
          f"{backend}")
    print(c.load_note(machine))
    print(c.table(["", "p50 ms", "p95 ms", "max ms"], [
        ["submit (upload + create)", figures["submit_ms"]["p50"], figures["submit_ms"]["p95"],
         figures["submit_ms"]["max"]],
        ["  upload", c.percentile(upload_ms, 0.5), c.percentile(upload_ms, 0.95),
         max(upload_ms, default=0.0)],
        ["  create", c.percentile(create_ms, 0.5), c.percentile(create_ms, 0.95),
         max(create_ms, default=0.0)]]))
    print(f"all {args.jobs} submitted in {submitted:.1f}s; done in {wall:.1f}s "
          f"({total_items / wall:,.0f} items/s end to end)")
    print(f"deadlocks: {'n/a (SQLite)' if deadlocks is None else deadlocks} in PostgreSQL's "
          f"counter; lock errors in the logs: {lock_lines}")
    for line in problems[:20]:
        print(f"PROBLEM {line}")
    ok = completed == args.jobs and not problems and not deadlocks and not lock_lines
    headline = (f"load: {completed}/{args.jobs} jobs completed with counts matching; submit "
                f"p50 {figures['submit_ms']['p50']:.0f} ms, p95 "
                f"{figures['submit_ms']['p95']:.0f} ms; deadlocks "
                f"{'n/a' if deadlocks is None else deadlocks}, lock errors {lock_lines}")
    print(headline)
    if not args.no_record:
        path = c.write_record("load", mode="quick" if args.quick else "full",
                              args=vars(args), figures=figures, headline=headline,
                              results_dir=args.results_dir, machine_at_start=machine)
        c.log(f"record appended to {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
