"""`nightowl finetune submit` and `nightowl runs`: fine-tunes and what they recorded."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from nightowl.cli.backend import current
from nightowl.cli.common import priority_option
from nightowl.common.enums import KIND_ALIASES, RunStatus
from nightowl.common.specs import DEFAULT_EVAL_SPLIT, check_finetune_request, is_eval_metric


def parse_lora(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{text!r} must look like r=8,alpha=16",
                                     param_hint="--lora") from None
        if not sep:
            raise click.BadParameter(f"{text!r} must look like r=8,alpha=16", param_hint="--lora")
    if "r" in out:
        out["r"] = int(out["r"])
    return out


# CLI flag -> hyperparameter. Type, help and default come from nightowl.common.specs, and so does
# every range check (at submit, in the core), so a bad value reads the same as over HTTP.
HYPERPARAMETER_FLAGS = {
    "--epochs": "epochs", "--max-steps": "max_steps", "--lr": "lr", "--batch-size": "batch_size",
    "--grad-accum": "grad_accum", "--warmup": "warmup_steps", "--weight-decay": "weight_decay",
    "--seed": "seed", "--eval-every": "eval_every", "--checkpoint-every": "checkpoint_every",
}


def _hyperparameter_options(command: Callable[..., None]) -> Callable[..., None]:
    from nightowl.common.specs import Hyperparameters
    from nightowl.common.values import field_types

    for flag, name in reversed(HYPERPARAMETER_FLAGS.items()):
        info = Hyperparameters.model_fields[name]
        default = "" if info.default is None else f" (default {info.default:g})"
        command = click.option(flag, name, type=int if int in field_types(info) else float,
                               help=f"{info.description}{default}.")(command)
    return command


@click.group()
def finetune() -> None:
    """Submit a fine-tune (metrics, checkpoints, registry, promotion gate)."""


@finetune.command()
@click.option("--kind", required=True, type=click.Choice(sorted(KIND_ALIASES)),
              help="What the model learns.")
@click.option("--base", required=True, help="Base model: NAME, NAME@ALIAS or NAME@vN.")
@click.option("--train", "train_file", required=True, type=click.Path(path_type=Path),
              help="Training data: JSONL ({text,label} / {source,target} / {text}) or .txt.")
@click.option("--eval", "eval_file", type=click.Path(path_type=Path),
              help="Evaluation data, same format (default: split off the training data).")
@click.option("--eval-split", type=float, default=DEFAULT_EVAL_SPLIT, show_default=True,
              help="Share of the training rows held out when no --eval is given.")
@_hyperparameter_options
@click.option("--lora", help="Train LoRA adapters, e.g. r=8,alpha=16 (merged when saved).")
@click.option("--group-by-length", is_flag=True, default=None,
              help="Batch rows of similar length together to cut padding (off: batches are "
                   "shuffled, which learns better where length tracks the label).")
@click.option("--register-as", help="Model name for the result (default: the base's name).")
@click.option("--promote-to", help="Move this alias to the result only if it beats the holder.")
@click.option("--gate", help="Eval metric that decides the promotion (default per kind).")
@priority_option
@click.option("--wait", is_flag=True, help="Wait; exit 0 only if the run succeeded.")
def submit(kind: str, base: str, train_file: Path, eval_file: Path | None, eval_split: float,
           lora: str | None, group_by_length: bool | None, register_as: str | None,
           promote_to: str | None, gate: str | None, priority: int, wait: bool,
           **hyperparameters: float | None) -> None:
    """Queue a fine-tune on the train queue; the run id is the last line printed."""
    hyper: dict[str, Any] = {**hyperparameters, "lora": parse_lora(lora),
                             "group_by_length": group_by_length or None}
    request = check_finetune_request(
        kind=KIND_ALIASES[kind], base=base, eval_split=eval_split,
        hyperparameters={k: v for k, v in hyper.items() if v is not None},
        register_as=register_as, promote_to=promote_to, gate=gate, priority=priority)
    run = current().submit_finetune(request, train_file=train_file, eval_file=eval_file)
    click.echo(f"queued fine-tune of {base} on {run.dataset['train_rows']} rows "
               f"(eval {run.dataset['eval_rows']})", err=True)
    if wait:
        final = wait_run(run.id)
        click.echo(run.id)
        sys.exit(0 if final == RunStatus.SUCCEEDED.value else 1)
    click.echo(run.id)


def wait_run(run_id: str, interval: float = 1.0) -> str:
    """Print each new train/loss step until the run ends, then what it left; its status."""
    import time

    backend = current()
    last_step = -1
    while True:
        status, loss = backend.run_progress(run_id)
        if loss is not None and loss[0] != last_step:
            last_step = loss[0]
            click.echo(f"{status} step {last_step} train/loss {loss[1]:.4f}", err=True)
        if RunStatus(status).terminal:
            click.echo(backend.run_outcome_line(run_id), err=True)
            return status
        time.sleep(interval)


@click.group()
def runs() -> None:
    """List, inspect and cancel fine-tune runs; export and plot their metrics."""


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many, newest first.")
def list_(limit: int) -> None:
    """Recent fine-tune runs."""
    table = Table("id", "kind", "status", "base", "result", "promotion", "created (UTC)")
    for r in current().list_runs(limit):
        table.add_row(r.id, r.kind.value, r.status.value, r.base_version or "",
                      r.result_version or (f"({r.register_as})" if r.register_as else ""),
                      r.promotion_summary, r.created_at[:19].replace("T", " "))
    Console(width=200).print(table)


@runs.command()
@click.argument("run_id")
def show(run_id: str) -> None:
    """One run as JSON: settings, dataset, result version, promotion decision, events."""
    backend = current()
    run = {**backend.get_run(run_id).model_dump(mode="json"),
           "events": [e.model_dump(mode="json") for e in backend.run_events(run_id)]}
    click.echo(json.dumps(run, indent=2))


@runs.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run; a running one checkpoints and stops at its next step."""
    run = current().cancel_run(run_id)
    click.echo(f"{run.id} {run.status.value}")


@runs.command()
@click.argument("run_id")
@click.option("--key", "keys", multiple=True, help="Only these metric keys (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl"]), default="table",
              show_default=True, help="Output format; csv columns are step,key,value,ts.")
def metrics(run_id: str, keys: tuple[str, ...], fmt: str) -> None:
    """Print a run's metric series."""
    rows = [m.model_dump(mode="json") for m in current().run_metrics(run_id)
            if not keys or m.key in keys]
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["step", "key", "value", "ts"])
        for m in rows:
            writer.writerow([m["step"], m["key"], repr(m["value"]), m["ts"]])
    elif fmt == "jsonl":
        for m in rows:
            click.echo(json.dumps({k: m[k] for k in ("step", "key", "value", "ts")}))
    else:
        table = Table("step", "key", "value")
        for m in rows:
            table.add_row(str(m["step"]), m["key"], f"{m['value']:.6g}")
        Console(width=120).print(table)


@runs.command()
@click.argument("run_id")
@click.option("--key", "keys", multiple=True,
              help="Metric keys to draw (default train/loss and the eval metrics).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="PNG file to write.")
def plot(run_id: str, keys: tuple[str, ...], output: Path) -> None:
    """Draw a run's curves to a PNG (headless), every panel on the training step axis."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for m in current().run_metrics(run_id):
        key = m.key
        if keys and key not in keys:
            continue
        if not keys and not (key == "train/loss" or is_eval_metric(key)):
            continue
        xs, ys = series.setdefault(key, ([], []))
        xs.append(m.step)
        ys.append(m.value)
    if not series:
        wanted = f" for {', '.join(keys)}" if keys else ""
        raise click.ClickException(f"run {run_id} has no metrics{wanted}")
    fig = metric_figure(series)
    fig.savefig(output, dpi=100)
    click.echo(f"wrote {output}", err=True)


def metric_figure(series: dict[str, tuple[list[int], list[float]]]) -> Any:
    """One panel per key, training first. One step axis for every panel: an eval taken at step
    40 sits under step 40 of the loss curve, and evals (a few points each) always get markers so
    a single one is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = max(max(xs) for xs, _ in series.values())
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.4 * len(series)), squeeze=False,
                             sharex=True)
    ordered = sorted(series.items(), key=lambda kv: (not kv[0].startswith("train/"), kv[0]))
    for ax, (key, (xs, ys)) in zip(axes[:, 0], ordered, strict=True):
        sparse = is_eval_metric(key) or len(xs) < 50
        ax.plot(xs, ys, marker="o" if sparse else None, markersize=5)
        ax.set_title(key)
        # A little room past the last step: the final eval's marker must not sit on the edge.
        ax.set_xlim(0, max(last, 1) * 1.03)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    return fig
