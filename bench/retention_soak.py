"""Retention soak on PostgreSQL: many cycles of submit, complete, expire and purge; the database
stops growing once the first results expire, however many cycles follow.

Each cycle submits --jobs jobs of --items items through the real job service (sentiment, on a
registered model that is never loaded: the chunks are claimed and completed by the core's own
calls, as a worker's would be, so the database is what is measured), then runs the maintenance
pass's purge. Results are kept --retention seconds after their job finishes; job_items is
partitioned by --window seconds, so whole windows are dropped once all their jobs expired.
Per cycle it prints the items submitted so far, job_items' rows, bytes and partitions, the
windows dropped, and the whole database's size; the last line compares the size at the end
with the size half way, while the items submitted doubled.

Needs a PostgreSQL server: --database-url names one (any database on it, e.g. .../postgres);
a temporary database is made there and dropped at the end. The broker is an embedded Valkey.

    .venv/bin/python bench/retention_soak.py --database-url postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--database-url", default=os.environ.get("NIGHTOWL_DATABASE_URL", ""),
                   help="a PostgreSQL server (SQLAlchemy URL); a temporary database is made on it")
    p.add_argument("--cycles", type=int, default=30)
    p.add_argument("--jobs", type=int, default=4, help="jobs submitted per cycle")
    p.add_argument("--items", type=int, default=1000, help="items per job")
    p.add_argument("--retention", type=int, default=12, help="seconds results are kept")
    p.add_argument("--window", type=int, default=4, help="seconds per job_items partition")
    p.add_argument("--cycle-seconds", type=float, default=3.0,
                   help="each cycle takes at least this long, so time moves on")
    args = p.parse_args()
    if args.quick:
        args.cycles, args.jobs, args.items = 16, 2, 500
    if not args.database_url.startswith("postgresql"):
        p.error("--database-url (or NIGHTOWL_DATABASE_URL) must name a PostgreSQL server")
    at_start = common.start(args)
    from nightowl.platform.db import scratch_database

    with (scratch_database(args.database_url, "nightowl_soak") as url,
          tempfile.TemporaryDirectory(prefix="nightowl-soak-") as home):
        rows = _soak(args, url, Path(home))
    _report(args, rows, at_start)


def _soak(args: Any, url: str, home: Path) -> list[dict[str, Any]]:
    os.environ.update({"NIGHTOWL_HOME": str(home), "NIGHTOWL_DATABASE_URL": url,
                       "NIGHTOWL_RETENTION": str(args.retention),
                       "NIGHTOWL_PARTITION_SECONDS": str(args.window),
                       "NIGHTOWL_REDIS_URL": "embedded", "HF_HUB_OFFLINE": "1"})
    from nightowl.common.config import get_settings
    from nightowl.platform.embedded import embedded_broker

    get_settings.cache_clear()
    with embedded_broker(get_settings()) as sock:
        os.environ["NIGHTOWL_REDIS_URL"] = f"redis+socket://{sock}"
        get_settings.cache_clear()
        return _cycles(args)


def _cycles(args: Any) -> list[dict[str, Any]]:
    from sqlalchemy import func, select, text

    from nightowl.common.config import get_settings
    from nightowl.common.enums import ItemStatus, TaskKind
    from nightowl.common.items import ItemOutcome
    from nightowl.fleet import retention
    from nightowl.jobs import chunks
    from nightowl.jobs.inputs import ParsedLine
    from nightowl.jobs.service import JobSpec, submit_job
    from nightowl.platform import broker, migrate, partitions
    from nightowl.platform.db import session_scope
    from nightowl.platform.orm import JobChunk, JobItem
    from nightowl.registry import versions as registry

    settings = get_settings()
    migrate.upgrade(settings)
    with session_scope(settings) as s:
        registry.register(s, name="soak", kind=TaskKind.SENTIMENT, source="/nowhere/soak")
    queue, owner = "soak", "w_soak/bench:1:x"
    submitted, rows = 0, []
    for cycle in range(1, args.cycles + 1):
        began = time.monotonic()
        for j in range(args.jobs):
            lines = (ParsedLine(n + 1, f"c{n}", {"text": f"cycle {cycle} job {j} review {n}"})
                     for n in range(args.items))
            spec = JobSpec(kind=TaskKind.SENTIMENT, model="soak", chunk_size=250, queue=queue)
            with session_scope(settings) as s:
                job_id = submit_job(session=s, settings=settings, spec=spec, lines=lines).id
            with session_scope(settings) as s:
                numbers = list(s.scalars(select(JobChunk.chunk_no)
                                         .where(JobChunk.job_id == job_id)))
            for no in numbers:
                with session_scope(settings) as s:
                    claimed = chunks.claim(s, job_id, no, owner=owner, lease_seconds=60)
                    assert claimed is not None
                    chunks.complete(s, claimed, [
                        ItemOutcome(i.id, ItemStatus.SUCCEEDED,
                                    output={"label": "positive", "score": 0.9},
                                    tokens_in=8, tokens_out=0) for i in claimed.items],
                        owner=owner, worker="soak", device="cpu", batches=1,
                        device_seconds=0.0)
            submitted += args.items
        broker.redis_client(settings).delete(queue)  # the doorbells nobody answers
        with session_scope(settings) as s:
            report = retention.purge(s, settings)
        with session_scope(settings) as s:
            live = int(s.scalar(select(func.count()).select_from(JobItem)) or 0)
            rows.append({
                "cycle": cycle, "submitted": submitted, "rows": live,
                "job_items_mib": partitions.table_bytes(s) / 2**20,
                "partitions": len(partitions.windows(s)),
                "dropped": len(report.partitions_dropped), "purged_jobs": report.jobs,
                "db_mib": int(s.scalar(text("SELECT pg_database_size(current_database())"))
                              or 0) / 2**20,
            })
        r = rows[-1]
        common.log(f"cycle {cycle}: {r['rows']:,} rows, {r['db_mib']:.1f} MiB, "
                   f"{r['dropped']} window(s) dropped")
        time.sleep(max(0.0, args.cycle_seconds - (time.monotonic() - began)))
    return rows


def _report(args: Any, rows: list[dict[str, Any]], at_start: dict[str, Any]) -> None:
    print(common.table(
        ["cycle", "items submitted", "job_items rows", "job_items MiB", "windows",
         "dropped", "jobs purged", "database MiB"],
        [[r["cycle"], r["submitted"], r["rows"], round(r["job_items_mib"], 2), r["partitions"],
          r["dropped"], r["purged_jobs"], round(r["db_mib"], 1)] for r in rows]))
    half, last = rows[len(rows) // 2 - 1], rows[-1]
    growth = last["db_mib"] / half["db_mib"]
    items_growth = last["submitted"] / half["submitted"]
    headline = (f"database size at cycle {last['cycle']} / at cycle {half['cycle']}: "
                f"{growth:.2f}x while items submitted grew {items_growth:.1f}x; job_items "
                f"{last['job_items_mib']:.1f} MiB vs {half['job_items_mib']:.1f} MiB "
                f"({sum(r['dropped'] for r in rows)} windows dropped)")
    print(headline)
    if not args.no_record:
        common.write_record("retention_soak", mode="quick" if args.quick else "full",
                            args=vars(args) | {"database_url": "(server)"},
                            figures={"cycles": rows, "db_growth_second_half": growth},
                            headline=headline, machine_at_start=at_start)


if __name__ == "__main__":
    main()
