"""`nightowl models`: the registry from the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from nightowl import registry
from nightowl.auth import operator_tenant_id
from nightowl.cli.common import db_session, settings
from nightowl.enums import TaskKind
from nightowl.errors import NightowlError
from nightowl.model_copy import check_model_name, copy_into_store
from nightowl.models import Tenant
from nightowl.sources import check_source

BOOTSTRAP_ALIAS = "prod"


@click.group()
def models() -> None:
    """Register, list, bootstrap and promote models."""


@models.command("list")
@click.option("--name", help="Only versions of this model.")
def list_(name: str | None) -> None:
    """Print the registry: every version with its owner, kind, source and aliases."""
    with db_session() as session:
        versions = registry.list_versions(session, name)
        aliases = registry.aliases_by_version(session)
        owners = dict(session.execute(select(Tenant.id, Tenant.name)).tuples().all())
        table = Table("model", "owner", "kind", "aliases", "source", "metrics")
        for v in versions:
            metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())
                                if isinstance(val, int | float))
            owner = "shared" if v.tenant_id is None else owners.get(v.tenant_id, v.tenant_id)
            table.add_row(v.ref, owner, v.kind.value, ",".join(aliases.get(v.id, [])), v.source,
                          metrics)
    if not versions:
        click.echo("no models registered; run `nightowl models bootstrap` or "
                   "`nightowl models add`")
        return
    Console(width=200).print(table)


@models.command()
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice([k.value for k in TaskKind]),
              help="What the model does.")
@click.option("--source", required=True,
              help="A hub id or a local directory with safetensors weights.")
@click.option("--revision", help="Pinned hub revision (commit, tag or branch).")
@click.option("--copy", "copy_in", is_flag=True,
              help="Copy a local directory into the model store first (for dirs outside roots).")
@click.option("--alias", help="Point this alias (e.g. prod) at the new version.")
@click.option("--shared", is_flag=True,
              help="Share it with every tenant (default: the operator's own model).")
def add(name: str, kind: str, source: str, revision: str | None, copy_in: bool,
        alias: str | None, shared: bool) -> None:
    """Register a checkpoint as the next version of NAME."""
    s = settings()
    with db_session() as session:
        owner = None if shared else operator_tenant_id(session)
        try:
            check_model_name(name)
            registry.check_name(session, name, TaskKind(kind), tenant_id=owner)
            if copy_in:
                original, target = source, copy_into_store(source, name=name,
                                                           models_path=s.models_path)
                source = str(target)
        except NightowlError as e:
            raise click.ClickException(str(e)) from e
        try:
            stored = check_source(source, s)
            version = registry.register(session, name=name, kind=TaskKind(kind), source=stored,
                                        revision=revision, tenant_id=owner)
            if alias:
                registry.set_alias(session, version, alias, tenant_id=owner)
        except NightowlError as e:
            if copy_in:
                # Only the fresh folder this command made; never anything that was there.
                shutil.rmtree(target, ignore_errors=True)
                raise click.ClickException(str(e).replace(source, original)) from e
            raise click.ClickException(str(e)) from e
        click.echo(version.ref)


@models.command()
@click.argument("name")
def show(name: str) -> None:
    """Show every version of NAME with its lineage, metrics and aliases."""
    with db_session() as session:
        versions = registry.list_versions(session, name.split("@")[0])
        if not versions:
            raise click.ClickException(f"no model named {name!r}; see `nightowl models list`")
        aliases = registry.aliases_by_version(session)
        for v in versions:
            click.echo(json.dumps({
                "ref": v.ref, "kind": v.kind.value, "source": v.source, "revision": v.revision,
                "shared": v.tenant_id is None, "tenant_id": v.tenant_id,
                "sha256": v.sha256, "base_version_id": v.base_version_id,
                "training_run_id": v.training_run_id, "metrics": v.metrics,
                "aliases": aliases.get(v.id, []), "created_at": v.created_at.isoformat(),
            }))


@models.command()
@click.argument("ref")
@click.argument("alias")
def promote(ref: str, alias: str) -> None:
    """Point ALIAS of the model at REF (NAME@vN), unconditionally, in REF's owner's space."""
    with db_session() as session:
        version = registry.resolve(session, ref)
        registry.set_alias(session, version, alias, tenant_id=version.tenant_id)
        click.echo(f"{version.name}@{alias} -> {version.ref}")


@models.command()
@click.option("--force", is_flag=True, help="Rebuild even if the models exist.")
def bootstrap(force: bool) -> None:
    """Build small real models offline (tokenizer, GPT-2, translator, BERT) and register them."""
    s = settings()
    # Building models needs torch, which the core never imports: the ML runtime runs it.
    cmd = [sys.executable, "-m", "workers.bootstrap", str(s.models_path)]
    if force:
        cmd.append("--force")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise click.ClickException(f"bootstrap failed:\n{proc.stderr.strip()[-2000:]}")
    built = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    with db_session() as session:
        for model in built:
            source = check_source(model["path"], s)
            existing = [v for v in registry.list_versions(session, model["name"])
                        if v.source == source]
            try:
                version = existing[-1] if existing else registry.register(
                    session, name=model["name"], kind=TaskKind(model["kind"]), source=source)
                # Bootstrap models are shared (owner None), and so is their alias.
                if registry.alias_holder(session, version.name, BOOTSTRAP_ALIAS) is None:
                    registry.set_alias(session, version, BOOTSTRAP_ALIAS)
            except NightowlError as e:
                raise click.ClickException(str(e)) from e
            click.echo(f"{version.ref:<24} {version.kind.value:<10} {source}")


def _add_compare() -> None:
    from nightowl.cli.stats import compare

    models.add_command(compare)


_add_compare()
