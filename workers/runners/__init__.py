"""The runner registry: adding an inference kind is one runner file and one line here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nightowl.common.enums import TaskKind
from nightowl_workers.runners.base import Runner
from nightowl_workers.runners.embedding import EmbeddingRunner
from nightowl_workers.runners.generation import GenerationRunner
from nightowl_workers.runners.sentiment import SentimentRunner
from nightowl_workers.runners.translation import TranslationRunner

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

RUNNERS: dict[TaskKind, type[Runner]] = {
    TaskKind.GENERATE: GenerationRunner,
    TaskKind.TRANSLATE: TranslationRunner,
    TaskKind.SENTIMENT: SentimentRunner,
    TaskKind.EMBED: EmbeddingRunner,
}


def make_runner(
    kind: TaskKind,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
) -> Runner:
    return RUNNERS[kind](model, tokenizer, device)


__all__ = ["RUNNERS", "EmbeddingRunner", "GenerationRunner", "Runner", "SentimentRunner",
           "TranslationRunner", "make_runner"]
