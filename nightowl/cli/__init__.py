"""The `nightowl` command: one root group; subcommands load lazily so --help stays instant."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from nightowl.common.errors import NightowlError

# name -> "module:attribute"; a module is imported only when its command runs or shows help.
COMMANDS = {
    "db": "nightowl.cli.db:db",
    "models": "nightowl.cli.models:models",
    "submit": "nightowl.cli.submit:submit",
    "jobs": "nightowl.cli.jobs:jobs",
    "results": "nightowl.cli.results:results",
    "worker": "nightowl.cli.services:worker",
    "beat": "nightowl.cli.services:beat",
    "api": "nightowl.cli.services:api",
    "up": "nightowl.cli.services:up",
    "reap": "nightowl.cli.services:reap",
    "demo": "nightowl.cli.demo:demo",
    "finetune": "nightowl.cli.finetune:finetune",
    "runs": "nightowl.cli.finetune:runs",
    "schedule": "nightowl.cli.schedule:schedule",
    "keys": "nightowl.cli.keys:keys",
    "sql": "nightowl.cli.sql:sql",
    "workers": "nightowl.cli.workers:workers",
    "quota": "nightowl.cli.quota:quota",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing one-line help would import every command module; the names are enough here.
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP.get(name, "")) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NightowlError as e:
            raise click.ClickException(str(e)) from e


# The listing of `nightowl --help`: each command's own one-line help (its docstring's first
# sentence), kept here so listing the commands imports none of them; a test holds each to its
# command.
HELP = {
    "db": "Create or migrate the database schema.",
    "models": "Register, list, bootstrap and promote models.",
    "submit": ("Submit a bulk KIND job (generate, translate, sentiment, embed) from FILE ('-' for "
               "stdin)."),
    "jobs": "List, show, watch, cancel and retry jobs.",
    "results": "A job's results out (`export`), or results across jobs (`query`).",
    "worker": "Run a Celery worker; picks a pool that is safe for torch.",
    "beat": "Run Celery beat: the schedules in the database (re-read every few s).",
    "api": "Serve the HTTP API with uvicorn.",
    "up": "Run broker, migrations, a worker and the API in the foreground; Ctrl-C stops it all.",
    "reap": "Re-send lost chunks, free dead leases and expire overdue jobs, once.",
    "demo": ("Bootstrap models, run a sentiment, translation, generation and embedding job, "
             "print a summary."),
    "finetune": "Submit a fine-tune (metrics, checkpoints, registry, promotion gate).",
    "runs": "List, inspect and cancel fine-tune runs; export and plot their metrics.",
    "schedule": "Recurring jobs and fine-tunes: edit, pause or resume them while beat runs.",
    "keys": "Create, list and revoke tenants' API keys (HTTP API access).",
    "sql": "Run one read-only SQL STATEMENT and print its rows; writes are refused.",
    "workers": ("Live and recently dead workers: host, queues, device, current job, items/s, last "
                "seen."),
    "quota": "Per-tenant limits: over one, a submit is refused (HTTP 429) and nothing is stored.",
}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api", "api_url", envvar="NIGHTOWL_API_URL", metavar="URL",
              help="Work through this nightowl API as the key's tenant instead of on the "
                   "database as the operator; operator-only commands (db, keys, quota, sql, "
                   "worker, up, ...) refuse. Env: NIGHTOWL_API_URL.")
@click.option("--key", "api_key", envvar="NIGHTOWL_API_KEY", metavar="KEY",
              help="API key for --api. Env: NIGHTOWL_API_KEY.")
@click.version_option(package_name="nightowl")
@click.pass_context
def cli(ctx: click.Context, api_url: str | None, api_key: str | None) -> None:
    """nightowl: bulk inference and nightly fine-tunes for Transformer models."""
    from nightowl.cli.backend import make_backend

    # Chosen once: every command asks this backend, so none can fall back to the local
    # database while --api names a server.
    ctx.obj = make_backend(api_url, api_key)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except NightowlError as e:  # raised while loading settings, before a command runs
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
