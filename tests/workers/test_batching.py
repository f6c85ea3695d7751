"""plan_micro_batches: the padding-aware token budget that decides how much runs at once."""

from __future__ import annotations

import random

import pytest

from nightowl_workers.batching import plan_micro_batches


def check_plan(lengths: list[int], plan: list[list[int]], budget: int, size: int) -> None:
    flat = [i for batch in plan for i in batch]
    assert sorted(flat) == list(range(len(lengths))), "every index exactly once"
    # Longest first, across the whole plan, so each batch pads as little as possible.
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(ordered, reverse=True)
    for batch in plan:
        assert 1 <= len(batch) <= size
        widest = max(max(lengths[i] for i in batch), 1)
        if len(batch) > 1:
            assert len(batch) * widest <= budget, (batch, [lengths[i] for i in batch])


@pytest.mark.parametrize("seed", range(25))
def test_random_plans_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [
        rng.choice([rng.randint(1, 40), rng.randint(1, 600)]) for _ in range(rng.randint(0, 120))
    ]
    budget = rng.choice([64, 256, 1000, 4096])
    size = rng.choice([1, 3, 8, 64])
    check_plan(
        lengths,
        plan_micro_batches(lengths, max_batch_tokens=budget, max_batch_size=size),
        budget,
        size,
    )


def test_budget_counts_padding_not_the_sum_of_lengths() -> None:
    # 100 + 10 + 10 = 120 tokens fit in 200, but padded to 100 each the three need 300.
    plan = plan_micro_batches([10, 100, 10], max_batch_tokens=200, max_batch_size=10)
    assert plan == [[1, 0], [2]]


def test_item_over_the_budget_gets_a_batch_of_its_own() -> None:
    plan = plan_micro_batches([5, 900, 5, 5], max_batch_tokens=100, max_batch_size=10)
    assert plan[0] == [1]
    assert sorted(plan[1]) == [0, 2, 3]


def test_batch_size_caps_short_items() -> None:
    plan = plan_micro_batches([3] * 10, max_batch_tokens=10_000, max_batch_size=4)
    assert [len(b) for b in plan] == [4, 4, 2]


def test_equal_lengths_keep_input_order() -> None:
    assert plan_micro_batches([7, 7, 7], max_batch_tokens=100, max_batch_size=2) == [[0, 1], [2]]


def test_empty_input_plans_nothing() -> None:
    assert plan_micro_batches([], max_batch_tokens=100, max_batch_size=4) == []


def test_zero_length_items_still_count_as_one_token() -> None:
    plan = plan_micro_batches([0, 0, 0], max_batch_tokens=2, max_batch_size=8)
    assert [len(b) for b in plan] == [2, 1]


@pytest.mark.parametrize(("budget", "size"), [(0, 4), (100, 0)])
def test_nonsense_limits_are_refused(budget: int, size: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_micro_batches([1, 2], max_batch_tokens=budget, max_batch_size=size)
