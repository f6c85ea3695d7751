"""One worker process per GPU: which cards a host shows, and what each child is told.

CUDA cannot be initialised in a forked child, so a GPU worker is one solo process per card.
`nightowl worker --device cuda:all` (or `--gpus N`) starts that many children, each seeing only
its own card through CUDA_VISIBLE_DEVICES (so inside it the card is cuda:0). torch stays out
of this module: the cards are read from CUDA_VISIBLE_DEVICES or `nvidia-smi`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

ALL = "cuda:all"


@dataclass(frozen=True)
class GpuChild:
    # The card as the parent names it (an index or a UUID from CUDA_VISIBLE_DEVICES).
    card: str
    env: dict[str, str]
    args: list[str]


def visible_gpus(env: Mapping[str, str], smi_listing: str | None) -> list[str]:
    """The cards this process may use, as CUDA names them.

    CUDA_VISIBLE_DEVICES wins when set (empty or "-1" hides every card, as CUDA reads it);
    else the indexes `nvidia-smi --query-gpu=index --format=csv,noheader` listed; else none."""
    if "CUDA_VISIBLE_DEVICES" in env:
        cards = [c.strip() for c in env["CUDA_VISIBLE_DEVICES"].split(",")]
        listed: list[str] = []
        for card in cards:
            # CUDA stops at the first invalid entry: "0,-1,1" shows card 0 alone.
            if not card or card.startswith("-"):
                break
            listed.append(card)
        return listed
    if smi_listing is None:
        return []
    return [line.strip() for line in smi_listing.splitlines() if line.strip().isdigit()]


def smi_listing() -> str | None:
    """`nvidia-smi`'s card indexes, or None where it is missing or fails (no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        proc = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def plan_children(cards: list[str], *, count: int | None, queues: str, loglevel: str,
                  hostname: str | None, pid: int) -> list[GpuChild]:
    """One child per card (the first `count` when given): pinned by CUDA_VISIBLE_DEVICES, told
    cuda:0, and named apart so results and the `workers` table tell the cards apart."""
    if not cards:
        raise ValueError(
            "no GPU is visible (CUDA_VISIBLE_DEVICES is empty or unset and nvidia-smi lists "
            "none); run `nightowl worker --device cpu`, or check the driver and "
            "CUDA_VISIBLE_DEVICES")
    if count is not None and count > len(cards):
        raise ValueError(
            f"--gpus {count} asked for more GPUs than the {len(cards)} visible "
            f"({', '.join(cards)}); ask for at most {len(cards)}")
    chosen = cards[:count] if count is not None else cards
    local, _, host = (hostname or f"nightowl-{pid}@%h").partition("@")
    children = []
    for n, card in enumerate(chosen):
        name = f"{local}-gpu{n}@{host or '%h'}"
        args = ["worker", "-Q", queues, "--device", "cuda:0", "--loglevel", loglevel,
                "-n", name]
        children.append(GpuChild(card, {"CUDA_VISIBLE_DEVICES": card}, args))
    return children
