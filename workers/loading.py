"""Load a model and its tokenizer safely: safetensors only, no remote code, known places only.

The filesystem and allowlist checks live in nightowl.common.sources (torch-free, shared with the
core, which checks a source when it is registered); `load_for_kind` repeats them right before
loading, because the worker's filesystem is the one that counts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.common.errors import ModelLoadError
from nightowl.common.sources import check_model_source, is_local_source

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

AUTO_CLASS_NAMES: dict[TaskKind, str] = {
    TaskKind.GENERATE: "AutoModelForCausalLM",
    TaskKind.TRANSLATE: "AutoModelForSeq2SeqLM",
    TaskKind.SENTIMENT: "AutoModelForSequenceClassification",
    # Any encoder checkpoint: the bare model's hidden states are what gets pooled.
    TaskKind.EMBED: "AutoModel",
}





def load_for_kind(
    kind: TaskKind,
    source: str,
    *,
    revision: str | None,
    device: torch.device,
    settings: Settings,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model class that fits `kind`, in eval mode, on `device`, in its inference dtype."""
    import transformers

    from nightowl_workers.device import inference_dtype

    check_model_source(source, settings)
    local = is_local_source(source)
    # Load the resolved path that was checked, not a name that could be re-pointed meanwhile.
    target = os.path.realpath(os.path.expanduser(source)) if local else source
    common: dict[str, Any] = {
        "revision": revision,
        "trust_remote_code": False,
        "local_files_only": local,
    }
    auto_class = getattr(transformers, AUTO_CLASS_NAMES[kind])
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(target, **common)
        model = auto_class.from_pretrained(
            target, use_safetensors=True, dtype=inference_dtype(device), **common
        )
    except Exception as e:  # every failure becomes one actionable error for the item rows
        hint = (
            "check that the directory was written by save_pretrained and fits this task"
            if local
            else "if the hub is unreachable (HF_HUB_OFFLINE=1), download the model once and "
            "point nightowl at the local directory under NIGHTOWL_MODEL_DIR"
        )
        at = f" at revision {revision!r}" if revision else ""
        raise ModelLoadError(
            f"could not load a {kind.value} model from {source!r}{at}: {e}; {hint}"
        ) from e
    model.eval()
    model.to(device)
    _prepare_tokenizer(kind, model, tokenizer, source)
    return model, tokenizer


def _prepare_tokenizer(
    kind: TaskKind, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str
) -> None:
    decoder_only = not getattr(model.config, "is_encoder_decoder", False)
    if kind is TaskKind.GENERATE and decoder_only:
        # Left padding keeps each prompt's last token next to the first generated one; with
        # right padding the model would continue after pad tokens.
        tokenizer.padding_side = "left"
        # A truncated prompt keeps its end, the part the continuation follows from.
        tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"the tokenizer of {source!r} has neither a pad nor an eos token, so inputs "
                "cannot be batched; add a pad_token to its tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
