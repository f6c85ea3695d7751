"""Overlapping host work with the forward, and continuous batching, must not change outputs."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from typing import Any

import pytest

from nightowl.common.enums import ItemStatus, TaskKind
from nightowl.common.items import ItemOutcome
from nightowl_workers.engine import WorkItem, run_batched
from nightowl_workers.runners import GenerationRunner, Runner, SentimentRunner
from nightowl_workers.runners.base import Prepared


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "old", "man", "walked", "to", "a", "market", "and", "then", "back", "home",
             "under", "rain", "with", "friends"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def _undated(batches: list[list[ItemOutcome]]) -> dict[int, ItemOutcome]:
    """The outcomes without their timestamps, which differ from run to run."""
    return {k: replace(r, started_at=None, finished_at=None) for k, r in _by_key(batches).items()}


def _by_key(batches: list[list[ItemOutcome]]) -> dict[int, ItemOutcome]:
    return {r.key: r for batch in batches for r in batch}


@pytest.mark.parametrize("kind", [TaskKind.SENTIMENT, TaskKind.TRANSLATE, TaskKind.GENERATE])
def test_prefetching_gives_the_same_results_in_the_same_batches(
    kind: TaskKind, tiny_runners: dict[TaskKind, Runner]
) -> None:
    runner = tiny_runners[kind]
    params: dict[str, Any] = {} if kind is TaskKind.SENTIMENT else {"max_new_tokens": 6}
    # Two param groups and a bad parameter: groups, rejections and many micro-batches.
    items = [WorkItem(i, t, params if i % 3 else {**params, "max_new_tokens": 4}
                      if kind is not TaskKind.SENTIMENT else params)
             for i, t in enumerate(_texts(40))]
    items.append(WorkItem(99, "hello", {"bogus": 1}))
    kwargs: dict[str, Any] = {"max_batch_tokens": 96, "max_batch_size": 6, "truncate": False}
    plain = list(run_batched(runner, items, prefetch=False, **kwargs))
    ahead = list(run_batched(runner, items, prefetch=True, **kwargs))
    assert [[r.key for r in b] for b in ahead] == [[r.key for r in b] for b in plain]
    assert _undated(ahead) == _undated(plain)
    assert len(plain) > 4 and _by_key(plain)[99].error_code is not None
    # The helper thread ends with the call: none is left behind in a worker between chunks.
    assert not [t for t in threading.enumerate() if t.name.startswith("nightowl-prefetch")]


def test_prefetch_stops_when_asked_and_leaves_no_thread(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.SENTIMENT]
    items = [WorkItem(i, t, {}) for i, t in enumerate(_texts(30, seed=1))]
    asked = []

    def stop() -> ItemStatus | None:
        asked.append(1)
        return ItemStatus.EXPIRED if len(asked) > 2 else None

    got = list(run_batched(runner, items, max_batch_tokens=64, max_batch_size=4,
                           truncate=False, should_stop=stop, prefetch=True))
    *ran, stopped = got
    assert len(ran) == 2 and all(r.status is ItemStatus.SUCCEEDED for b in ran for r in b)
    assert {r.status for r in stopped} == {ItemStatus.EXPIRED}
    assert sorted(r.key for b in got for r in b) == list(range(len(items)))
    assert not [t for t in threading.enumerate() if t.name.startswith("nightowl-prefetch")]


class _OomAbove(SentimentRunner):
    """Runs out of memory on a prepared batch wider than `limit` padded tokens."""

    limit = 0
    seen: list[int]

    def complete(self, prepared: Prepared) -> list[tuple[dict[str, Any], int, int]]:
        size = int(prepared.inputs["input_ids"].numel())
        self.seen.append(size)
        if size > self.limit:
            raise RuntimeError("CUDA out of memory (simulated by the test)")
        return super().complete(prepared)


def test_out_of_memory_on_a_prepared_batch_halves_and_every_item_succeeds(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    base = tiny_runners[TaskKind.SENTIMENT]
    runner = _OomAbove(base.model, base.tokenizer, base.device)
    runner.seen = []
    text = "this movie was wonderful"
    (length,) = runner.count_tokens([text])
    runner.limit = 2 * length
    items = [WorkItem(i, text, {}) for i in range(12)]
    batches = list(run_batched(runner, items, max_batch_tokens=10_000, max_batch_size=4,
                               truncate=False, prefetch=True))
    expected = base.run([text], {})[0][0]
    assert [len(b) for b in batches] == [4, 4, 4]
    assert all(r.output == expected for b in batches for r in b)
    # The first batch (prepared at full size) fails once; the ones prepared ahead of it at
    # the old size are thrown away, and the rest run at the halved size from the start.
    assert runner.seen[0] == 4 * length and max(runner.seen[1:]) <= 2 * length


def test_a_failing_item_is_still_found_when_its_batch_was_prepared_ahead(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    # Sanitized params are grouped, so a bad item fails at sanitize: reported, neighbours run.
    items = [WorkItem(i, t, {"max_new_tokens": 3}) for i, t in enumerate(_texts(12, seed=2))]
    items[5] = WorkItem(5, "hello", {"max_new_tokens": "lots"})
    results = _by_key(list(run_batched(runner, items, max_batch_tokens=64, max_batch_size=3,
                                       truncate=False, prefetch=True)))
    assert results[5].error_code is not None and "max_new_tokens" in (results[5].error_message
                                                                      or "")
    assert all(results[i].output is not None for i in results if i != 5)


def test_continuous_batching_matches_static_greedy_outputs(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    assert isinstance(runner, GenerationRunner)
    # Prompts of very different lengths, padded together on the static path.
    prompts = ["a", "the old man walked to the market and then back home under the rain",
               "my friend", "under rain with friends the old man"]
    params = {"max_new_tokens": 10}
    runner.batching = "static"
    try:
        static = runner.run(prompts, params)
        runner.batching = "continuous"
        paged = runner.run(prompts, params)
        # Not eligible (sampling): the static path answers, whatever the setting says.
        sampled = runner.run(prompts[:1], {"max_new_tokens": 4, "temperature": 0.7, "seed": 3})
    finally:
        runner.batching = None
    assert paged == static
    assert all(out["finish_reason"] in ("eos", "length") for out, _, _ in paged)
    assert sampled[0][2] > 0
