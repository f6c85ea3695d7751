"""`nightowl demo` (what `make demo` runs) as a new user sees it: a job of each of the four
kinds completes, and the output is the demo's own: no Celery banner or root warning, and no
"no worker is consuming" while its own worker starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind


def test_demo_runs_every_kind_quietly(models: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    # A fresh home and broker; the models already built this session, so nothing retrains.
    env.update(NIGHTOWL_HOME=str(tmp_path / "home"), NIGHTOWL_MODEL_DIR=str(models.models_path),
               HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "nightowl", "demo", "--scale", "0.02"],
                          env=env, capture_output=True, text=True, timeout=420)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    summary = said[said.index("\nsummary"):]
    for kind in TaskKind:
        assert f"  {kind.value:<10} completed" in summary, summary
    assert "64 dimensions: [" in summary  # the embed job's rows, shown briefly
    for noise in ("SecurityWarning", "superuser", "celery@", "-------------- ", "[queues]",
                  "no worker is consuming", "Warm shutdown", "Traceback", "warning:"):
        assert noise not in said, f"{noise!r} in:\n{said}"

    # Every item the demo ran is counted for its worker, the last chunks' included.
    ran = sum(int(line.split("/")[1].split()[0]) for line in summary.splitlines()
              if " completed " in line and " ok, " in line)
    listed = subprocess.run([sys.executable, "-m", "nightowl", "workers", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["status"], r["items_done"]) for r in rows] == [("stopped", ran)], listed.stdout
