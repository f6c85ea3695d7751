"""Token-budget micro-batching (TEI style), pure Python so it can be tested without torch."""

from __future__ import annotations

from collections.abc import Sequence


def plan_micro_batches(
    lengths: Sequence[int], *, max_batch_tokens: int, max_batch_size: int
) -> list[list[int]]:
    """Group indexes of `lengths` into micro-batches, longest items first.

    Each batch is padded to its longest item, so the budget is counted as
    `len(batch) * max(lengths in batch)`, not the sum of lengths. An item that alone exceeds
    `max_batch_tokens` gets a batch of its own rather than being dropped: refusing over-long
    texts is the caller's decision (too_long vs truncate), not the batcher's.
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    # Stable sort: equal lengths keep input order, so plans are reproducible.
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    # Longest first means the first item of a batch sets its padded width.
    width = 0
    for index in order:
        length = max(lengths[index], 1)
        if current and (
            len(current) + 1 > max_batch_size or (len(current) + 1) * width > max_batch_tokens
        ):
            batches.append(current)
            current = []
        if not current:
            width = length
        current.append(index)
    if current:
        batches.append(current)
    return batches
