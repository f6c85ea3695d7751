"""Text as it is generated, per row of a batched generate(), and rows stopped early.

transformers hands a `streamer=` every step's new token of every row (its TextIteratorStreamer
takes one row only); this one keeps each row's ids, decodes them, and tells the row's listener
the new text. Text that could still turn into a stop string, or that ends inside an unfinished
UTF-8 character, is held back until it is settled, so a listener never receives text the final
answer does not have. A listener that says stopped() (its caller went away) ends its rows at
the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


class TextListener(Protocol):
    def text(self, choice: int, delta: str) -> None:
        """New settled text of one choice (0 unless several were asked for)."""

    def stopped(self) -> bool:
        """Whether nobody wants the rest of this answer."""

    def step(self) -> None:
        """One generation step is over: what it produced may go out together."""


class RowStreamer(BaseStreamer):
    """Per-row incremental text for a generate() over prompts x choices rows."""

    def __init__(self, listeners: Sequence[TextListener | None], per_prompt: int,
                 decode: Callable[[list[int]], str], ends: set[int], stops: list[str]) -> None:
        self.listeners = listeners
        # Each distinct listener once: told of every generation step, which is per token.
        self.following = list({id(x): x for x in listeners if x is not None}.values())
        self.per_prompt = per_prompt
        self.decode = decode
        self.ends = ends
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        rows = len(listeners) * per_prompt
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [0] * rows
        self.finished = [False] * rows
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompts themselves
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            listener = self.listeners[row // self.per_prompt]
            if listener is None or self.finished[row]:
                continue
            # A finished row is filled with pad (often eos): either ends its text.
            if token in self.ends:
                self.finished[row] = True
                continue
            self.ids[row].append(token)
            self._emit(row, listener)
        for listener in self.following:
            listener.step()

    def _emit(self, row: int, listener: TextListener) -> None:
        text = self.decode(self.ids[row])
        settled = len(text.rstrip("\ufffd"))
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            settled = min(settled, min(hits))
            self.finished[row] = True
        elif self.hold:
            settled = min(settled, len(text) - self.hold)
        if settled > self.sent[row]:
            listener.text(row % self.per_prompt, text[self.sent[row]:settled])
            self.sent[row] = settled

    def end(self) -> None:
        """The final text comes with the result; what was held back is sent from there."""


class StopWhenGone(StoppingCriteria):
    """Ends the rows whose listener is stopped (checked once per step)."""

    def __init__(self, listeners: Sequence[TextListener | None], per_prompt: int) -> None:
        self.rows = [listener for listener in listeners for _ in range(per_prompt)]

    @classmethod
    def as_list(cls, listeners: Sequence[TextListener | None],
                per_prompt: int) -> StoppingCriteriaList:
        return StoppingCriteriaList([cls(listeners, per_prompt)])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor,
                 **kwargs: object) -> torch.BoolTensor:
        flags = [listener is not None and listener.stopped() for listener in self.rows]
        return torch.tensor(flags, dtype=torch.bool,  # type: ignore[return-value]
                            device=input_ids.device)
