"""One model cache per worker process, keyed by model version: loaded lazily, evicted LRU.

Nothing loads at import: Celery kills `worker_process_init` handlers after 4 s, and torch
used in the parent before the pool forks hangs the children, so the first task that needs a
model loads it, in the child.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl_workers.device import configure_threads
from nightowl_workers.loading import load_for_kind
from nightowl_workers.runners import Runner, make_runner


@dataclass
class _Entry:
    kind: TaskKind
    device: torch.device
    runner: Runner


_cache: OrderedDict[str, _Entry] = OrderedDict()
# Loads are serialised: two threads asking for the same version must not load it twice, and
# loading two models at once is how a worker runs out of memory.
_lock = threading.Lock()
_threads_configured = False


def get_runner(
    *,
    kind: TaskKind,
    version_key: str,
    source: str,
    revision: str | None,
    settings: Settings,
    device: torch.device,
) -> Runner:
    """The runner for this model version, loading it (and evicting the least recent) if needed."""
    global _threads_configured
    with _lock:
        if not _threads_configured:
            # First model use is the first torch work in this (forked) process: the moment to
            # pin its threads, before any op has started torch's pool.
            configure_threads(settings.torch_threads)
            _threads_configured = True
        entry = _cache.get(version_key)
        if entry is not None and entry.kind is kind and entry.device == device:
            _cache.move_to_end(version_key)
            return entry.runner
        if entry is not None:
            # Same key, different kind or device: the caller's view wins, reload.
            _evict(version_key)
        while len(_cache) >= max(1, settings.model_cache_size):
            _evict(next(iter(_cache)))
        model, tokenizer = load_for_kind(
            kind, source, revision=revision, device=device, settings=settings
        )
        runner = make_runner(kind, model, tokenizer, device)
        _cache[version_key] = _Entry(kind, device, runner)
        return runner


def cached_keys() -> list[str]:
    """Version keys in the cache, least recently used first."""
    with _lock:
        return list(_cache)


def clear_cache() -> None:
    """Drop every cached model (tests, or a worker told to free its memory)."""
    with _lock:
        for key in list(_cache):
            _evict(key)


def _evict(version_key: str) -> None:
    entry = _cache.pop(version_key)
    on_cuda = entry.device.type == "cuda"
    # Drop our references before collecting, or the weights stay reachable through `entry`.
    del entry
    gc.collect()
    if on_cuda:
        # Return the freed blocks to the driver so the next model (or process) can use them.
        torch.cuda.empty_cache()
