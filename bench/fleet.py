"""Many machines: what the artifact store and the heartbeats cost and buy, in one run.

  load      a model version loaded the way a worker does, three ways: from a local folder
            (how every version loaded before the store: `direct`), from the store through an
            empty cache (`cold`: download, check every file's sha256, rename into place, load)
            and through a warm cache (`warm`: a few stat calls, then the same load)
  download  the S3 server's download rate on loopback (moto's server, a real HTTP S3 API on
            127.0.0.1), against a local disk copy of the same file
  recovery  a worker SIGKILLed while it holds chunks: seconds until another worker has taken
            every one of them, before (nothing but lease expiry: heartbeats switched off by a
            dead-after longer than the run) and after (heartbeats, NIGHTOWL_WORKER_DEAD_AFTER)

    .venv/bin/python bench/fleet.py            # MiniLM (90 MB), 256 MiB, lease 120 s vs 20 s
    .venv/bin/python bench/fleet.py --quick    # tiny model, 64 MiB, lease 30 s vs 5 s
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests" / "artifacts")]
import _common as c  # noqa: E402
from s3_server import CREDENTIALS, make_bucket, s3_server  # noqa: E402


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--model", choices=["minilm", "tiny"], help="minilm (tiny with --quick)")
    args = p.parse_args()
    machine = c.start(args)
    model = args.model or ("tiny" if args.quick else "minilm")
    os.environ.update(CREDENTIALS)
    scratch = Path(tempfile.mkdtemp(prefix="nightowl-fleet-"))
    figures: dict[str, Any] = {}
    try:
        with s3_server(scratch / "moto.log") as endpoint:
            make_bucket(endpoint, "bench")
            url = "s3://bench/nightowl"
            with c.stack() as st:
                figures["load"] = bench_load(st, model, url, endpoint, scratch)
                figures["download"] = bench_download(url, endpoint, scratch,
                                                     64 if args.quick else 256)
                figures["recovery"] = bench_recovery(st, quick=args.quick)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(figures, machine, args, model)


def _settings(home: Path, url: str, endpoint: str) -> Any:
    from nightowl.common.config import Settings

    return Settings(home=home, artifact_url=url, s3_endpoint_url=endpoint)


def bench_load(st: c.Stack, model: str, url: str, endpoint: str, scratch: Path
               ) -> dict[str, float]:
    import torch

    from nightowl.common.enums import TaskKind
    from nightowl.storage import cache as artifact_cache
    from nightowl.storage.artifacts import publish_model
    from nightowl_workers.loading import load_for_kind

    c.set_threads(1)
    source = c.minilm_source() if model == "minilm" else st.model_source("tiny-sentiment@prod")
    settings = _settings(scratch / "host", url, endpoint)
    uri, sha = publish_model(settings, source)
    local_settings = settings.model_copy(update={"model_roots": [source.parent]})

    def load(path: str) -> None:
        load_for_kind(TaskKind.SENTIMENT, path, revision=None, device=torch.device("cpu"),
                      settings=local_settings)

    load(str(source))  # imports and first-touch costs, on no side's clock
    best: dict[str, float] = {"direct": 1e9, "cold": 1e9, "warm": 1e9}
    for _ in range(3):
        t = time.perf_counter()
        load(str(source))
        best["direct"] = min(best["direct"], time.perf_counter() - t)
        shutil.rmtree(settings.cache_path, ignore_errors=True)
        t = time.perf_counter()
        load(artifact_cache.local_dir(uri, sha, settings))
        best["cold"] = min(best["cold"], time.perf_counter() - t)
        t = time.perf_counter()
        load(artifact_cache.local_dir(uri, sha, settings))
        best["warm"] = min(best["warm"], time.perf_counter() - t)
    size = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
    c.log(f"load {model} ({size / 2**20:.0f} MiB): {best}")
    return {**{f"{k}_s": round(v, 3) for k, v in best.items()}, "model_mib": size / 2**20}


def bench_download(url: str, endpoint: str, scratch: Path, mib: int) -> dict[str, float]:
    from nightowl.storage.artifacts import get_store

    store = get_store(_settings(scratch / "dl", url, endpoint))
    blob = scratch / "blob"
    with blob.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(1 << 20))
    store.put_file("bench/blob", blob)
    t = time.perf_counter()
    store.get_file("bench/blob", scratch / "blob.s3")
    s3_s = time.perf_counter() - t
    t = time.perf_counter()
    shutil.copyfile(blob, scratch / "blob.copy")
    disk_s = time.perf_counter() - t
    return {"mib": mib, "s3_mib_s": round(mib / s3_s, 1), "disk_mib_s": round(mib / disk_s, 1)}


def bench_recovery(st: c.Stack, *, quick: bool) -> dict[str, Any]:
    lease, dead_after = (30, 5) if quick else (120, 20)
    before = _recovery(st, {"NIGHTOWL_LEASE_SECONDS": str(lease),
                            "NIGHTOWL_WORKER_DEAD_AFTER": "100000"})
    after = _recovery(st, {"NIGHTOWL_LEASE_SECONDS": str(lease),
                           "NIGHTOWL_WORKER_DEAD_AFTER": str(dead_after)})
    return {"lease_s": lease, "dead_after_s": dead_after, "before_s": before, "after_s": after}


def _recovery(st: c.Stack, env: dict[str, str]) -> float:
    """Seconds from a SIGKILL to the killed worker's chunk being held by the other worker.

    Two workers, a job of two big chunks: each takes one, one is killed, and the other,
    idle once its own chunk is done, takes the dead one's as soon as it is released: the
    figure is the release (lease expiry, or the heartbeats) plus one claim, no queue wait."""
    from sqlalchemy import func, select

    from nightowl.cli import demo_data
    from nightowl.common.enums import ChunkStatus
    from nightowl.platform.db import session_factory
    from nightowl.platform.orm import JobChunk, Worker

    env = {**env, "NIGHTOWL_REAP_INTERVAL_SECONDS": "2"}
    factory = session_factory()
    with factory() as s:
        before = s.scalar(select(func.count()).select_from(Worker)) or 0
    pair = [st.start_worker(concurrency=1, threads=1, extra_env=env) for _ in range(2)]
    _until(lambda s: (s.scalar(select(func.count()).select_from(Worker)) or 0) >= before + 2,
           factory, pair[0])
    texts = [r["text"] for r in demo_data.reviews(16_000, seed=5)]
    path = c.write_items(Path(tempfile.mkdtemp()) / "items.jsonl", texts)
    job = st.submit("sentiment", path, "tiny-sentiment@prod", "--chunk-size", "8000").job_id
    running = select(JobChunk.id, JobChunk.lease_owner).where(
        JobChunk.job_id == job, JobChunk.status == ChunkStatus.RUNNING)
    _until(lambda s: len(s.execute(running).all()) == 2, factory, pair[0])
    with factory() as s:
        chunk_id, owner = s.execute(running).first()  # type: ignore[misc]
    pid = int(owner.rsplit(":", 2)[-2])
    victim = next(w for w in pair if pid in w.pids())
    os.killpg(victim.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    retaken = select(JobChunk.id).where(JobChunk.id == chunk_id, JobChunk.lease_owner != owner,
                                        JobChunk.lease_owner.is_not(None))
    _until(lambda s: s.execute(retaken).first() is not None, factory, pair[0], timeout=900)
    took = time.monotonic() - killed
    c.log(f"recovery with {env}: {took:.1f} s")
    with contextlib.suppress(RuntimeError):  # it may have finished meanwhile
        st.run_cli("jobs", "cancel", job)
    st.stop_workers()
    return round(took, 1)


def _until(check: Any, factory: Any, worker: c.Worker, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with factory() as s:
            if check(s):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out; a worker's log:\n{worker.output()}")
        time.sleep(0.2)


def report(figures: dict[str, Any], machine: dict[str, Any], args: Any, model: str) -> None:
    load, dl, rec = figures["load"], figures["download"], figures["recovery"]
    print(c.table(["measure", "before", "after", "ratio"], [
        [f"model load {model}, s (local dir vs warm cache)", load["direct_s"], load["warm_s"],
         f"{load['warm_s'] / load['direct_s']:.2f}x"],
        ["model load, s (cold cache vs warm cache)", load["cold_s"], load["warm_s"],
         f"{load['cold_s'] / load['warm_s']:.2f}x"],
        ["read MiB/s (local disk copy vs S3 loopback)", dl["disk_mib_s"], dl["s3_mib_s"],
         f"{dl['s3_mib_s'] / dl['disk_mib_s']:.2f}x"],
        [f"recovery after SIGKILL, s (lease {rec['lease_s']} s vs dead-after "
         f"{rec['dead_after_s']} s)", rec["before_s"], rec["after_s"],
         f"{rec['before_s'] / rec['after_s']:.1f}x faster"],
    ]))
    print(c.load_note(machine))
    headline = (f"warm cache load {load['warm_s'] / load['direct_s']:.2f}x of a local load, "
                f"cold {load['cold_s'] / load['warm_s']:.2f}x of warm; S3 loopback "
                f"{dl['s3_mib_s']:.0f} MiB/s; recovery {rec['before_s']:.0f} s -> "
                f"{rec['after_s']:.0f} s")
    print(headline)
    if not args.no_record:
        path = c.write_record("fleet", mode="quick" if args.quick else "full",
                              args=vars(args), figures=figures, headline=headline,
                              machine_at_start=machine)
        print(f"recorded in {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
