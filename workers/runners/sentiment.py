"""Sentiment: a sequence classifier gives a label and its probability, all scores on request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from nightowl.common.enums import TaskKind
from nightowl.common.specs import SENTIMENT_PARAMS as PARAMS
from nightowl_workers.runners.base import Runner, param_bool

if TYPE_CHECKING:
    from transformers import BatchEncoding


class SentimentRunner(Runner):
    kind = TaskKind.SENTIMENT
    uses_token_type_ids = True

    def sanitize_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._reject_unknown(params, PARAMS)
        return {"all_scores": param_bool(params, "all_scores", False)}

    def _forward(self, inputs: BatchEncoding, params: dict[str, Any]) -> torch.Tensor:
        logits = self.model(**inputs).logits.float()
        # Multi-label heads score each label independently; softmax would make them compete.
        if getattr(self.model.config, "problem_type", None) == "multi_label_classification":
            return torch.sigmoid(logits).cpu()
        return torch.softmax(logits, dim=-1).cpu()

    def postprocess(self, outputs: torch.Tensor, params: dict[str, Any]) -> list[dict[str, Any]]:
        id2label: Mapping[Any, str] = self.model.config.id2label or {}
        names = [str(id2label.get(i, f"LABEL_{i}")) for i in range(outputs.shape[-1])]
        results: list[dict[str, Any]] = []
        for probs in outputs.tolist():
            best = max(range(len(probs)), key=probs.__getitem__)
            result: dict[str, Any] = {"label": names[best], "score": float(probs[best])}
            if params["all_scores"]:
                result["scores"] = {name: float(p) for name, p in zip(names, probs, strict=True)}
            results.append(result)
        return results
