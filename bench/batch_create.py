"""How long POST /v1/batches keeps its caller waiting: checked inline vs in the background.

One isolated stack (temp home, SQLite or NIGHTOWL_DATABASE_URL, embedded Valkey or
NIGHTOWL_REDIS_URL, the tiny models). One JSONL input file of chat requests for
`tiny-generator` (about 300 bytes a line), stored as an uploaded file; then, in this process,
the same call the API route makes (nightowl.openai.validation.create_batch):

  inline create s      the file checked and its items stored before create returns (the old
                       path; today's path for files up to batch_inline_check_bytes)
  background create s  create returns "validating" at once; the row and a message only
  background check s   the worker's part (nightowl.openai.validation.validate), run here after it,
                       so the total work can be compared with the inline path

The headline is inline create / background create. Sizes: 200 MB (full), 20 MB (--quick).

    .venv/bin/python bench/batch_create.py --quick
    .venv/bin/python bench/batch_create.py            # 200 MB
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def jsonl(megabytes: int) -> bytes:
    out = io.BytesIO()
    n = 0
    while out.tell() < megabytes * 1024 * 1024:
        n += 1
        body = {"model": "tiny-generator", "max_tokens": 8, "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"Request {n}: say something about the number {n} "
                                        "and the owl that counts at night."}]}
        out.write(json.dumps({"custom_id": f"r{n}", "method": "POST",
                              "url": "/v1/chat/completions", "body": body}).encode() + b"\n")
    return out.getvalue()


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--megabytes", type=int, help="input size (default 200, quick 20)")
    args = p.parse_args()
    start_machine = c.start(args)
    size = args.megabytes or (20 if args.quick else 200)
    with c.stack():
        from sqlalchemy import select

        from nightowl.common.config import get_settings
        from nightowl.common.enums import JobStatus
        from nightowl.jobs.service import cancel_job
        from nightowl.openai import validation as batch_async
        from nightowl.platform.db import session_scope
        from nightowl.platform.orm import Job
        from nightowl.storage.files import create_file

        settings = get_settings()
        data = jsonl(size)
        with session_scope(settings) as s:
            file_id = create_file(s, settings, stream=io.BytesIO(data), filename="in.jsonl",
                                  purpose="batch").id
        lines = data.count(b"\n")
        c.log(f"input: {len(data) / 2**20:.0f} MiB, {lines:,} requests")
        inline = settings.model_copy(update={"batch_inline_check_bytes": len(data)})
        # gpu queue: no worker reads it here, so nothing runs while the other side is timed.
        times: dict[str, float] = {}
        job_id = ""
        for name, st in (("inline create s", inline), ("background create s", settings)):
            with session_scope(settings) as s:
                t0 = time.perf_counter()
                job = batch_async.create_batch(
                    session=s, settings=st, tenant_id=None, input_file_id=file_id,
                    endpoint="/v1/chat/completions", completion_window="24h",
                    metadata={"nightowl_queue": "gpu"})
                times[name] = time.perf_counter() - t0
                job_id, status = job.id, job.status.value
            c.log(f"{name}: {times[name]:.3f} ({status})")
        with session_scope(settings) as s:
            t0 = time.perf_counter()
            status = batch_async.validate(s, settings, job_id)
            times["background check s"] = time.perf_counter() - t0
        c.log(f"background check s: {times['background check s']:.3f} ({status})")
        ratio = times["inline create s"] / times["background create s"]
        print(c.table(["MiB", *times, "inline/background create"],
                      [[round(len(data) / 2**20), *(round(v, 3) for v in times.values()),
                        f"{ratio:.0f}x"]]))
        headline = (f"{size} MB batch create: inline {times['inline create s']:.2f} s, "
                    f"background {times['background create s']:.3f} s ({ratio:.0f}x sooner)")
        print(headline)
        if not args.no_record:
            c.write_record("batch_create", mode="quick" if args.quick else "full",
                           args=vars(args), figures={**times, "ratio": ratio},
                           headline=headline, machine_at_start=start_machine)
        with session_scope(settings) as s:  # on a shared database, leave nothing queued
            for batch_id in s.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED)):
                cancel_job(s, batch_id)


if __name__ == "__main__":
    main()
