"""Generation: a causal LM continues each prompt; stop strings cut the text, seeds repeat it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nightowl.enums import TaskKind
from nightowl.errors import InvalidParams
from nightowl.params import MAX_RETURN_SEQUENCES, MAX_TOP_K, stop_strings
from nightowl.params import PARAMS as SPEC
from workers.runners.base import Runner, param_bool, param_float, param_int

if TYPE_CHECKING:
    from transformers import BatchEncoding

PARAMS = SPEC[TaskKind.GENERATE]
DEFAULT_MAX_NEW_TOKENS = 32
_SAMPLING = ("temperature", "top_p", "top_k")


@dataclass
class Generated:
    # New token ids per returned sequence: (prompt 0 choice 0, prompt 0 choice 1, ...).
    rows: list[list[int]]
    per_prompt: int
    max_new_tokens: int


@dataclass
class _Choice:
    text: str
    finish_reason: str
    tokens: int


class GenerationRunner(Runner):
    kind = TaskKind.GENERATE

    @property
    def max_input_tokens(self) -> int:
        # One position is kept free so that any accepted prompt can get at least one token;
        # longer continuations are clamped to the room left (finish_reason "length").
        return max(1, self.position_limit() - 1)

    def sanitize_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._reject_unknown(params, PARAMS)
        limit = self.max_input_tokens
        n = param_int(params, "num_return_sequences", 1, 1, MAX_RETURN_SEQUENCES)
        clean: dict[str, Any] = {
            "max_new_tokens": param_int(
                params, "max_new_tokens", min(DEFAULT_MAX_NEW_TOKENS, limit), 1, limit
            ),
            "temperature": param_float(
                params, "temperature", low=0, high=math.inf, low_open=True,
                describe="a number > 0",
            ),
            "top_p": param_float(
                params, "top_p", low=0, high=1, low_open=True, describe="a number in (0, 1]"
            ),
            "top_k": param_int(params, "top_k", None, 0, MAX_TOP_K),
            "seed": param_int(params, "seed", None, 0, 2**63 - 1),
            "num_return_sequences": n,
            "stop": _stop_strings(params.get("stop")),
        }
        do_sample = param_bool(params, "do_sample", None)
        if do_sample is False and n > 1:
            raise InvalidParams(
                f"num_return_sequences={n} needs do_sample=true: greedy decoding would return "
                "the same text every time",
                [("num_return_sequences", "1 unless do_sample is true")],
            )
        if do_sample is None:
            # Asking for a temperature or several choices only makes sense when sampling.
            do_sample = n > 1 or any(clean[name] is not None for name in _SAMPLING)
        clean["do_sample"] = do_sample
        return clean

    def _forward(self, inputs: BatchEncoding, params: dict[str, Any]) -> Generated:
        width = int(inputs["input_ids"].shape[1])
        max_new = max(1, min(params["max_new_tokens"], self.position_limit() - width))
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": params["do_sample"],
            "num_return_sequences": params["num_return_sequences"],
            "pad_token_id": self._pad_id(),
        }
        if params["do_sample"]:
            kwargs.update({k: params[k] for k in _SAMPLING if params[k] is not None})
        if params["stop"]:
            # Lets generate() end a sequence at a stop string instead of running to the limit;
            # the exact cut is still made on the decoded text in postprocess.
            kwargs.update(stop_strings=params["stop"], tokenizer=self.tokenizer)
        if params["seed"] is not None:
            torch.manual_seed(params["seed"])
        # transformers' stubs type `generate` through nn.Module.__getattr__ (a Tensor).
        sequences: torch.Tensor = self.model.generate(**inputs, **kwargs)  # type: ignore[operator]
        return Generated(
            rows=sequences[:, width:].cpu().tolist(),
            per_prompt=params["num_return_sequences"],
            max_new_tokens=max_new,
        )

    def postprocess(self, outputs: Generated, params: dict[str, Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for choices in self._choices(outputs, params["stop"]):
            results.append(
                {
                    "text": choices[0].text,
                    "finish_reason": choices[0].finish_reason,
                    "choices": [
                        {"text": c.text, "finish_reason": c.finish_reason} for c in choices
                    ],
                }
            )
        return results

    def output_tokens(self, outputs: Generated, count: int) -> list[int]:
        return [sum(c.tokens for c in choices) for choices in self._choices(outputs, [])]

    # --- helpers ------------------------------------------------------------------------

    def _pad_id(self) -> int | None:
        pad: int | None = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        return pad

    def _eos_ids(self) -> set[int]:
        configured = self.model.generation_config.eos_token_id
        ids = {configured} if isinstance(configured, int) else set(configured or [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _choices(self, outputs: Generated, stops: list[str]) -> list[list[_Choice]]:
        eos, pad = self._eos_ids(), self._pad_id()
        limit = outputs.max_new_tokens
        choices = [self._choice(row, eos, pad, stops, limit) for row in outputs.rows]
        n = outputs.per_prompt
        return [choices[i : i + n] for i in range(0, len(choices), n)]

    def _choice(
        self, row: list[int], eos: set[int], pad: int | None, stops: list[str], max_new: int
    ) -> _Choice:
        produced: list[int] = []
        ended_by_eos = False
        for token in row:
            if token in eos:
                ended_by_eos = True
                break
            # A finished sequence is filled with pad; where pad is not eos it marks an early
            # stop (a stop string), not a token the model produced.
            if token == pad:
                break
            produced.append(token)
        text = self.decode(produced)
        tokens = len(produced) + int(ended_by_eos)
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        if hits:
            return _Choice(text[: min(hits)], "stop", tokens)
        if ended_by_eos:
            return _Choice(text, "eos", tokens)
        # Stopped before the limit without eos: a stop string that began inside the prompt.
        if tokens < max_new:
            return _Choice(text, "stop", tokens)
        return _Choice(text, "length", tokens)


def _stop_strings(value: Any) -> list[str]:
    return stop_strings(value)
