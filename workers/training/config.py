"""What a fine-tune is asked to do (TrainConfig) and what it hands back (TrainResult)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.common.specs import HYPERPARAMS, Hyperparameters, check_hyperparams


def _default(name: str) -> Any:
    return Hyperparameters.model_fields[name].default


@dataclass
class TrainConfig:
    """A run's hyperparameters (nightowl.common.specs.Hyperparameters: their meaning, defaults and
    ranges) plus what the task adds: the model, the folders, the labels and the device."""

    kind: TaskKind
    # A local model directory or a hub id; weights must be safetensors.
    base_source: str
    # The run's artifact directory: checkpoints/ and final/ live here, and a restart resumes here.
    output_dir: Path
    epochs: float = _default("epochs")
    max_steps: int | None = _default("max_steps")
    lr: float = _default("lr")
    batch_size: int = _default("batch_size")
    grad_accum: int = _default("grad_accum")
    warmup_steps: int = _default("warmup_steps")
    weight_decay: float = _default("weight_decay")
    seed: int = _default("seed")
    eval_every: int | None = _default("eval_every")
    checkpoint_every: int = _default("checkpoint_every")
    keep_checkpoints: int = _default("keep_checkpoints")
    max_length: int = _default("max_length")
    lora: dict[str, int | float] | None = None
    group_by_length: bool = _default("group_by_length")
    # Sentiment label names; None takes the sorted set found in the rows.
    labels: list[str] | None = None
    # "auto" (CUDA when present), "cpu" or "cuda:N".
    device: str = "auto"

    def __post_init__(self) -> None:
        self.kind = TaskKind(self.kind)
        self.output_dir = Path(self.output_dir)
        # The ranges the run was admitted under; the operator's budget was checked at submit.
        check_hyperparams({name: getattr(self, name) for name in HYPERPARAMS}, None)
        problems: list[tuple[str, str]] = []
        if not self.base_source:
            problems.append(("base_source", "name a model directory or hub id"))
        if self.labels is not None:
            if len(set(self.labels)) < 2:
                problems.append(("labels", "need at least two distinct labels"))
            if self.kind is not TaskKind.SENTIMENT:
                problems.append(("labels", "only sentiment runs take labels"))
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
