"""bench/gpu.py waits for a GPU machine; its --quick mode must keep working on CPU meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KINDS = {"generate": "tokens/s", "translate": "sentences/s", "sentiment": "items/s"}


def test_gpu_bench_quick_runs_on_cpu_prints_ratios_and_writes_its_record(tmp_path: Path) -> None:
    results = REPO / "bench" / "results" / "gpu.jsonl"
    before = results.read_bytes() if results.exists() else None
    env = {**os.environ, "OUT": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--quick", "--device", "cpu"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]

    lines = proc.stdout.strip().splitlines()
    for kind, unit in KINDS.items():
        assert any(line.startswith(f"{kind} nightowl/raw {unit} = ") for line in lines), lines
    assert lines[-1].startswith("nightowl/raw on cpu: generate "), lines[-1]

    records = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["script"] == "gpu" and record["mode"] == "quick"
    assert record["headline"] == lines[-1]
    assert record["machine"]["cpus"] and record["versions"]["torch"]
    tasks = record["figures"]["tasks"]
    assert set(tasks) == set(KINDS)
    for kind, figures in tasks.items():
        assert figures["ratio"] > 0 and figures["raw_rate"] > 0, (kind, figures)
        assert figures["nightowl_count"] > 0 and figures["raw_count"] > 0, (kind, figures)
    # Every item came back through the runners on both sides (no error rows, none dropped).
    for kind in ("translate", "sentiment"):
        assert tasks[kind]["nightowl_count"] == tasks[kind]["raw_count"] == tasks[kind]["items"]
    # With OUT set, the repository's own results are left alone.
    assert (results.read_bytes() if results.exists() else None) == before
