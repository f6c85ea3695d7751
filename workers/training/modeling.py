"""Model and tokenizer construction for training: fresh from a base, or back from a checkpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
)

from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidInput, ModelLoadError
from nightowl.common.specs import Lora

_AUTO = {
    TaskKind.SENTIMENT: AutoModelForSequenceClassification,
    TaskKind.TRANSLATE: AutoModelForSeq2SeqLM,
    TaskKind.GENERATE: AutoModelForCausalLM,
}
_PEFT_TASK = {
    TaskKind.SENTIMENT: "SEQ_CLS",
    TaskKind.TRANSLATE: "SEQ_2_SEQ_LM",
    TaskKind.GENERATE: "CAUSAL_LM",
}
# Never unpickle weights and never run code shipped with a model: sources may be user-named.
SAFE_LOAD: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}


def load_tokenizer(source: str | Path) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a tokenizer from {source!s}: {e}") from e
    if tokenizer.pad_token is None:
        # GPT-2 ships without a pad token; padding positions are masked out of the loss anyway.
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer of {source!s} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(source: str | Path) -> PretrainedConfig:
    try:
        config: PretrainedConfig = AutoConfig.from_pretrained(str(source), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a model config from {source!s}: {e}") from e
    return config


def load_model(kind: TaskKind, source: str | Path, **overrides: Any) -> Any:
    try:
        model = _AUTO[kind].from_pretrained(
            str(source), dtype=torch.float32, **SAFE_LOAD, **overrides
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a {kind.value} model from {source!s}: {e}") from e
    return model


def choose_labels(
    requested: Sequence[str] | None,
    rows: Sequence[dict[str, Any]],
    base: PretrainedConfig,
) -> list[str]:
    """The id order of the label set. A base that is already a classifier over exactly these
    labels keeps its own order, or its trained head would silently swap classes."""
    names = sorted({str(x) for x in requested} if requested else {str(r["label"]) for r in rows})
    if len(names) < 2:
        raise InvalidInput(f"sentiment training needs at least two labels, found {names}")
    existing = getattr(base, "id2label", None) or {}
    ordered = [str(existing[i]) for i in sorted(existing)]
    return ordered if sorted(ordered) == names else names


def build_fresh(
    kind: TaskKind,
    base_source: str,
    *,
    labels: list[str] | None,
    lora: dict[str, int | float] | None,
) -> Any:
    overrides: dict[str, Any] = {}
    if kind is TaskKind.SENTIMENT:
        assert labels is not None
        overrides = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            # A plain encoder (MiniLM) has no head, and a classifier may have a different count.
            "ignore_mismatched_sizes": True,
        }
    model = load_model(kind, base_source, **overrides)
    if lora is not None:
        model = wrap_lora(kind, model, lora)
    return model


def wrap_lora(kind: TaskKind, model: Any, lora: dict[str, int | float]) -> Any:
    from peft import LoraConfig, get_peft_model

    spec = Lora.model_validate(lora)
    config = LoraConfig(
        task_type=_PEFT_TASK[kind],
        r=spec.r,
        # peft annotates int but scales by lora_alpha / r: a fractional alpha is a valid request.
        lora_alpha=spec.alpha if spec.alpha is not None else 2 * spec.r,  # type: ignore[arg-type]
        lora_dropout=spec.dropout,
    )
    return get_peft_model(model, config)


def resume_model(
    kind: TaskKind,
    base_source: str,
    checkpoint: Path,
    *,
    lora: dict[str, int | float] | None,
) -> Any:
    if lora is None:
        return load_model(kind, checkpoint)
    from peft import PeftModel

    # A LoRA checkpoint holds only adapters (and the new head); the frozen base comes back
    # from its source, with the label layout recorded in the checkpoint.
    overrides: dict[str, Any] = {}
    if kind is TaskKind.SENTIMENT:
        saved = PretrainedConfig.from_json_file(str(checkpoint / "base_config.json"))
        overrides = {
            "num_labels": saved.num_labels,
            "id2label": saved.id2label,
            "label2id": saved.label2id,
            "ignore_mismatched_sizes": True,
        }
    base = load_model(kind, base_source, **overrides)
    return PeftModel.from_pretrained(base, str(checkpoint), is_trainable=True)


def save_for_checkpoint(model: Any, tokenizer: Any, directory: Path) -> None:
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    if hasattr(model, "peft_config"):
        model.get_base_model().config.to_json_file(str(directory / "base_config.json"))


def save_final(model: Any, tokenizer: Any, directory: Path) -> None:
    """A plain transformers directory: LoRA adapters are folded into the base weights so that
    inference never needs peft."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def weights_file(directory: Path) -> Path:
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (directory / name).is_file():
            return directory / name
    raise ModelLoadError(f"no safetensors weights in {directory}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
