"""Items that hold several texts (an embeddings batch line whose input is a list).

Each text runs as a work item of its own, so the token budget packs it and the context rule
judges it like any other text; the item's one outcome is put back together once all its texts
have one: the outputs listed in order, the tokens summed, the first failure named by the
text's position. One row per item stays one row per item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nightowl.common.enums import ItemStatus
from nightowl.common.items import ItemOutcome
from nightowl_workers.engine import WorkItem


@dataclass
class Fanout:
    """Splits items of several texts into work items and gathers their outcomes back."""

    # Part key -> (the item's key, the text's position). Part keys are negative: item keys are
    # row ids, which are positive, so the two never meet.
    _owner: dict[int, tuple[int, int]] = field(default_factory=dict)
    _parts: dict[int, list[ItemOutcome | None]] = field(default_factory=dict)
    _next: int = -1

    def split(self, key: int, texts: list[str], params: dict[str, Any]) -> list[WorkItem]:
        """A work item per text of the item `key`."""
        self._parts[key] = [None] * len(texts)
        out = []
        for n, text in enumerate(texts):
            self._owner[self._next] = (key, n)
            out.append(WorkItem(key=self._next, text=text, params=params))
            self._next -= 1
        return out

    def gather(self, outcomes: Iterable[ItemOutcome]) -> list[ItemOutcome]:
        """The outcomes of whole items: others' as they are, a split item's once its last text
        has one (until then nothing for it)."""
        out = []
        for outcome in outcomes:
            owner = self._owner.pop(outcome.key, None)
            if owner is None:
                out.append(outcome)
                continue
            key, n = owner
            slots = self._parts[key]
            slots[n] = outcome
            if all(s is not None for s in slots):
                del self._parts[key]
                out.append(merged(key, [s for s in slots if s is not None]))
        return out


def merged(key: int, parts: list[ItemOutcome]) -> ItemOutcome:
    """One item's outcome from its texts' outcomes, in the texts' order."""
    tokens_in = sum(p.tokens_in or 0 for p in parts)
    tokens_out = sum(p.tokens_out or 0 for p in parts)
    started = [p.started_at for p in parts if p.started_at is not None]
    finished = [p.finished_at for p in parts if p.finished_at is not None]
    times = {"started_at": min(started, default=None), "finished_at": max(finished, default=None)}
    failed = [(n, p) for n, p in enumerate(parts) if p.status == ItemStatus.FAILED]
    if failed:
        n, first = failed[0]
        assert first.error_code is not None
        message = first.error_message or "the text failed"
        # A failure every text shares (bad params, the model not loading) is the item's own;
        # one text's is named by its position, as OpenAI names a list entry.
        shared = len(failed) == len(parts) and len({p.error_message for _, p in failed}) == 1
        return ItemOutcome.failed(key, first.error_code,
                                  message if shared else f"input[{n}]: {message}",
                                  tokens_in=tokens_in, **times)
    stopped = next((p for p in parts if p.status != ItemStatus.SUCCEEDED), None)
    if stopped is not None:  # a cancel or a deadline came between its texts: none is kept
        return ItemOutcome.stopped(key, stopped.status)
    outputs = [p.output or {} for p in parts]
    if all("embedding" in o for o in outputs):
        output: dict[str, Any] = {"embeddings": [o["embedding"] for o in outputs]}
    else:
        output = {"outputs": outputs}
    return ItemOutcome.succeeded(key, output, tokens_in, tokens_out, **times)
