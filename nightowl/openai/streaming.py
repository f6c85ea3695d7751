"""OpenAI's server-sent events for a chat or text completion, written as the text arrives.

A `ChunkWriter` turns text deltas (nightowl.jobs.lane_follow's events) into
`chat.completion.chunk` / `text_completion` chunks, then, from the finished response body,
whatever text was held back, each choice's finish_reason, the usage chunk when asked for
(`stream_options.include_usage`) and `[DONE]`. The same writer serves a finished answer that
was never streamed (everything arrives in `finish`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from nightowl.openai.lines import CHAT


def sse(data: dict[str, Any] | str) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"


class ChunkWriter:
    """The chunks of one streamed response whose id and creation time are known up front."""

    def __init__(self, *, endpoint: str, response_id: str, created: int, model: str,
                 include_usage: bool) -> None:
        self.chat = endpoint == CHAT
        self.base = {"id": response_id, "created": created, "model": model,
                     "object": "chat.completion.chunk" if self.chat else "text_completion"}
        self.include_usage = include_usage
        # Per choice: the text already sent.
        self.sent: dict[int, str] = {}

    def _chunk(self, choice: dict[str, Any]) -> str:
        return sse({**self.base, "choices": [choice]})

    def delta(self, index: int, text: str) -> Iterator[str]:
        """The chunks for new text of one choice (a chat's first also names the role)."""
        if self.chat and index not in self.sent:
            yield self._chunk({"index": index, "delta": {"role": "assistant", "content": ""},
                               "logprobs": None, "finish_reason": None})
        self.sent[index] = self.sent.get(index, "") + text
        if not text:
            return
        if self.chat:
            yield self._chunk({"index": index, "delta": {"content": text}, "logprobs": None,
                               "finish_reason": None})
        else:
            yield self._chunk({"index": index, "text": text, "logprobs": None,
                               "finish_reason": None})

    def finish(self, body: dict[str, Any]) -> Iterator[str]:
        """The rest of each choice from the finished body, its finish_reason, usage, [DONE]."""
        for choice in body["choices"]:
            i = choice["index"]
            full = choice["message"]["content"] if self.chat else choice["text"]
            sent = self.sent.get(i, "")
            rest = full[len(sent):] if full.startswith(sent) else ""
            if self.chat:
                if i not in self.sent:
                    yield from self.delta(i, "")
                if rest or choice["logprobs"] is not None:
                    yield self._chunk({"index": i, "delta": {"content": rest},
                                       "logprobs": choice["logprobs"], "finish_reason": None})
                yield self._chunk({"index": i, "delta": {}, "logprobs": None,
                                   "finish_reason": choice["finish_reason"]})
            else:
                yield self._chunk({"index": i, "text": rest, "logprobs": choice["logprobs"],
                                   "finish_reason": choice["finish_reason"]})
        if self.include_usage:
            yield sse({**self.base, "choices": [], "usage": body["usage"]})
        yield sse("[DONE]")

    def error(self, error: dict[str, Any]) -> Iterator[str]:
        """A failure after the stream began: OpenAI's error event, then the end."""
        yield sse({"error": error})
        yield sse("[DONE]")
