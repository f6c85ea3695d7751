"""A fine-tune's files on the artifact store, so any host can run or resume it.

`runs/<id>/train.jsonl` and `eval.jsonl` go up at submit; each checkpoint goes up as a
published directory (`runs/<id>/checkpoints/step-N/`, manifest last) when the loop writes it.
A worker that takes the run over on another host pulls the inputs and the newest complete
checkpoint into its own run folder, and the loop resumes from there as it would locally.
With a local store (the default) every host is this host, so nothing moves.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from nightowl.common.config import Settings
from nightowl.storage.artifacts import MANIFEST, fetch_dir, get_store, publish_dir

INPUTS = ("train.jsonl", "eval.jsonl")
_STEP = re.compile(r"^runs/[^/]+/checkpoints/step-(\d+)/" + re.escape(MANIFEST) + "$")


def _prefix(run_id: str) -> str:
    return f"runs/{run_id}"


def push_inputs(settings: Settings, run_id: str, folder: Path) -> None:
    store = get_store(settings)
    if not store.shared:
        return
    for name in INPUTS:
        store.put_file(f"{_prefix(run_id)}/{name}", folder / name)


def pull_inputs(settings: Settings, run_id: str, folder: Path) -> None:
    store = get_store(settings)
    if not store.shared:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name in INPUTS:
        target = folder / name
        if not target.is_file():
            tmp = target.with_name(name + ".part")
            store.get_file(f"{_prefix(run_id)}/{name}", tmp)
            tmp.replace(target)


def push_checkpoint(settings: Settings, run_id: str, checkpoint: Path) -> None:
    """Upload one checkpoint and drop the store's copies of ones pruned locally."""
    store = get_store(settings)
    if not store.shared:
        return
    base = f"{_prefix(run_id)}/checkpoints"
    publish_dir(store, f"{base}/{checkpoint.name}", checkpoint)
    kept = {p.name for p in checkpoint.parent.iterdir() if p.is_dir()}
    for step in stored_steps(settings, run_id):
        if f"step-{step}" not in kept:
            store.delete_prefix(f"{base}/step-{step}")


def stored_steps(settings: Settings, run_id: str) -> list[int]:
    """Steps of the complete checkpoints in the store (those whose manifest was written)."""
    keys = get_store(settings).list(f"{_prefix(run_id)}/checkpoints")
    return sorted(int(m.group(1)) for k in keys if (m := _STEP.match(k)))


def pull_latest_checkpoint(settings: Settings, run_id: str, folder: Path) -> int | None:
    """Bring the store's newest checkpoint here if it is newer than this host's; the step
    pulled, or None when this host's own checkpoints are as new (or there are none)."""
    store = get_store(settings)
    if not store.shared:
        return None
    steps = stored_steps(settings, run_id)
    if not steps:
        return None
    step = steps[-1]
    target = folder / "checkpoints" / f"step-{step}"
    local = sorted(int(p.name[5:]) for p in target.parent.glob("step-*")
                   if p.name[5:].isdigit()) if target.parent.is_dir() else []
    if local and local[-1] >= step:
        return None
    tmp = target.with_name(target.name + ".pull")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fetch_dir(store, f"{_prefix(run_id)}/checkpoints/step-{step}", tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return step
