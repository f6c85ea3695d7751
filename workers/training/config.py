"""What a fine-tune is asked to do (TrainConfig) and what it hands back (TrainResult)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nightowl.enums import TaskKind
from nightowl.errors import InvalidInput

LORA_KEYS = frozenset({"r", "alpha", "dropout"})


@dataclass
class TrainConfig:
    kind: TaskKind
    # A local model directory or a hub id; weights must be safetensors.
    base_source: str
    # The run's artifact directory: checkpoints/ and final/ live here, and a restart resumes here.
    output_dir: Path
    # Passes over the training rows; ignored when max_steps is set.
    epochs: float = 1.0
    max_steps: int | None = None
    # Peak learning rate, reached after warmup_steps and decayed linearly to zero.
    lr: float = 5e-5
    # Rows per micro-batch; one optimizer step sees batch_size * grad_accum rows.
    batch_size: int = 16
    grad_accum: int = 1
    warmup_steps: int = 0
    # AdamW decay, applied to matrices only (biases and norms are left alone, as in nanoGPT).
    weight_decay: float = 0.0
    # Seeds the data order, dropout and any freshly initialised head: a rerun reproduces a run.
    seed: int = 0
    # Optimizer steps between evaluations; None evaluates only at the end (always done).
    eval_every: int | None = None
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    # Tokens per sequence (source and target each, for translation); longer rows are truncated.
    max_length: int = 128
    # {"r": 8, "alpha": 16, "dropout": 0.05} trains LoRA adapters, merged before the final save.
    lora: dict[str, int | float] | None = None
    # Sentiment label names; None takes the sorted set found in the rows.
    labels: list[str] | None = None
    # "auto" (CUDA when present), "cpu" or "cuda:N".
    device: str = "auto"

    def __post_init__(self) -> None:
        self.kind = TaskKind(self.kind)
        self.output_dir = Path(self.output_dir)
        problems: list[tuple[str, str]] = []

        def need(ok: bool, field: str, message: str) -> None:
            if not ok:
                problems.append((field, message))

        need(bool(self.base_source), "base_source", "name a model directory or hub id")
        need(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.grad_accum >= 1, "grad_accum", "must be >= 1")
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.eval_every is None or self.eval_every >= 1, "eval_every", "must be >= 1")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        need(self.max_length >= 2, "max_length", "must be >= 2")
        if self.lora is not None:
            unknown = sorted(set(self.lora) - LORA_KEYS)
            need(not unknown, "lora", f"unknown keys {unknown}; use r, alpha, dropout")
            need(int(self.lora.get("r", 8)) >= 1, "lora.r", "must be >= 1")
            need(0 <= float(self.lora.get("dropout", 0.0)) < 1, "lora.dropout", "must be in [0, 1)")
        if self.labels is not None:
            need(len(set(self.labels)) >= 2, "labels", "need at least two distinct labels")
            need(self.kind is TaskKind.SENTIMENT, "labels", "only sentiment runs take labels")
        if problems:
            raise InvalidInput("invalid training configuration", problems)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["output_dir"] = str(self.output_dir)
        return data


@dataclass
class TrainResult:
    # output_dir/"final" for a finished run; the stop checkpoint for a stopped one.
    model_path: Path
    # sha256 of the weights file under model_path (model.safetensors when finished).
    sha256: str
    steps: int
    # The last evaluation's metrics ({} when a stopped run never evaluated).
    final_metrics: dict[str, float]
    stopped: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "model_path": str(self.model_path)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        return cls(
            model_path=Path(data["model_path"]),
            sha256=str(data["sha256"]),
            steps=int(data["steps"]),
            final_metrics={k: float(v) for k, v in data["final_metrics"].items()},
            stopped=bool(data["stopped"]),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)
