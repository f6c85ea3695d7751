"""Long-running processes: worker, beat, api, and `up` (the embedded stack in the foreground)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import click

from nightowl.cli.backend import local_only
from nightowl.cli.common import settings
from nightowl.common.config import Settings, redact_url
from nightowl.common.enums import Queue
from nightowl.common.errors import NightowlError
from nightowl.platform import migrate
from nightowl.platform.auth import LOCAL_TENANT, OPERATOR_KEY_FILE
from nightowl.platform.orm import new_id

if TYPE_CHECKING:
    from nightowl.platform.embedded import Children

CELERY = [sys.executable, "-m", "celery", "-A", "nightowl_tasks.app"]
# Reads `schedules` from SQL; a second beat is harmless (each firing is a unique row).
BEAT_SCHEDULER = "nightowl_tasks.scheduler:DatabaseScheduler"
PROCESS = "runs on this host, on its own database and broker"


@local_only(PROCESS)
@click.command()
@click.option("--queues", "-Q", default="cpu", show_default=True,
              help="Comma-separated queues: cpu, gpu, train.")
@click.option("--device", default=None,
              help="cpu, cuda:N, cuda:all (one process per visible GPU) or auto "
                   "(default NIGHTOWL_DEVICE, else auto).")
@click.option("--gpus", type=click.IntRange(1, 64),
              help="One process on each of the first N visible GPUs (as --device cuda:all).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 256),
              help="Worker processes (CPU default: cores; GPU: always 1).")
@click.option("--beat", "with_beat", is_flag=True,
              help="Also run beat in-process (the reaper and the SQL schedules).")
@click.option("--loglevel", default="info", show_default=True, help="Celery log level.")
@click.option("--hostname", "-n", help="Worker node name (default: nightowl-PID@host).")
@click.option("--quiet", "-q", is_flag=True, help="No Celery banner; warnings and errors only.")
def worker(queues: str, device: str | None, gpus: int | None, concurrency: int | None,
           with_beat: bool, loglevel: str, hostname: str | None, quiet: bool) -> None:
    """Run a Celery worker; picks a pool that is safe for torch."""
    s = settings()
    require_broker(s)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in {x.value for x in Queue}]
    if unknown:
        raise click.BadParameter(f"unknown queue(s) {unknown}; use cpu, gpu, train",
                                 param_hint="--queues")
    device = device or s.device
    if gpus is not None or device.strip().lower() == "cuda:all":
        if with_beat or concurrency:
            raise click.UsageError("--beat and --concurrency do not apply to one worker per "
                                   "GPU; run beat apart (`nightowl beat`)")
        _worker_per_gpu(",".join(names), gpus, loglevel, hostname)
        return
    cores = os.cpu_count() or 1
    gpu = device.startswith("cuda")
    if gpu:
        # CUDA cannot be initialised in a forked child: one solo process per GPU.
        pool, procs = "solo", 1
    else:
        pool, procs = "prefork", concurrency or cores
    threads = s.torch_threads or max(1, cores // procs)
    env = {
        "NIGHTOWL_DEVICE": device,
        "NIGHTOWL_TORCH_THREADS": str(threads),
        # torch reads these when first imported in each child; 2 procs x 2 threads on 2 cores
        # ran 3x slower than 2 x 1.
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        # Loading bars and advisories from transformers would drown the worker's own log.
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        # Who this worker is in the `workers` table and in its lease owners: fresh each start.
        "NIGHTOWL_WORKER_ID": new_id("w")[:26],
        "NIGHTOWL_WORKER_QUEUES": ",".join(names),
        "NIGHTOWL_WORKER_CONCURRENCY": str(procs),
        # The lane's thread starts where tasks run: each prefork child, or the solo process.
        "NIGHTOWL_WORKER_POOL": pool,
    }
    if hostname:
        # Results name the worker by this, so two workers on one machine stay apart.
        env["NIGHTOWL_WORKER_NAME"] = hostname.replace("%h", os.uname().nodename)
    if quiet:
        # Celery warns about root on every start; `nightowl up` runs as whoever runs it.
        env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser privileges"
    argv = [*CELERY, *(["--quiet"] if quiet else []), "worker", "-Q", ",".join(names),
            "-P", pool, "-c", str(procs), "--loglevel", "warning" if quiet else loglevel,
            "-n", hostname or f"nightowl-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle", "-E"]
    if with_beat:
        argv += ["-B", "--scheduler", BEAT_SCHEDULER, "-s", str(s.home / "celerybeat-schedule")]
    s.home.mkdir(parents=True, exist_ok=True)
    os.execve(sys.executable, argv, {**os.environ, **env})


def _worker_per_gpu(queues: str, count: int | None, loglevel: str, hostname: str | None) -> None:
    from nightowl.cli import gpus
    from nightowl.platform.embedded import Children, exit_on_sigterm, nightowl_argv

    cards = gpus.visible_gpus(os.environ, gpus.smi_listing())
    try:
        plan = gpus.plan_children(cards, count=count, queues=queues, loglevel=loglevel,
                                  hostname=hostname, pid=os.getpid())
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    exit_on_sigterm()
    children = Children()
    try:
        for child in plan:
            click.echo(f"worker on GPU {child.card}: nightowl {' '.join(child.args)}", err=True)
            children.start(f"worker on GPU {child.card}", nightowl_argv(*child.args), child.env)
        # One card's worker dying takes the others down too: a supervisor (compose, systemd)
        # then restarts the set, instead of a host running short a card unnoticed.
        while (dead := children.poll_dead()) is None:
            time.sleep(0.5)
        raise click.ClickException(dead)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        children.stop()


@local_only(PROCESS)
@click.command()
@click.option("--loglevel", default="info", show_default=True, help="Celery log level.")
def beat(loglevel: str) -> None:
    """Run Celery beat: the schedules in the database (re-read every few s)."""
    s = settings()
    require_broker(s)
    s.home.mkdir(parents=True, exist_ok=True)
    # nightowl_tasks.scheduler's app has no task modules: beat sends by name and never imports
    # torch.
    argv = [sys.executable, "-m", "celery", "-A", "nightowl_tasks.scheduler", "beat", "--scheduler",
            BEAT_SCHEDULER, "--loglevel", loglevel]
    os.execv(sys.executable, argv)


@local_only(PROCESS)
@click.command()
@click.option("--host", default=None, help="Bind address (default NIGHTOWL_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default NIGHTOWL_API_PORT).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every HTTP request (off by default, as under `nightowl up`).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="uvicorn log level.")
def api(host: str | None, port: int | None, access_log: bool, log_level: str) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    s = settings()
    require_broker(s)
    uvicorn.run("nightowl_api.main:app", host=host or s.api_host, port=port or s.api_port,
                log_level=log_level, access_log=access_log)


def require_broker(s: Settings) -> None:
    """On the embedded default the broker lives only while `nightowl up` runs: without it,
    Celery would retry the missing socket forever, so say what to start instead."""
    from nightowl.common.config import EMBEDDED
    from nightowl.fleet.liveness import broker_down_message
    from nightowl.platform import broker

    if s.redis_url == EMBEDDED and not broker.ping(s):
        raise click.ClickException(broker_down_message(s))


@local_only(PROCESS)
@click.command()
def reap() -> None:
    """Re-send lost chunks, free dead leases and expire overdue jobs, once."""
    from nightowl.fleet.reaper import reap as run_reap
    from nightowl.platform import broker
    from nightowl.platform.db import session_scope

    s = settings()
    with session_scope(s) as session:
        report = run_reap(session, s, queue_depth=lambda q: broker.queue_depth(s, q))
    click.echo(str(report.__dict__))


@local_only(PROCESS)
@click.command()
@click.option("--port", type=int, default=None, help="API port (default NIGHTOWL_API_PORT).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--no-api", is_flag=True, help="Run without the HTTP API.")
@click.option("--access-log", is_flag=True, help="Log every HTTP request the API serves.")
def up(port: int | None, concurrency: int | None, no_api: bool, access_log: bool) -> None:
    """Run broker, migrations, a worker and the API in the foreground; Ctrl-C stops it all."""
    from nightowl.platform.embedded import Children, embedded_broker, exit_on_sigterm

    s = settings()
    exit_on_sigterm()
    children = Children()
    try:
        with embedded_broker(s) as sock:
            try:
                _run_stack(s, sock, children, port=port, concurrency=concurrency,
                           no_api=no_api, access_log=access_log)
            finally:
                # Children first: a worker whose broker vanished would retry instead of exiting.
                children.stop()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except NightowlError as e:
        raise click.ClickException(str(e)) from e


def _run_stack(s: Settings, sock: str | None, children: Children, *, port: int | None,
               concurrency: int | None, no_api: bool, access_log: bool) -> None:

    from nightowl.platform.embedded import nightowl_argv

    migrate.upgrade(s)
    procs = concurrency or os.cpu_count() or 1
    worker_args = ["worker", "-Q", "cpu,gpu,train", "--beat", "--quiet", "-c", str(procs)]
    children.start("worker", nightowl_argv(*worker_args), stdout=subprocess.DEVNULL)
    lines = [
        ("broker", f"embedded Valkey on {sock}" if sock else redact_url(s.redis_url)),
        ("database", redact_url(s.sqlalchemy_url)),
        ("worker", f"queues cpu, gpu, train; {procs} process{'es' if procs > 1 else ''}; "
                   "with beat (reaper, schedules)"),
    ]
    key = None
    if not no_api:
        api_port = port or s.api_port
        api_args = ["api", "--port", str(api_port), "--log-level", "warning"]
        children.start("api", nightowl_argv(*api_args, "--access-log" if access_log
                                            else "--no-access-log"))
        base = f"http://{s.api_host}:{api_port}"
        _wait_for_api(base, children)
        key = _local_key(s)
        lines += [("api", f"{base}/v1  (docs: {base}/docs)"),
                  ("dashboard", f"{base}/  (log in with the API key below)")]
    width = max(len(name) for name, _ in lines) + 1
    click.echo("nightowl is up; Ctrl-C stops it", err=True)
    for name, value in lines:
        click.echo(f"  {name + ':':<{width}} {value}", err=True)
    if key:
        click.echo(f"API key for tenant {LOCAL_TENANT!r} (the same every start, kept in "
                   f"{s.home / OPERATOR_KEY_FILE}; for --key, NIGHTOWL_API_KEY and the "
                   "dashboard's login):", err=True)
        click.echo(key)
    sys.stdout.flush()
    supervise(children)


# A child that dies within STEADY_SECONDS of starting counts as a failed start; after
# MAX_FAILED_STARTS of those in a row `up` stops rather than restart it forever.
STEADY_SECONDS = 60.0
MAX_FAILED_STARTS = 5
MAX_BACKOFF_SECONDS = 30.0


def supervise(children: Children) -> None:
    """Keep every child running: one that exits is started again after a back-off that doubles
    with each quick death (said on one line); one that keeps dying at start ends `up` with
    its name, how it ended, and a non-zero code."""
    failed: dict[str, int] = {}
    while True:
        dead = children.take_dead()
        if dead is None:
            time.sleep(0.5)
            continue
        name, code, ran = dead
        failed[name] = 0 if ran >= STEADY_SECONDS else failed.get(name, 0) + 1
        how = how_it_ended(code)
        if failed[name] >= MAX_FAILED_STARTS:
            raise click.ClickException(
                f"{name} {how} {failed[name]} times in a row within {STEADY_SECONDS:.0f} s of "
                f"starting; stopping everything (run `nightowl {name}` alone to see why)")
        delay = min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, failed[name] - 1))
        click.echo(f"{name} {how} after {ran:.0f} s; restarting it in {delay:.0f} s"
                   + (f" (quick death {failed[name]} of {MAX_FAILED_STARTS})"
                      if failed[name] else ""), err=True)
        time.sleep(delay)
        children.restart(name)


def how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}" + (" (it was stopped from outside)" if code == 0 else "")


def _wait_for_api(base: str, children: Children, timeout: float = 60.0) -> None:
    """Say "up" only once the API answers: a user who opens the URL at once gets a page."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (dead := children.poll_dead()) is not None:
            raise click.ClickException(dead)
        try:
            httpx.get(f"{base}/healthz", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise click.ClickException(f"the API did not answer at {base} within {timeout:.0f}s")


def _local_key(s: Settings) -> str:
    """The operator tenant's key, the same across starts (what the CLI submits shows under it)."""
    from nightowl.platform.auth import operator_key
    from nightowl.platform.db import session_scope

    with session_scope(s) as session:
        return operator_key(session, s.home)
