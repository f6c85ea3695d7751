"""Generation: a causal LM continues each prompt; stop strings cut the text, seeds repeat it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nightowl.common.config import get_settings
from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidParams
from nightowl.common.specs import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_RETURN_SEQUENCES,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    MIN_REPETITION_PENALTY,
    MIN_TEMPERATURE,
    PENALTY_RANGE,
    SAMPLING_PARAMS,
    SEED_RANGE,
    stop_strings,
)
from nightowl.common.specs import GENERATE_PARAMS as PARAMS
from nightowl.common.tokens import fit_context, new_token_ceiling
from nightowl_workers.runners import continuous
from nightowl_workers.runners.base import Runner, param_bool, param_float, param_int

if TYPE_CHECKING:
    from transformers import BatchEncoding


@dataclass
class Generated:
    # New token ids per returned sequence: (prompt 0 choice 0, prompt 0 choice 1, ...).
    rows: list[list[int]]
    per_prompt: int
    max_new_tokens: int
    # Per row, per new token: (its log-probability, the top alternatives as (id, logprob)).
    logprobs: list[list[tuple[float, list[tuple[int, float]]]]] | None = None


@dataclass
class _Choice:
    text: str
    finish_reason: str
    tokens: int
    produced: list[int]


class GenerationRunner(Runner):
    kind = TaskKind.GENERATE
    # static / continuous / auto; None follows NIGHTOWL_GENERATION_BATCHING.
    batching: continuous.Batching | None = None

    def sanitize_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._reject_unknown(params, PARAMS)
        limit = new_token_ceiling(self.kind, self.position_limit())
        n = param_int(params, "num_return_sequences", 1, 1, MAX_RETURN_SEQUENCES)
        clean: dict[str, Any] = {
            "max_new_tokens": param_int(
                params, "max_new_tokens", min(DEFAULT_MAX_NEW_TOKENS, limit), 1, limit
            ),
            # The spec's floors: under them the sampler divides into infinities.
            "temperature": param_float(
                params, "temperature", low=MIN_TEMPERATURE, high=math.inf, low_open=False,
                describe=f"a number >= {MIN_TEMPERATURE}",
            ),
            "top_p": param_float(
                params, "top_p", low=0, high=1, low_open=True, describe="a number in (0, 1]"
            ),
            "top_k": param_int(params, "top_k", None, 0, MAX_TOP_K),
            "seed": param_int(params, "seed", None, *SEED_RANGE),
            "num_return_sequences": n,
            "stop": stop_strings(params.get("stop")),
            "logprobs": param_bool(params, "logprobs", False),
            "top_logprobs": param_int(params, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS),
            "repetition_penalty": param_float(
                params, "repetition_penalty", low=MIN_REPETITION_PENALTY, high=math.inf,
                low_open=False, describe=f"a number >= {MIN_REPETITION_PENALTY}",
            ),
        }
        for name in ("presence_penalty", "frequency_penalty"):
            clean[name] = param_float(
                params, name, low=PENALTY_RANGE[0], high=PENALTY_RANGE[1], low_open=False,
                describe=f"a number from {PENALTY_RANGE[0]:g} to {PENALTY_RANGE[1]:g}",
            )
        if clean["top_logprobs"] and not clean["logprobs"]:
            raise InvalidParams("top_logprobs needs logprobs=true",
                                [("top_logprobs", "only with logprobs=true")])
        do_sample = param_bool(params, "do_sample", None)
        if do_sample is False and n > 1:
            raise InvalidParams(
                f"num_return_sequences={n} needs do_sample=true: greedy decoding would return "
                "the same text every time",
                [("num_return_sequences", "1 unless do_sample is true")],
            )
        if do_sample is None:
            # Asking for a temperature or several choices only makes sense when sampling.
            do_sample = n > 1 or any(clean[name] is not None for name in SAMPLING_PARAMS)
        clean["do_sample"] = do_sample
        return clean

    def _forward(self, inputs: BatchEncoding, params: dict[str, Any]) -> Generated:
        width = int(inputs["input_ids"].shape[1])
        # Longer continuations are clamped to the positions left (finish_reason "length").
        max_new = fit_context(self.kind, width, self.position_limit(), truncate=True,
                              max_new_tokens=params["max_new_tokens"]).max_new_tokens
        assert max_new is not None
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": params["do_sample"],
            "num_return_sequences": params["num_return_sequences"],
            "pad_token_id": self._pad_id(),
        }
        if params["do_sample"]:
            kwargs.update({k: params[k] for k in SAMPLING_PARAMS if params[k] is not None})
        if params["stop"]:
            # Lets generate() end a sequence at a stop string instead of running to the limit;
            # the exact cut is still made on the decoded text in postprocess.
            kwargs.update(stop_strings=params["stop"], tokenizer=self.tokenizer)
        if params.get("repetition_penalty") is not None:
            kwargs["repetition_penalty"] = params["repetition_penalty"]
        if params.get("presence_penalty") or params.get("frequency_penalty"):
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([_OpenAIPenalties(
                width, params.get("presence_penalty") or 0.0,
                params.get("frequency_penalty") or 0.0)])
        listeners = self.listeners()
        if listeners is not None:
            from nightowl_workers.runners.streaming import RowStreamer, StopWhenGone

            n = params["num_return_sequences"]
            pad = self._pad_id()
            ends = self._eos_ids() | ({pad} if pad is not None else set())
            kwargs["streamer"] = RowStreamer(listeners, n, self.decode, ends, params["stop"])
            kwargs["stopping_criteria"] = StopWhenGone.as_list(listeners, n)
        elif continuous.wanted(self.batching or get_settings().generation_batching,
                               self.device, params):
            return Generated(
                rows=continuous.generate(self.model, inputs, max_new, self._pad_id()),
                per_prompt=1, max_new_tokens=max_new)
        want_logprobs = bool(params.get("logprobs"))
        if want_logprobs:
            # Raw logits: the model's own distribution, before temperature or top-k reshape it.
            kwargs.update(return_dict_in_generate=True, output_logits=True)
        if params["seed"] is not None:
            torch.manual_seed(params["seed"])
        # transformers' stubs type `generate` through nn.Module.__getattr__ (a Tensor).
        result: Any = self.model.generate(**inputs, **kwargs)  # type: ignore[operator]
        sequences: torch.Tensor = result.sequences if want_logprobs else result
        new = sequences[:, width:]
        logprobs = None
        if want_logprobs:
            logprobs = _token_logprobs(new, result.logits, int(params.get("top_logprobs") or 0))
        return Generated(
            rows=new.cpu().tolist(),
            per_prompt=params["num_return_sequences"],
            max_new_tokens=max_new,
            logprobs=logprobs,
        )

    def postprocess(self, outputs: Generated, params: dict[str, Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        n = outputs.per_prompt
        for p, choices in enumerate(self._choices(outputs, params["stop"])):
            out = []
            for i, c in enumerate(choices):
                choice: dict[str, Any] = {"text": c.text, "finish_reason": c.finish_reason}
                if outputs.logprobs is not None:
                    choice["logprobs"] = self._logprob_entries(
                        c.produced, outputs.logprobs[p * n + i])
                out.append(choice)
            results.append({"text": choices[0].text, "finish_reason": choices[0].finish_reason,
                            "choices": out})
        return results

    def _logprob_entries(self, produced: list[int],
                         row: list[tuple[float, list[tuple[int, float]]]]) -> list[dict[str, Any]]:
        """OpenAI's chat logprobs content: token text, logprob, UTF-8 bytes, top alternatives."""
        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            text = self.decode([token_id])
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        return [{**entry(token_id, lp), "top_logprobs": [entry(t, tl) for t, tl in top]}
                for token_id, (lp, top) in zip(produced, row, strict=False)]

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
            return _Choice(text[: min(hits)], "stop", tokens, produced)
        if ended_by_eos:
            return _Choice(text, "eos", tokens, produced)
        # Stopped before the limit without eos: a stop string that began inside the prompt.
        if tokens < max_new:
            return _Choice(text, "stop", tokens, produced)
        return _Choice(text, "length", tokens, produced)


def _token_logprobs(new: torch.Tensor, logits: tuple[torch.Tensor, ...], top: int
                    ) -> list[list[tuple[float, list[tuple[int, float]]]]]:
    steps = torch.stack([step.float() for step in logits], dim=1).log_softmax(dim=-1)
    chosen = steps.gather(-1, new[:, : steps.shape[1]].unsqueeze(-1)).squeeze(-1).cpu().tolist()
    best = steps.topk(top, dim=-1) if top else None
    out = []
    for r, row in enumerate(chosen):
        alts: list[list[tuple[int, float]]] = [[] for _ in row]
        if best is not None:
            ids, values = best.indices[r].cpu().tolist(), best.values[r].cpu().tolist()
            alts = [list(zip(i, v, strict=True)) for i, v in zip(ids, values, strict=True)]
        out.append(list(zip(row, alts, strict=True)))
    return out


class _OpenAIPenalties:
    """OpenAI's presence and frequency penalties over the tokens generated so far:
    logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty."""

    def __init__(self, prompt_width: int, presence: float, frequency: float) -> None:
        self.prompt_width, self.presence, self.frequency = prompt_width, presence, frequency

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_width:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence
