"""Long-running processes: worker, beat, api, and `up` (the embedded stack in the foreground)."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click

from nightowl import migrate
from nightowl.auth import LOCAL_TENANT
from nightowl.cli.common import settings
from nightowl.config import Settings
from nightowl.enums import Queue
from nightowl.errors import NightowlError
from nightowl.models import new_id

if TYPE_CHECKING:
    from nightowl.embedded import Children

CELERY = [sys.executable, "-m", "celery", "-A", "tasks.app"]
# Reads `schedules` from SQL; a second beat is harmless (each firing is a unique row).
BEAT_SCHEDULER = "tasks.scheduler:DatabaseScheduler"


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
def worker(queues: str, device: str | None, gpus: int | None, concurrency: int | None,
           with_beat: bool, loglevel: str, hostname: str | None) -> None:
    """Run a Celery worker; picks a pool that is safe for torch."""
    s = settings()
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
    }
    if hostname:
        # Results name the worker by this, so two workers on one machine stay apart.
        env["NIGHTOWL_WORKER_NAME"] = hostname.replace("%h", os.uname().nodename)
    argv = [*CELERY, "worker", "-Q", ",".join(names), "-P", pool, "-c", str(procs),
            "--loglevel", loglevel, "-n", hostname or f"nightowl-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle", "-E"]
    if with_beat:
        argv += ["-B", "--scheduler", BEAT_SCHEDULER, "-s", str(s.home / "celerybeat-schedule")]
    s.home.mkdir(parents=True, exist_ok=True)
    os.execve(sys.executable, argv, {**os.environ, **env})


def _worker_per_gpu(queues: str, count: int | None, loglevel: str, hostname: str | None) -> None:
    from nightowl.cli import gpus
    from nightowl.embedded import Children, exit_on_sigterm, nightowl_argv

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


@click.command()
@click.option("--loglevel", default="info", show_default=True, help="Celery log level.")
def beat(loglevel: str) -> None:
    """Run Celery beat: the schedules in the database (re-read every few s)."""
    s = settings()
    s.home.mkdir(parents=True, exist_ok=True)
    # tasks.scheduler's app has no task modules: beat sends by name and never imports torch.
    argv = [sys.executable, "-m", "celery", "-A", "tasks.scheduler", "beat", "--scheduler",
            BEAT_SCHEDULER, "--loglevel", loglevel]
    os.execv(sys.executable, argv)


@click.command()
@click.option("--host", default=None, help="Bind address (default NIGHTOWL_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default NIGHTOWL_API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    s = settings()
    uvicorn.run("api.main:app", host=host or s.api_host, port=port or s.api_port,
                log_level="info")


@click.command()
def reap() -> None:
    """Re-send lost chunks, free dead leases and expire overdue jobs, once."""
    from nightowl import broker
    from nightowl.db import session_scope
    from nightowl.reaper import reap as run_reap

    s = settings()
    with session_scope(s) as session:
        report = run_reap(session, s, queue_depth=lambda q: broker.queue_depth(s, q))
    click.echo(str(report.__dict__))


@click.command()
@click.option("--port", type=int, default=None, help="API port (default NIGHTOWL_API_PORT).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--no-api", is_flag=True, help="Run without the HTTP API.")
def up(port: int | None, concurrency: int | None, no_api: bool) -> None:
    """Run broker, migrations, a worker and the API in the foreground; Ctrl-C stops it all."""
    from nightowl.embedded import Children, embedded_broker, exit_on_sigterm

    s = settings()
    exit_on_sigterm()
    children = Children()
    try:
        with embedded_broker(s) as sock:
            try:
                _run_stack(s, sock, children, port=port, concurrency=concurrency, no_api=no_api)
            finally:
                # Children first: a worker whose broker vanished would retry instead of exiting.
                children.stop()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except NightowlError as e:
        raise click.ClickException(str(e)) from e


def _run_stack(s: Settings, sock: str | None, children: Children, *, port: int | None,
               concurrency: int | None, no_api: bool) -> None:
    from nightowl.embedded import nightowl_argv

    migrate.upgrade(s)
    if sock:
        click.echo(f"broker: embedded Valkey on {sock}", err=True)
    click.echo(f"database: {s.sqlalchemy_url}", err=True)
    worker_args = ["worker", "-Q", "cpu,gpu,train", "--beat", "--loglevel", "warning"]
    if concurrency:
        worker_args += ["-c", str(concurrency)]
    children.start("worker", nightowl_argv(*worker_args))
    if not no_api:
        api_port = port or s.api_port
        children.start("api", nightowl_argv("api", "--port", str(api_port)))
        click.echo(f"api: http://{s.api_host}:{api_port}", err=True)
        click.echo(f"api key (tenant {LOCAL_TENANT}, shown once): {_local_key(s)}")
    click.echo("nightowl is up; Ctrl-C stops it", err=True)
    while (dead := children.poll_dead()) is None:
        time.sleep(0.5)
    raise click.ClickException(dead)


def _local_key(s: Settings) -> str:
    """A fresh key for the local tenant: keys are stored hashed, so an old one cannot be shown."""
    from nightowl.auth import create_key
    from nightowl.db import session_scope

    with session_scope(s) as session:
        return create_key(session, tenant_name=LOCAL_TENANT)[1]
