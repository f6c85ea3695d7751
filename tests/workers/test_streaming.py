"""Text as it is generated, through the engine on the real tiny generator: each followed row's
pieces add up to (a prefix of) its final text, never past a stop string; following changes no
result; a row whose listener stops ends early."""

from __future__ import annotations

from typing import Any

from nightowl.common.enums import TaskKind
from nightowl_workers.engine import WorkItem, run_batched
from nightowl_workers.runners import Runner


class Pieces:
    def __init__(self, stop_after: int | None = None) -> None:
        self.texts: dict[int, list[str]] = {}
        self.steps = 0
        self.stop_after = stop_after

    def text(self, choice: int, delta: str) -> None:
        self.texts.setdefault(choice, []).append(delta)

    def stopped(self) -> bool:
        return self.stop_after is not None and self.steps >= self.stop_after

    def step(self) -> None:
        self.steps += 1


def _run(runner: Runner, items: list[WorkItem]) -> dict[int, Any]:
    out = {}
    for batch in run_batched(runner, items, max_batch_tokens=4096, max_batch_size=8,
                             truncate=False, prefetch=False):
        for o in batch:
            out[o.key] = o
    return out


def test_pieces_add_up_to_the_answer_and_stop_before_a_stop_string(
        tiny_runners: dict[TaskKind, Runner]) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    sampled = {"max_new_tokens": 24, "num_return_sequences": 2, "seed": 5, "temperature": 2.0}
    cut = {"max_new_tokens": 30, "stop": [" the"]}
    followed = [Pieces(), Pieces()]
    plain = _run(runner, [WorkItem(0, "The teacher", sampled),
                          WorkItem(1, "My friend walked to the", cut)])
    streamed = _run(runner, [WorkItem(0, "The teacher", sampled, followed[0]),
                             WorkItem(1, "My friend walked to the", cut, followed[1])])
    assert {k: o.output for k, o in streamed.items()} == {k: o.output for k, o in plain.items()}
    for key, pieces in enumerate(followed):
        choices = streamed[key].output["choices"]
        assert sorted(pieces.texts) == list(range(len(choices)))
        for i, choice in enumerate(choices):
            sent = "".join(pieces.texts[i])
            assert choice["text"].startswith(sent), (sent, choice["text"])
    assert " the" not in "".join(followed[1].texts[0])
    # Progressive: the sampled answers came in many pieces, not one.
    assert min(len(p) for p in followed[0].texts.values()) > 3
    assert streamed[1].output["finish_reason"] == "stop"


def test_a_stopped_listener_ends_its_row(tiny_runners: dict[TaskKind, Runner]) -> None:
    runner = tiny_runners[TaskKind.GENERATE]
    params = {"max_new_tokens": 40, "seed": 2, "temperature": 2.0}
    whole = _run(runner, [WorkItem(0, "The teacher", params)])[0]
    assert whole.tokens_out > 10
    gone = _run(runner, [WorkItem(0, "The teacher", params, Pieces(stop_after=2))])[0]
    assert gone.tokens_out <= 3 < whole.tokens_out
