"""Translation through model.generate(): transformers 5 has no translation pipeline, and
calling generate directly keeps batching under the engine's control."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from nightowl.common.enums import TaskKind
from nightowl.common.specs import DEFAULT_TRANSLATE_NEW_TOKENS as DEFAULT_MAX_NEW_TOKENS
from nightowl.common.specs import MAX_BEAMS
from nightowl.common.specs import TRANSLATE_PARAMS as PARAMS
from nightowl.common.tokens import new_token_ceiling
from nightowl_workers.runners.base import Runner, param_int

if TYPE_CHECKING:
    from transformers import BatchEncoding


class TranslationRunner(Runner):
    kind = TaskKind.TRANSLATE

    def sanitize_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._reject_unknown(params, PARAMS)
        limit = new_token_ceiling(self.kind, self.position_limit())
        return {
            "max_new_tokens": param_int(
                params, "max_new_tokens", min(DEFAULT_MAX_NEW_TOKENS, limit), 1, limit
            ),
            "num_beams": param_int(params, "num_beams", self._default_beams(), 1, MAX_BEAMS),
        }

    def _default_beams(self) -> int:
        # Translation checkpoints often ship a tuned beam count (Marian: 4); honour it.
        configured = getattr(self.model.generation_config, "num_beams", None)
        return min(max(configured, 1), MAX_BEAMS) if isinstance(configured, int) else 1

    def _forward(self, inputs: BatchEncoding, params: dict[str, Any]) -> torch.Tensor:
        # transformers' stubs type `generate` through nn.Module.__getattr__ (a Tensor).
        sequences: torch.Tensor = self.model.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=params["max_new_tokens"],
            num_beams=params["num_beams"],
            num_return_sequences=1,
            do_sample=False,
        )
        return sequences.cpu()

    def _produced(self, row: list[int]) -> list[int]:
        """The generated ids of one row: after the decoder start token, through the first eos."""
        eos = _ids(self.model.generation_config.eos_token_id)
        pad = self.model.generation_config.pad_token_id
        produced: list[int] = []
        # Position 0 is the decoder start token, which the model was given, not produced.
        for token in row[1:]:
            if token in eos:
                produced.append(token)
                break
            if token == pad:
                break
            produced.append(token)
        return produced

    def postprocess(self, outputs: torch.Tensor, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"translation": self.decode(self._produced(row)).strip()}
            for row in outputs.tolist()
        ]

    def output_tokens(self, outputs: torch.Tensor, count: int) -> list[int]:
        return [len(self._produced(row)) for row in outputs.tolist()]


def _ids(value: int | list[int] | None) -> set[int]:
    if value is None:
        return set()
    return {value} if isinstance(value, int) else set(value)
