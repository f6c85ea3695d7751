"""`nightowl submit KIND FILE --model REF`: validate, store and queue a bulk job."""

from __future__ import annotations

import sys

import click

from nightowl.cli.backend import current
from nightowl.cli.common import parse_duration, parse_pairs, priority_option
from nightowl.common import values
from nightowl.common.enums import JobStatus, OnInvalid, TaskKind
from nightowl.common.errors import NightowlError
from nightowl.jobs.service import JobSpec


@click.command()
@click.argument("kind", type=click.Choice([k.value for k in TaskKind]))
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--model", required=True, help="NAME, NAME@ALIAS or NAME@vN; pinned at submit.")
@click.option("--param", "params", multiple=True, help="Model parameter k=v (repeatable).")
@click.option("--chunk-size", type=int, help="Items per chunk (default NIGHTOWL_CHUNK_SIZE).")
@click.option("--deadline", help="Expire what is unfinished after this long (30m, 24h).")
@click.option("--metadata", "metadata", multiple=True, help="Metadata k=v kept on the job.")
@click.option("--on-invalid", type=click.Choice([o.value for o in OnInvalid]), default="reject",
              show_default=True, help="reject: queue nothing if a line is bad; skip: run the rest.")
@click.option("--truncate", is_flag=True, help="Truncate texts longer than the model accepts.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Input format (default: from the file name, jsonl for stdin).")
@click.option("--column", help="CSV column holding the text (implies --format csv).")
@click.option("--id-column", help="CSV column holding the custom_id.")
@click.option("--queue", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Worker queue to run on.")
@priority_option
@click.option("--wait", is_flag=True, help="Show progress; exit 0 only if the job completed.")
def submit(kind: str, file: str, model: str, params: tuple[str, ...], chunk_size: int | None,
           deadline: str | None, metadata: tuple[str, ...], on_invalid: str, truncate: bool,
           fmt: str | None, column: str | None, id_column: str | None, queue: str,
           priority: int, wait: bool) -> None:
    """Submit a bulk KIND job (generate, translate, sentiment, embed) from FILE ('-' for stdin).

    The job id is the only line printed on stdout (with --wait, before the progress).
    """
    spec = JobSpec(
        kind=TaskKind(kind), model=model, params=parse_pairs(params, "--param"),
        chunk_size=chunk_size, deadline_seconds=_deadline(deadline),
        metadata=parse_pairs(metadata, "--metadata"), on_invalid=OnInvalid(on_invalid),
        truncate=truncate, queue=queue, priority=priority,
    )
    job = current().submit_job(spec=spec, file=file, fmt=fmt, column=column,
                               id_column=id_column)
    click.echo(f"queued {job.total} items ({job.failed} invalid) on {job.model_version}",
               err=True)
    if job.broker_down:
        from nightowl.cli.common import settings
        from nightowl.fleet.liveness import broker_down_message

        click.echo(f"warning: the job waits in the database: {broker_down_message(settings())}."
                   " A worker sends its chunks once the broker answers.", err=True)
    if not wait:
        click.echo(job.id)
        return
    from nightowl.cli.watch import left_running

    try:
        # The id first (echo flushes): a user who stops watching still has it. Inside the
        # try, so a Ctrl-C right after the id appears still says the job goes on.
        click.echo(job.id)
        final = current().watch_job(job.id)
    except KeyboardInterrupt:
        left_running(job.id)
    sys.exit(0 if final.status == JobStatus.COMPLETED else 1)


def _deadline(text: str | None) -> float | None:
    span = parse_duration(text)
    if span is None:
        return None
    try:
        values.deadline(span.total_seconds())
    except NightowlError as e:
        raise click.BadParameter(str(e), param_hint="--deadline") from e
    return span.total_seconds()
