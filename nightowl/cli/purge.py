"""`nightowl jobs purge`: what the retention policy expired, gone now rather than at the next
maintenance pass (or, with --dry-run, listed)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from nightowl.cli.backend import local_only
from nightowl.cli.common import db_session
from nightowl.common.config import get_settings
from nightowl.common.errors import InvalidInput
from nightowl.common.timespec import parse_when
from nightowl.fleet import retention


@click.command()
@click.option("--dry-run", is_flag=True, help="List what would go; change nothing.")
@click.option("--as-of", "as_of", default=None, metavar="WHEN",
              help="Purge what has expired by this time instead of now (ISO, '2d' ago...); "
                   "nothing expires before its own expires_at either way.")
@click.option("--list", "list_ids", is_flag=True, help="Print each job and file id purged.")
def purge(dry_run: bool, as_of: str | None, list_ids: bool) -> None:
    """Purge finished jobs whose results expired (items, batch output and error files) and
    uploads past their expires_at, from the database and the artifact store. On PostgreSQL,
    time windows of job_items whose every job expired are dropped whole."""
    when = None
    if as_of is not None:
        try:
            when = parse_when(as_of)
        except InvalidInput as e:
            raise click.BadParameter(str(e), param_hint="--as-of") from e
        if when > datetime.now(UTC):
            raise click.BadParameter("must not be in the future: nothing is purged before "
                                     "it expires", param_hint="--as-of")
    with db_session() as session:
        report = retention.purge(session, get_settings(), now=when, dry_run=dry_run)
    verb = "would purge" if dry_run else "purged"
    click.echo(f"{verb} {report.jobs} job(s) with {report.items:,} result row(s), "
               f"{report.files} file(s) ({report.file_bytes:,} bytes)")
    for name in report.partitions_dropped:
        click.echo(f"{'would drop' if dry_run else 'dropped'} partition {name}")
    if list_ids:
        for job_id in report.job_ids:
            click.echo(f"job {job_id}")
        for file_id in report.file_ids:
            click.echo(f"file {file_id}")


local_only("purges the database and artifact store as the operator; the HTTP API has no route "
           "for it")(purge)
