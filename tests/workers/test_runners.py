"""Runners and the batched engine on the real tiny models: order, counts, params, failures."""

from __future__ import annotations

from typing import Any

import pytest

from nightowl.common.enums import ErrorCode, ItemStatus, TaskKind
from nightowl.common.errors import InvalidParams
from nightowl.common.items import ItemOutcome
from nightowl_workers.engine import WorkItem, run_batched
from nightowl_workers.runners import RUNNERS, Runner, make_runner
from nightowl_workers.runners.sentiment import SentimentRunner

REVIEWS = [
    ("this movie was wonderful", "positive"),
    ("the food was terrible", "negative"),
    ("I really loved this book, it was great", "positive"),
    ("what a boring show", "negative"),
    ("the hotel is absolutely lovely!", "positive"),
    ("I hated the service", "negative"),
]


def collect(batches: Any) -> dict[int, ItemOutcome]:
    results: dict[int, ItemOutcome] = {}
    for batch in batches:
        for result in batch:
            assert result.key not in results, "each item is reported once"
            results[result.key] = result
    return results


# --- runners ---------------------------------------------------------------------------


def test_registry_has_one_runner_per_kind(tiny_runners: dict[TaskKind, Runner]) -> None:
    assert set(RUNNERS) == set(TaskKind)
    for kind, runner in tiny_runners.items():
        assert isinstance(runner, RUNNERS[kind]) and runner.kind is kind
        again = make_runner(kind, runner.model, runner.tokenizer, runner.device)
        assert type(again) is type(runner)


def test_max_input_tokens_come_from_the_model(tiny_runners: dict[TaskKind, Runner]) -> None:
    # 256 positions; generation keeps one free for the first new token.
    assert tiny_runners[TaskKind.SENTIMENT].max_input_tokens == 256
    assert tiny_runners[TaskKind.TRANSLATE].max_input_tokens == 256
    assert tiny_runners[TaskKind.GENERATE].max_input_tokens == 255


def test_sentiment_keeps_input_order_and_counts_tokens(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.SENTIMENT]
    texts = [text for text, _ in REVIEWS]
    results = runner.run(texts, {"all_scores": True})
    assert [out["label"] for out, _, _ in results] == [label for _, label in REVIEWS]
    assert [n_in for _, n_in, _ in results] == runner.count_tokens(texts)
    assert all(n_out == 0 for _, _, n_out in results)
    for out, _, _ in results:
        assert set(out["scores"]) == {"negative", "positive"}
        assert sum(out["scores"].values()) == pytest.approx(1.0)
        assert out["score"] == max(out["scores"].values())
    plain, _, _ = runner.run(texts[:1], {})[0]
    assert set(plain) == {"label", "score"}


def test_translation_keeps_input_order(tiny_runners: dict[TaskKind, Runner]) -> None:
    runner = tiny_runners[TaskKind.TRANSLATE]
    nouns = {"dog": "hund", "cat": "katze", "house": "haus", "tree": "baum", "car": "auto"}
    texts = [
        f"the {noun} is {adj}"
        for noun, adj in zip(nouns, ["big", "old", "new", "green", "red"], strict=True)
    ]
    results = runner.run(texts, {"num_beams": 2})
    for (out, _, n_out), german in zip(results, nouns.values(), strict=True):
        assert german in out["translation"].split()
        assert n_out >= len(out["translation"].split())
    assert [n_in for _, n_in, _ in results] == runner.count_tokens(texts)


def test_generation_batched_matches_one_by_one(tiny_runners: dict[TaskKind, Runner]) -> None:
    """Left padding must not change what a prompt gets: the batch gives the same texts."""
    runner = tiny_runners[TaskKind.GENERATE]
    prompts = ["The old man", "My friend walked to the market and then", "A small bird"]
    params = {"max_new_tokens": 8}
    batched = runner.run(prompts, params)
    alone = [runner.run([p], params)[0] for p in prompts]
    assert [out["text"] for out, _, _ in batched] == [out["text"] for out, _, _ in alone]
    assert [n_in for _, n_in, _ in batched] == runner.count_tokens(prompts)


@pytest.mark.parametrize("kind", list(TaskKind))
def test_encoded_texts_reach_the_model_exactly_as_the_tokenizer_pads_them(
    kind: TaskKind, tiny_runners: dict[TaskKind, Runner]
) -> None:
    """The engine tokenizes once and hands the ids to `run`: padding side, mask, type ids and
    the outputs must be those of the tokenizer's own call."""
    runner = tiny_runners[kind]
    texts = ["The old man", "My friend walked to the market and then back home", "a"]
    encoded = runner.encode(texts)
    expected = runner.preprocess(texts, runner.sanitize_params({}), truncate=False)
    collated = runner.collate(encoded, truncate=False)
    assert collated is not None
    assert set(collated.keys()) == set(expected.keys())
    for name in expected:
        assert collated[name].tolist() == expected[name].tolist(), name
    assert [ids for ids, _ in encoded] == runner.tokenizer(texts)["input_ids"]
    assert runner.run(texts, {}, encoded=encoded) == runner.run(texts, {})


def test_encoded_text_over_the_limit_is_truncated_by_the_tokenizer(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.SENTIMENT]
    texts = ["wonderful " * 400, "the food was terrible"]
    encoded = runner.encode(texts)
    assert len(encoded[0][0]) > runner.max_input_tokens
    assert runner.collate(encoded, truncate=True) is None  # the tokenizer places [SEP]
    with_ids = runner.run(texts, {}, truncate=True, encoded=encoded)
    assert with_ids == runner.run(texts, {}, truncate=True)
    assert with_ids[0][1] == runner.max_input_tokens


def test_generation_length_and_token_counts(tiny_runners: dict[TaskKind, Runner]) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    ((out, tokens_in, tokens_out),) = runner.run(["The old man"], {"max_new_tokens": 2})
    assert tokens_in == 3
    assert out["finish_reason"] == "length"
    assert tokens_out == 2
    assert not out["text"].startswith("The old man"), "continuation only, never the prompt"
    assert out["choices"] == [{"text": out["text"], "finish_reason": "length"}]


def test_generation_stop_strings_cut_the_text(tiny_runners: dict[TaskKind, Runner]) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    prompt = ["My friend walked to the"]
    ((full, _, _),) = runner.run(prompt, {"max_new_tokens": 30})
    assert " the" in full["text"]
    ((cut, _, _),) = runner.run(prompt, {"max_new_tokens": 30, "stop": [" the", "zzz"]})
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == full["text"][: full["text"].index(" the")]
    ((single, _, _),) = runner.run(prompt, {"max_new_tokens": 30, "stop": " the"})
    assert single == cut


def test_generation_several_sequences_seeded(tiny_runners: dict[TaskKind, Runner]) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    params = {"max_new_tokens": 12, "num_return_sequences": 3, "seed": 123, "top_k": 50}
    first = runner.run(["The teacher", "A quiet girl"], params)
    second = runner.run(["The teacher", "A quiet girl"], params)
    assert first == second, "the same seed gives the same samples"
    for out, _, tokens_out in first:
        assert len(out["choices"]) == 3
        assert out["text"] == out["choices"][0]["text"]
        assert all(c["finish_reason"] in {"eos", "length"} for c in out["choices"])
        assert 3 <= tokens_out <= 3 * 12
    different = runner.run(["The teacher", "A quiet girl"], {**params, "seed": 124})
    assert different != first


@pytest.mark.parametrize(
    ("kind", "params", "field", "fragment"),
    [
        (TaskKind.GENERATE, {"max_new_tokens": 0}, "max_new_tokens", "between 1 and 255"),
        (TaskKind.GENERATE, {"max_new_tokens": 10_000}, "max_new_tokens", "between 1 and 255"),
        (TaskKind.GENERATE, {"max_new_tokens": True}, "max_new_tokens", "integer"),
        (TaskKind.GENERATE, {"temperature": 0}, "temperature", ">= 0.01"),
        (TaskKind.GENERATE, {"top_p": 1.5}, "top_p", "(0, 1]"),
        (TaskKind.GENERATE, {"top_k": -1}, "top_k", "between 0"),
        (TaskKind.GENERATE, {"do_sample": "yes"}, "do_sample", "true or false"),
        (TaskKind.GENERATE, {"seed": "x"}, "seed", "integer"),
        (TaskKind.GENERATE, {"num_return_sequences": 9}, "num_return_sequences", "1 and 8"),
        (
            TaskKind.GENERATE,
            {"num_return_sequences": 2, "do_sample": False},
            "num_return_sequences",
            "do_sample=true",
        ),
        (TaskKind.GENERATE, {"stop": ""}, "stop", "non-empty"),
        (TaskKind.GENERATE, {"stop": ["ok", 3]}, "stop", "strings"),
        (TaskKind.GENERATE, {"temprature": 0.5}, "temprature", "unknown"),
        (TaskKind.TRANSLATE, {"num_beams": 0}, "num_beams", "between 1 and 8"),
        (TaskKind.TRANSLATE, {"max_new_tokens": 999}, "max_new_tokens", "between 1 and 256"),
        (TaskKind.SENTIMENT, {"all_scores": 1}, "all_scores", "true or false"),
        (TaskKind.SENTIMENT, {"top_k": 1}, "top_k", "allowed: all_scores"),
    ],
)
def test_bad_params_name_the_field_and_the_range(
    tiny_runners: dict[TaskKind, Runner],
    kind: TaskKind,
    params: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    with pytest.raises(InvalidParams) as caught:
        tiny_runners[kind].sanitize_params(params)
    message = str(caught.value.args[0])
    assert field in message and fragment in message, message


@pytest.mark.parametrize("kind", list(TaskKind))
def test_sanitize_fills_defaults_and_is_idempotent(
    tiny_runners: dict[TaskKind, Runner], kind: TaskKind
) -> None:
    runner = tiny_runners[kind]
    clean = runner.sanitize_params({})
    assert runner.sanitize_params(clean) == clean
    if kind is TaskKind.GENERATE:
        assert clean["max_new_tokens"] == 32 and clean["do_sample"] is False
        assert runner.sanitize_params({"temperature": 0.7})["do_sample"] is True
        assert runner.sanitize_params({"stop": "."})["stop"] == ["."]


# --- engine ----------------------------------------------------------------------------


def test_engine_reports_every_item_once_with_errors_as_rows(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    items = [WorkItem(i, f"The old man {i}", {"max_new_tokens": 3}) for i in range(7)]
    items += [
        WorkItem(100, "The cat", {"max_new_tokens": 3, "temperature": -2}),
        WorkItem(101, "The cat", {"max_new_tokens": 3, "colour": "red"}),
        WorkItem(102, "", {}),
        WorkItem(103, "The dog", {}),  # different params: its own group
    ]
    results = collect(
        run_batched(runner, items, max_batch_tokens=16, max_batch_size=3, truncate=False)
    )
    assert set(results) == {item.key for item in items}
    for key in [*range(7), 103]:
        assert results[key].error_code is None and results[key].output is not None
        assert results[key].tokens_in > 0 and results[key].tokens_out > 0
    assert results[100].error_code is ErrorCode.INVALID_INPUT
    assert "temperature must be a number >= 0.01" in (results[100].error_message or "")
    assert results[101].error_code is ErrorCode.INVALID_INPUT
    assert "'colour'" in (results[101].error_message or "")
    assert results[102].error_code is ErrorCode.INVALID_INPUT


def test_items_with_equal_params_share_micro_batches_list_valued_params_too(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    base = tiny_runners[TaskKind.GENERATE]
    calls: list[tuple[int, list[str]]] = []

    class Recording(type(base)):  # type: ignore[misc]
        def run(self, texts: list[str], params: Any, truncate: bool = False,
                encoded: Any = None) -> list[tuple[dict[str, Any], int, int]]:
            calls.append((len(texts), self.sanitize_params(params)["stop"]))
            return super().run(texts, params, truncate, encoded)

    runner = Recording(base.model, base.tokenizer, base.device)
    items = [WorkItem(i, f"The old man {i}", {"stop": ["."], "max_new_tokens": 2})
             for i in range(3)]
    items += [WorkItem(10 + i, f"A cat {i}", {"max_new_tokens": 2, "stop": ["!"]})
              for i in range(2)]
    items += [WorkItem(20, "A dog", {"max_new_tokens": 2}),
              WorkItem(21, "A bird", {"max_new_tokens": 2, "stop": []})]
    results = collect(
        run_batched(runner, items, max_batch_tokens=10_000, max_batch_size=16, truncate=False)
    )
    assert set(results) == {item.key for item in items}
    assert all(r.error_code is None for r in results.values())
    # No stop and an empty stop list sanitize alike, so those two share a batch as well.
    assert sorted(calls) == [(2, []), (2, ["!"]), (3, ["."])]


def test_too_long_is_refused_unless_truncating(tiny_runners: dict[TaskKind, Runner]) -> None:
    runner = tiny_runners[TaskKind.SENTIMENT]
    long_text = "this movie was wonderful " * 80
    (length,) = runner.count_tokens([long_text])
    assert length > runner.max_input_tokens
    items = [WorkItem(1, long_text, {}), WorkItem(2, "the food was terrible", {})]

    refused = collect(
        run_batched(runner, items, max_batch_tokens=4096, max_batch_size=8, truncate=False)
    )
    assert refused[1].error_code is ErrorCode.TOO_LONG
    assert refused[1].error_message == (
        f"text is {length} tokens, the model accepts 256; shorten it or resubmit with --truncate"
    )
    assert refused[2].output is not None and refused[2].output["label"] == "negative"

    truncated = collect(
        run_batched(runner, items, max_batch_tokens=4096, max_batch_size=8, truncate=True)
    )
    assert truncated[1].output is not None and truncated[1].output["label"] == "positive"
    assert truncated[1].tokens_in == 256


def test_generation_truncates_long_prompts_from_the_left(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    prompt = "The old man walked to the river. " * 40
    ((out, tokens_in, tokens_out),) = runner.run([prompt], {"max_new_tokens": 20}, truncate=True)
    assert tokens_in == runner.max_input_tokens
    # Only one position is left, so the continuation is clamped to it.
    assert tokens_out == 1 and out["finish_reason"] in {"length", "eos"}


def test_should_stop_is_asked_before_each_micro_batch(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    runner = tiny_runners[TaskKind.SENTIMENT]
    items = [WorkItem(i, text, {}) for i, (text, _) in enumerate(REVIEWS)]
    asked: list[int] = []

    def stop_after_first() -> ItemStatus | None:
        asked.append(1)
        return ItemStatus.CANCELLED if len(asked) > 1 else None

    batches = list(
        run_batched(
            runner,
            items,
            max_batch_tokens=10_000,
            max_batch_size=2,
            truncate=False,
            should_stop=stop_after_first,
        )
    )
    ran, stopped = batches
    assert len(asked) == 2
    assert len(ran) == 2 and all(r.status is ItemStatus.SUCCEEDED for r in ran)
    # Every item not run comes back once, as stopped before it ran.
    assert sorted(r.key for r in ran + stopped) == [item.key for item in items]
    assert {(r.status, r.error_code, r.error_message) for r in stopped} == {
        (ItemStatus.CANCELLED, ErrorCode.CANCELLED, "job cancelled before this item ran")}


class FlakyRunner(SentimentRunner):
    """A real sentiment runner that fails like a GPU would: too many padded tokens run out of
    memory, and one text crashes the model."""

    oom_above: int
    calls: list[tuple[int, bool]]  # (batch size, ran out of memory)

    def run(
        self, texts: list[str], params: Any, truncate: bool = False, encoded: Any = None
    ) -> list[tuple[dict[str, Any], int, int]]:
        padded = len(texts) * max(self.count_tokens(texts))
        self.calls.append((len(texts), padded > self.oom_above))
        if padded > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if any("boom" in text for text in texts):
            raise ValueError("boom: this text breaks the model")
        return super().run(texts, params, truncate, encoded)


def flaky(tiny_runners: dict[TaskKind, Runner], oom_above: int) -> FlakyRunner:
    base = tiny_runners[TaskKind.SENTIMENT]
    runner = FlakyRunner(base.model, base.tokenizer, base.device)
    runner.oom_above, runner.calls = oom_above, []
    return runner


def test_out_of_memory_halves_and_a_crashing_item_fails_alone(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    texts = [text for text, _ in REVIEWS] + ["boom goes the movie"]
    longest = max(tiny_runners[TaskKind.SENTIMENT].count_tokens(texts))
    runner = flaky(tiny_runners, oom_above=2 * longest)
    items = [WorkItem(i, text, {}) for i, text in enumerate(texts)]
    results = collect(
        run_batched(runner, items, max_batch_tokens=10_000, max_batch_size=16, truncate=False)
    )
    assert runner.calls[0] == (7, True)
    assert max(size for size, oom in runner.calls if not oom) <= 2
    assert results[6].error_code is ErrorCode.MODEL_ERROR
    assert results[6].error_message == "ValueError: boom: this text breaks the model"
    for i, (_, label) in enumerate(REVIEWS):
        output = results[i].output
        assert output is not None and output["label"] == label


def test_after_out_of_memory_later_micro_batches_are_split_up_front(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    text = "this movie was wonderful"
    (length,) = tiny_runners[TaskKind.SENTIMENT].count_tokens([text])
    runner = flaky(tiny_runners, oom_above=2 * length)
    items = [WorkItem(i, text, {}) for i in range(12)]
    batches = list(
        run_batched(runner, items, max_batch_tokens=10_000, max_batch_size=4, truncate=False)
    )
    assert [len(b) for b in batches] == [4, 4, 4]
    assert all(r.error_code is None for b in batches for r in b)
    # Only the first micro-batch runs out of memory; the next two start at the lower budget.
    assert runner.calls == [(4, True)] + [(2, False)] * 6


def test_an_item_that_alone_runs_out_of_memory_becomes_an_error_row(
    tiny_runners: dict[TaskKind, Runner],
) -> None:
    base = tiny_runners[TaskKind.SENTIMENT]

    class AlwaysOOM(SentimentRunner):
        def run(
            self, texts: list[str], params: Any, truncate: bool = False, encoded: Any = None
        ) -> list[tuple[dict[str, Any], int, int]]:
            raise RuntimeError("out of memory")

    runner = AlwaysOOM(base.model, base.tokenizer, base.device)
    items = [WorkItem(1, "a", {}), WorkItem(2, "b", {})]
    results = collect(
        run_batched(runner, items, max_batch_tokens=100, max_batch_size=4, truncate=False)
    )
    assert {r.error_code for r in results.values()} == {ErrorCode.MODEL_ERROR}
    assert "out of memory on this text alone" in (results[1].error_message or "")
