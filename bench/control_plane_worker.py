"""A real Celery worker running nightowl's `run_chunk`, with the model taken out: bench only.

bench/control_plane.py starts this as `python bench/control_plane_worker.py QUEUE CONCURRENCY
TIMINGS_DIR`. Everything of the task path is nightowl's own (the claim under a lease, the
dispatch top-up, the result commit, finalize, the maintenance pass in the parent); only the
engine is replaced by one that answers every item at once, so what is timed is the control
plane. It lives in bench/ so that no user's worker can ever load it.

Each pool process appends `op <TAB> epoch <TAB> ms` lines to TIMINGS_DIR/<pid>.tsv for
`claim` (chunks.claim), `topup` (dispatch.top_up), `take` (a claim and the top-up right after
it: what a worker spends before it can run a chunk), `lock` (the wait for the dispatch lock,
inside a top-up) and `commit` (chunks.complete).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import _common  # noqa: F401  (makes nightowl_tasks importable from a source tree)

from nightowl.common.items import ItemOutcome, utcnow
from nightowl.jobs import chunks, dispatch
from nightowl_tasks import inference
from nightowl_tasks.app import app

T = TypeVar("T")
_out: Any = None


def _record(op: str, started: float, seconds: float) -> None:
    global _out
    if _out is None:
        _out = (Path(os.environ["CP_TIMINGS"]) / f"{os.getpid()}.tsv").open("a", buffering=1)
    _out.write(f"{op}\t{started:.6f}\t{seconds * 1000:.3f}\n")


# The last claim's (start, seconds): the top-up that follows a claim is part of taking a chunk.
_claim: tuple[float, float] | None = None


def _timed(op: str, fn: Callable[..., T]) -> Callable[..., T]:
    def wrapper(*args: Any, **kwargs: Any) -> T:
        global _claim
        wall, t0 = time.time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            took = time.perf_counter() - t0
            _record(op, wall, took)
            if op == "claim":
                _claim = (wall, took)
            elif op == "topup" and _claim is not None:
                _record("take", _claim[0], _claim[1] + took)
                _claim = None
            elif op == "commit":
                _claim = None
    return wrapper


def _no_model(runner: Any, items: Any, **_: Any) -> Iterator[list[ItemOutcome]]:
    now = utcnow()
    yield [ItemOutcome.succeeded(w.key, {"label": "POSITIVE", "score": 0.99}, tokens_in=8,
                                 tokens_out=0, started_at=now, finished_at=now) for w in items]


def _install() -> None:
    inference.get_runner = lambda **_: None  # type: ignore[assignment]
    inference.local_dir = lambda *a, **k: Path("/nonexistent")  # type: ignore[assignment]
    inference.run_batched = _no_model  # type: ignore[assignment]
    chunks.claim = _timed("claim", chunks.claim)  # type: ignore[assignment]
    chunks.complete = _timed("commit", chunks.complete)  # type: ignore[assignment]
    dispatch.top_up = _timed("topup", dispatch.top_up)  # type: ignore[assignment]
    dispatch._lock = _timed("lock", dispatch._lock)  # type: ignore[attr-defined]


def main() -> None:
    queue, concurrency, timings = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ["CP_TIMINGS"] = timings
    os.environ["NIGHTOWL_WORKER_QUEUES"] = queue
    os.environ["NIGHTOWL_WORKER_CONCURRENCY"] = concurrency
    _install()
    app.worker_main(["worker", "-Q", queue, "-P", "prefork", "-c", concurrency,
                     "--loglevel", "warning", "-n", f"cp-{os.getpid()}@%h",
                     "--without-gossip", "--without-mingle", "--prefetch-multiplier", "1"])


if __name__ == "__main__":
    main()
