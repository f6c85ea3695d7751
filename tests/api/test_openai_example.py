"""examples/openai_batch.py, run as its docstring says (MODEL=tiny-generator), against a real
API process and worker: both requests complete."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from helpers import Worker
from nightowl.common.config import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai_batch.py"


def test_the_batch_example_completes_on_the_tiny_generator(
        models: Settings, api_server: str, api_key: str,
        start_worker: Callable[..., Worker], tmp_path: Path) -> None:
    worker = start_worker()
    env = {**os.environ, "OPENAI_BASE_URL": f"{api_server}/v1", "OPENAI_API_KEY": api_key,
           "MODEL": "tiny-generator"}
    proc = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + worker.output()[-3000:]
    statuses = [ln for ln in proc.stdout.splitlines() if ln.startswith("completed ")]
    assert statuses, proc.stdout
    assert "completed=2" in statuses[-1] and "failed=0" in statuses[-1], statuses[-1]
    assert "context_length_exceeded" not in proc.stdout
