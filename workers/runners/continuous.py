"""Continuous batching for generation: finished sequences leave, their slots refill at once.

Static batching pads a micro-batch to its longest prompt and keeps every row until the longest
answer is done. transformers' continuous-batching generate (paged attention) schedules tokens,
not rows, so short answers stop costing the long ones their wait. It only covers what it does
exactly like `generate()`: greedy decoding, one answer, no stop strings, penalties or
logprobs; anything else keeps the static path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedModel

Batching = Literal["auto", "static", "continuous"]


def wanted(setting: Batching, device: torch.device, params: dict[str, Any]) -> bool:
    """Whether this micro-batch goes through continuous batching.

    "auto" picks it on CUDA only: on a CPU there is no kernel time for it to save, and its
    scheduler thread and paged cache cost more than the padding they avoid."""
    if setting == "static" or (setting == "auto" and device.type != "cuda"):
        return False
    return eligible(params) and available()


def available() -> bool:
    """Whether the installed transformers has the API this module calls (5.x releases
    before it fall back to static batches rather than fail the job)."""
    import transformers

    return hasattr(transformers, "ContinuousBatchingConfig")


def eligible(params: dict[str, Any]) -> bool:
    return (
        not params["do_sample"]
        and params["num_return_sequences"] == 1
        and not params["stop"]
        and not params.get("logprobs")
        and params.get("repetition_penalty") is None
        and not params.get("presence_penalty")
        and not params.get("frequency_penalty")
    )


def generate(model: PreTrainedModel, inputs: BatchEncoding, max_new_tokens: int,
             pad_id: int | None) -> list[list[int]]:
    """New token ids per prompt, in input order, each ending at its eos (included) or at
    max_new_tokens; padded rows are unpadded first (the paged cache needs no padding)."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    ids = inputs["input_ids"].cpu()
    mask = inputs["attention_mask"].cpu().bool()
    prompts = [row[keep].tolist() for row, keep in zip(ids, mask, strict=True)]
    base = model.generation_config
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        eos_token_id=base.eos_token_id, pad_token_id=pad_id)
    cuda = model.device.type == "cuda"
    # On a CPU the defaults size the paged cache from free memory (minutes to allocate);
    # a cache sized to these prompts is enough.
    longest = max(len(p) for p in prompts) + max_new_tokens
    batching = None if cuda else ContinuousBatchingConfig(
        page_size=16, num_blocks=max(16, len(prompts) * (longest // 16 + 2)),
        max_batch_tokens=max(256, longest), use_cuda_graph=False)
    generate_batch: Any = model.generate_batch
    outputs = generate_batch(inputs=prompts, generation_config=config,
                             continuous_batching_config=batching, warmup=False)
    ordered = sorted(outputs.values(), key=lambda o: int(str(o.request_id).rsplit("_", 1)[1]))
    if len(ordered) != len(prompts) or any(o.error for o in ordered):
        errors = [str(o.error) for o in ordered if o.error]
        raise RuntimeError(f"continuous batching returned {len(ordered)} of {len(prompts)} "
                           f"answers ({'; '.join(errors[:3]) or 'no error given'})")
    return [list(o.generated_tokens)[:max_new_tokens] for o in ordered]
