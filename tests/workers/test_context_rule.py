"""A text right at the model's context limit gets the same verdict at submit (the model's files,
torch-free) as in the worker (the loaded model): one rule, so nothing passes one and fails the
other."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightowl.common.enums import ErrorCode, TaskKind
from nightowl.common.tokens import length_checker
from nightowl_workers.engine import WorkItem, run_batched
from nightowl_workers.runners import Runner


def _text_of(runner: Runner, tokens: int) -> str:
    """A text the model reads as exactly `tokens` tokens."""
    words = 1
    while runner.count_tokens([" ".join(["river"] * words)])[0] < tokens:
        words += 1
    text = " ".join(["river"] * words)
    assert runner.count_tokens([text]) == [tokens]
    return text


@pytest.mark.parametrize(("kind", "model", "params", "room"), [
    # A generator keeps one of its 256 positions for the first new token.
    (TaskKind.GENERATE, TaskKind.GENERATE, {"max_new_tokens": 5}, 255),
    (TaskKind.SENTIMENT, TaskKind.SENTIMENT, {}, 256),
    (TaskKind.EMBED, TaskKind.SENTIMENT, {}, 256),
])
def test_the_boundary_reads_the_same_at_submit_and_in_the_worker(
    tiny_runners: dict[TaskKind, Runner], tiny_models: dict[TaskKind, Path],
    kind: TaskKind, model: TaskKind, params: dict[str, int], room: int,
) -> None:
    runner = tiny_runners[kind]
    at, over = _text_of(runner, room), _text_of(runner, room + 1)
    # Callers that name the kind, and those that leave the rule to the model's own config.
    for check in (length_checker(str(tiny_models[model]), kind),
                  length_checker(str(tiny_models[model]))):
        assert check is not None
        assert check(at) is None
        assert check(over) == (f"text is {room + 1} tokens, the model accepts {room}; "
                               "shorten it or resubmit with --truncate")

    results = {r.key: r for batch in run_batched(
        runner, [WorkItem(1, at, params), WorkItem(2, over, params)],
        max_batch_tokens=4096, max_batch_size=8, truncate=False) for r in batch}
    assert results[1].error_code is None and results[1].output is not None
    assert results[1].tokens_in == room
    assert results[2].error_code is ErrorCode.TOO_LONG
    assert results[2].error_message == check(over)
    if kind is TaskKind.GENERATE:
        # The continuation is clamped to the one position left.
        assert results[1].tokens_out == 1


def test_an_openai_batch_line_without_max_tokens_gets_the_workers_verdict(
    tiny_runners: dict[TaskKind, Runner], tiny_models: dict[TaskKind, Path],
) -> None:
    """A batch line is checked at create by OpenAI's wording of the same rule: a prompt the
    worker would run passes, one it would refuse is context_length_exceeded."""
    from types import SimpleNamespace

    from nightowl.openai.item_input import request_input
    from nightowl.openai.lines import Request
    from nightowl.openai.problems import LineProblem

    runner = tiny_runners[TaskKind.GENERATE]
    version = SimpleNamespace(source=str(tiny_models[TaskKind.GENERATE]))
    at, over = _text_of(runner, 255), _text_of(runner, 256)

    def line(text: str, max_tokens: int | None = None) -> Request:
        return Request("m", text=text, max_tokens=max_tokens)

    assert request_input(line(at), TaskKind.GENERATE, version, None)  # type: ignore[arg-type]
    with pytest.raises(LineProblem) as refused:
        request_input(line(over), TaskKind.GENERATE, version, None)  # type: ignore[arg-type]
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.param == "prompt"
    assert "needs 257 (256 in the prompt, at least 1 in the completion)" in refused.value.message
    with pytest.raises(LineProblem) as asked:
        request_input(line(at, max_tokens=2), TaskKind.GENERATE, version, None)  # type: ignore[arg-type]
    assert asked.value.param == "max_tokens"
    results = list(run_batched(runner, [WorkItem(1, over, {})], max_batch_tokens=4096,
                               max_batch_size=8, truncate=False))
    assert results[0][0].error_code is ErrorCode.TOO_LONG
