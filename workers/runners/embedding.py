"""Embeddings: an encoder's last hidden states, mean-pooled over real tokens, L2-normalised.

The sentence-transformers recipe (all-MiniLM and most sentence encoders), from the bare
encoder, so any encoder checkpoint serves; `dimensions` keeps the leading components and
normalises again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from nightowl.common.enums import TaskKind
from nightowl.common.specs import EMBED_PARAMS
from nightowl_workers.runners.base import Runner, param_bool, param_int

if TYPE_CHECKING:
    from transformers import BatchEncoding


class EmbeddingRunner(Runner):
    kind = TaskKind.EMBED
    uses_token_type_ids = True

    def sanitize_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._reject_unknown(params, EMBED_PARAMS)
        width = int(self.model.config.hidden_size)
        return {
            "dimensions": param_int(params, "dimensions", width, 1, width),
            "normalize": param_bool(params, "normalize", True),
        }

    def _forward(self, inputs: BatchEncoding, params: dict[str, Any]) -> torch.Tensor:
        hidden: torch.Tensor = self.model(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled: torch.Tensor = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = pooled[:, : params["dimensions"]]
        if params["normalize"]:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu()

    def postprocess(self, outputs: torch.Tensor, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"embedding": row} for row in outputs.tolist()]
