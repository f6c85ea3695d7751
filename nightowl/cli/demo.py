"""`nightowl demo`: the whole path on the embedded stack, a job of each kind, then a summary."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import click

from nightowl.cli import demo_data
from nightowl.cli.backend import jsonl_bytes, local_only
from nightowl.cli.common import settings
from nightowl.common.enums import TaskKind
from nightowl.common.errors import NightowlError
from nightowl.jobs.inputs import read_jsonl
from nightowl.jobs.results import iter_rows
from nightowl.jobs.service import JobSpec, submit_job
from nightowl.platform import migrate
from nightowl.platform.auth import operator_tenant_id
from nightowl.platform.db import session_scope

PLAN: list[tuple[TaskKind, str, int, dict[str, Any]]] = [
    (TaskKind.SENTIMENT, "tiny-sentiment@prod", 3000, {}),
    (TaskKind.TRANSLATE, "tiny-translator@prod", 1000, {"max_new_tokens": 24}),
    (TaskKind.GENERATE, "tiny-generator@prod", 300, {"max_new_tokens": 24, "seed": 0}),
    (TaskKind.EMBED, "tiny-embedder@prod", 1000, {}),
]
SOURCES = {
    TaskKind.SENTIMENT: demo_data.reviews,
    TaskKind.TRANSLATE: demo_data.sentences,
    TaskKind.GENERATE: demo_data.prompts,
    TaskKind.EMBED: demo_data.reviews,
}
WORKER_START_S = 120.0


@local_only("runs the embedded stack on this host")
@click.command()
@click.option("--scale", type=click.FloatRange(0.01, 100), default=1.0, show_default=True,
              help="Multiply the number of items of each job.")
def demo(scale: float) -> None:
    """Bootstrap models, run a sentiment, translation, generation and embedding job, print a
    summary."""
    from nightowl.cli.models import bootstrap
    from nightowl.cli.watch import watch_job
    from nightowl.platform.embedded import Children, embedded_broker, exit_on_sigterm, nightowl_argv

    s = settings()
    exit_on_sigterm()
    children = Children()
    try:
        with embedded_broker(s):
            try:
                migrate.upgrade(s)
                click.get_current_context().invoke(bootstrap)
                children.start("worker", nightowl_argv("worker", "-Q", "cpu", "--quiet"),
                               stdout=subprocess.DEVNULL)
                _wait_for_worker(s, children)
                summaries = []
                for kind, model, n, params in PLAN:
                    count = max(1, int(n * scale))
                    with session_scope(s) as session:
                        job = submit_job(
                            session=session, settings=s,
                            spec=JobSpec(kind=kind, model=model, params=params,
                                         metadata={"demo": True},
                                         tenant_id=operator_tenant_id(session)),
                            lines=read_jsonl(jsonl_bytes(SOURCES[kind](count)), kind=kind,
                                             max_line_bytes=s.max_line_bytes),
                        )
                    click.echo(f"\n{kind.value}: {count} items on {model} -> {job.id}")
                    started = time.monotonic()
                    final = watch_job(job.id)
                    summaries.append((kind, final, time.monotonic() - started))
            finally:
                children.stop()
    except NightowlError as e:
        raise click.ClickException(str(e)) from e
    _print_summary(summaries)


def _wait_for_worker(s: Any, children: Any) -> None:
    """Submit once the demo's own worker consumes the queue: a job watched before that would
    warn that no worker is consuming it, while one is starting."""
    from nightowl.fleet.liveness import workers_on

    click.echo("starting a worker on the cpu queue ...", err=True)
    deadline = time.monotonic() + WORKER_START_S
    while not workers_on(s, "cpu"):
        if (dead := children.poll_dead()) is not None:
            raise click.ClickException(f"the demo's {dead}")
        if time.monotonic() > deadline:
            raise click.ClickException(f"the demo's worker did not start within "
                                       f"{WORKER_START_S:.0f} s")
        time.sleep(0.5)


def _shown(output: Any) -> str:
    if isinstance(output, dict) and isinstance(output.get("embedding"), list):
        vector = output["embedding"]
        return f"{len(vector)} dimensions: [{', '.join(f'{x:.3f}' for x in vector[:4])}, ...]"
    return json.dumps(output)[:90]


def _print_summary(summaries: list[Any]) -> None:
    click.echo("\nsummary")
    ok = True
    with session_scope() as session:
        for kind, job, _ in summaries:
            ok &= job.status.value == "completed"
            seconds = ((job.completed_at - job.in_progress_at).total_seconds()
                       if job.completed_at and job.in_progress_at else 0.0)
            rate = f"{job.succeeded / seconds:7.1f} items/s" if seconds else ""
            click.echo(f"  {kind.value:<10} {job.status.value:<10} {job.succeeded:>5}/"
                       f"{job.total} ok, {job.failed} failed, {rate}   "
                       f"(job {job.id})")
            for _, row in iter_rows(session, job.id, limit=2):
                field = kind.input_field
                click.echo(f"      {row['input'][field]!r:.60} -> {_shown(row['output'])}")
    click.echo("\nexport any job with: nightowl results export JOB_ID -o results.jsonl")
    if not ok:
        raise click.ClickException("a demo job did not complete")
