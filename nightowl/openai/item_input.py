"""A checked OpenAI request as a job item's input: the text the runner reads (a chat rendered
with the model's template, token ids decoded in its vocabulary) and its params, or the
LineProblem that says why it cannot fit the model. The batch path and the direct endpoints
both make their items here.
"""

from __future__ import annotations

from typing import Any

from nightowl.common import chat
from nightowl.common.enums import ErrorCode, TaskKind
from nightowl.common.items import TEXTS
from nightowl.common.tokens import (
    context_of,
    hidden_size,
    input_room,
    shares_context,
    token_decoder,
)
from nightowl.openai import responses
from nightowl.openai.lines import Request
from nightowl.openai.problems import LineProblem
from nightowl.platform.orm import ModelVersion


def request_input(request: Request, kind: TaskKind, version: ModelVersion,
                  template: chat.ChatTemplate | None) -> dict[str, Any]:
    """A checked request as a job item's input, or LineProblem when it cannot fit the model:
    prompt plus max_tokens past the context, or more dimensions than the encoder has."""
    try:
        return _request_input(request, kind, version, template)
    except LineProblem as p:
        raise p if request.echo is None else responses.renamed(p) from None


def _request_input(request: Request, kind: TaskKind, version: ModelVersion,
                   template: chat.ChatTemplate | None) -> dict[str, Any]:
    data: dict[str, Any]
    if request.parts is not None:
        # Each entry is judged on its own, as the worker runs it, and named by its position.
        texts = []
        for n, part in enumerate(request.parts):
            where = f"input[{n}]"
            text = part if isinstance(part, str) else _decoded(part, version, kind, where)
            _check_context(text, request, kind, version, where)
            texts.append(text)
        data = {TEXTS: texts}
    else:
        if request.messages is not None:
            try:
                text = chat.render(request.messages, template)
            except ValueError as e:
                raise LineProblem(ErrorCode.INVALID_REQUEST.value, str(e), "messages") from e
        elif request.token_ids is not None:
            text = _decoded(request.token_ids, version, kind, _param(request, kind))
        else:
            assert request.text is not None
            text = request.text
        _check_context(text, request, kind, version, _param(request, kind))
        data = {kind.input_field: text}
    dims = request.params.get("dimensions")
    width = hidden_size(version.source)
    if dims is not None and width is not None and dims > width:
        raise LineProblem(ErrorCode.INVALID_REQUEST.value, f"dimensions={dims} is more than "
                          f"the model's {width}; ask for {width} or fewer", "dimensions")
    if request.params:
        data["params"] = dict(request.params)
    if request.encoding_format is not None:
        data["encoding_format"] = request.encoding_format
    if request.copies > 1:
        data["copies"] = request.copies
    if request.echo is not None:
        data["response"] = request.echo
    return data


def _param(request: Request, kind: TaskKind) -> str:
    """The body field that holds the request's text."""
    return ("messages" if request.messages is not None
            else "prompt" if kind == TaskKind.GENERATE else "input")


def _check_context(text: str, request: Request, kind: TaskKind, version: ModelVersion,
                   what: str) -> None:
    """LineProblem naming `what` (or max_tokens) when the text and the reply asked for do not
    fit the model's context."""
    context = context_of(version.source)
    if context is None:
        return
    count, limit = context
    # The worker's rule (nightowl.common.tokens): a decoder's reply shares the prompt's
    # positions and gets at least one; a translator's output and an encoder's label have
    # their own.
    # OpenAI's is stricter only in refusing a max_tokens the context cannot hold.
    asked = request.max_tokens or 0
    reply = max(asked, 1) if shares_context(kind) else 0
    # Bytes bound tokens from above: most lines are settled without tokenizing them.
    prompt = count(text) if len(text.encode("utf-8")) + 4 + reply > limit else 0
    if prompt > input_room(kind, limit) or prompt + reply > limit:
        room = "" if not shares_context(kind) else (
            f" ({prompt} in the {what}, {'' if asked else 'at least '}{reply} in the "
            "completion)")
        shorten = what if "[" in what else f"the {what}"
        raise LineProblem(ErrorCode.CONTEXT_LENGTH_EXCEEDED.value,
                          f"This model's maximum context length is {limit} tokens; the "
                          f"request needs {prompt + reply}{room}. Shorten {shorten}"
                          + (" or lower max_tokens." if asked else "."),
                          "max_tokens" if asked and prompt < limit else what)


def _decoded(ids: list[int], version: ModelVersion, kind: TaskKind, param: str) -> str:
    """Token ids as the text they spell in the model's vocabulary."""
    decoder = token_decoder(version.source)
    if decoder is None:
        raise LineProblem(ErrorCode.INVALID_REQUEST.value, f"{param} as token ids needs a model "
                          f"whose tokenizer nightowl reads; {version.ref} is not one: send text",
                          param)
    decode, vocabulary = decoder
    if (bad := next((i for i in ids if i >= vocabulary), None)) is not None:
        raise LineProblem(ErrorCode.INVALID_REQUEST.value, f"{param} holds token id {bad}, "
                          f"outside the model's vocabulary of {vocabulary} tokens", param)
    return decode(ids)
