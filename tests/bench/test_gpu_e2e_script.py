"""bench/gpu_e2e.py is meant for a GPU machine; its --cpu --quick mode keeps it honest here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KINDS = ("generate", "translate", "sentiment")


def test_gpu_e2e_quick_runs_the_real_stack_on_cpu_and_records_every_row(tmp_path: Path) -> None:
    results = REPO / "bench" / "results" / "gpu_e2e.jsonl"
    before = results.read_bytes() if results.exists() else None
    env = {**os.environ, "OUT": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_e2e.py"), "--cpu", "--quick"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]

    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("gpu_e2e on cpu: nightowl/raw generate "), lines[-1]
    for row in ("generate items/s", "translate items/s", "sentiment items/s",
                "fine-tune tokens/s (LoRA)", "forced OOM (batch halves)",
                "generation tokens/s, skewed"):
        assert any(line.startswith(row) for line in lines), (row, lines)
    # The OOM row is skipped on the CPU, and says so.
    assert "skipped on the CPU" in proc.stderr

    (record,) = [json.loads(line) for line in (tmp_path / "gpu_e2e.jsonl").read_text()
                 .splitlines()]
    assert record["script"] == "gpu_e2e" and record["mode"] == "quick"
    assert record["headline"] == lines[-1]
    figures = record["figures"]
    for kind in KINDS:
        task = figures["tasks"][kind]
        # Every item came back through submit -> worker -> SQL, none failed.
        assert task["succeeded"] == task["items"] > 0, (kind, task)
        assert task["ratio"] > 0 and task["raw_items_per_s"] > 0, (kind, task)
    ft = figures["finetune"]
    assert ft["status"] == "succeeded" and ft["checkpoints"] >= 1, ft
    assert {"train/loss", "lr", "grad_norm", "train/tokens_per_s"} <= set(ft["metric_keys"])
    assert ft["tokens_per_s"] > 0
    assert "skipped" in figures["oom"]
    skew = figures["continuous"]
    # Greedy decoding gives the same answers whichever way generation is batched.
    assert skew["identical"] == skew["prompts"] > 0
    assert skew["static"]["tokens"] == skew["continuous"]["tokens"] > 0
    # With OUT set, the repository's own results are left alone.
    assert (results.read_bytes() if results.exists() else None) == before
