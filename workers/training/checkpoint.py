"""Checkpoints under output_dir/checkpoints/step-N: weights as safetensors, the trainer's own
state (optimizer, schedule, RNG, step) in a weights-only torch file, the config as JSON."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "trainer_config.json"
RESULT_FILE = "result.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    step: int
    path: Path


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def list_checkpoints(output_dir: Path) -> list[Checkpoint]:
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        # The state file is written last; a directory without it is a save cut short.
        if match and (child / STATE_FILE).is_file():
            found.append(Checkpoint(int(match.group(1)), child))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(output_dir: Path) -> Checkpoint | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written directory into place, so readers never see half of one."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def fresh_tmp(path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_trainer_state(
    directory: Path,
    *,
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: dict[str, Any],
) -> None:
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
    }
    torch.save(state, directory / STATE_FILE)


def load_trainer_state(directory: Path) -> dict[str, Any]:
    # weights_only: checkpoints sit on a shared artifact store and must not run code on load.
    state: dict[str, Any] = torch.load(directory / STATE_FILE, weights_only=True)
    return state


def prune_checkpoints(output_dir: Path, keep: int) -> list[Path]:
    removed = []
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
        removed.append(old.path)
    return removed
