"""Exporting 100,000 rows streams: the exporter's peak memory does not grow with the job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import ItemStatus, TaskKind
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, submit_job
from nightowl.platform.orm import JobItem, utcnow

PROBE = """
import resource, sys
from nightowl.cli import cli
try:
    cli(["results", "export", sys.argv[1], "-o", sys.argv[2]])
except SystemExit as e:
    assert not e.code, e.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _finished_job(session: Session, settings: Settings, n: int) -> str:
    lines = (ParsedLine(i + 1, f"id-{i}", {"text": f"review number {i} " + "x" * 80})
             for i in range(n))
    job = submit_job(session=session, settings=settings, lines=lines,
                     spec=JobSpec(kind=TaskKind.SENTIMENT, model="tiny-sentiment",
                                  chunk_size=10_000))
    session.execute(
        update(JobItem).where(JobItem.job_id == job.id).values(
            status=ItemStatus.SUCCEEDED, output={"label": "positive", "score": 0.9},
            error_code=None, finished_at=utcnow(), tokens_in=20)
    )
    session.commit()
    return job.id


def _peak_kib(job_id: str, out: Path) -> int:
    proc = subprocess.run([sys.executable, "-c", PROBE, job_id, str(out)], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout.strip().splitlines()[-1])


def test_export_memory_is_flat_from_10k_to_100k_rows(
    models: Settings, session: Session, tmp_path: Path
) -> None:
    small = _finished_job(session, models, 10_000)
    large = _finished_job(session, models, 100_000)
    small_kib = _peak_kib(small, tmp_path / "small.jsonl")
    large_kib = _peak_kib(large, tmp_path / "large.jsonl")
    assert sum(1 for _ in (tmp_path / "large.jsonl").open()) == 100_000
    print(f"export peak RSS: 10k rows {small_kib / 1024:.0f} MiB, "
          f"100k rows {large_kib / 1024:.0f} MiB ({large_kib / small_kib:.2f}x)")
    # Ten times the rows; anything proportional would add well over 100 MiB here.
    assert large_kib - small_kib < 30 * 1024
