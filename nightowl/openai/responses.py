"""OpenAI's Responses API (/v1/responses) as a thin layer over chat completions.

A Responses request is a chat request in other words: `input` (a string, or a list of messages)
and `instructions` become chat messages, `max_output_tokens` becomes max_tokens. It runs as a
chat completion would, and its answer is translated back: the chat body into a `response`
object, and a chat stream (chunk by chunk, however the chat route produces it) into the
Responses stream events. What the layer would have to invent (tools, background runs, state
kept between responses) is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from nightowl.common.enums import ErrorCode
from nightowl.common.values import metadata_problem
from nightowl.openai.problems import LineProblem

RESPONSES = "/v1/responses"
ID_PREFIX = "resp_"
# Fields honoured; `store` and `user` are accepted as OpenAI's are (see `retrieve`), any other
# (tools, tool_choice, background, previous_response_id, reasoning, include...) is refused.
ACCEPTED = frozenset(("model", "input", "instructions", "max_output_tokens", "temperature",
                      "top_p", "stream", "metadata", "store", "user"))
# Input message roles; a Responses `developer` message is a system message to a chat template.
_ROLES = {"user": "user", "assistant": "assistant", "system": "system",
          "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text", "text")
# The chat request's names for the Responses request's fields, so an error names what was sent.
_CHAT_NAMES = {"max_tokens": "max_output_tokens", "messages": "input"}


def to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the chat body that runs the request, what the response object echoes back), or
    LineProblem naming the Responses field at fault."""
    for key in body:
        if key not in ACCEPTED:
            raise LineProblem(ErrorCode.UNSUPPORTED_PARAMETER.value,
                              f"parameter {key!r} is not supported by nightowl's {RESPONSES} "
                              "(it keeps no state between responses and runs no tools); "
                              "remove it from the request", key)
    messages = _messages(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("instructions must be a string", "instructions")
        messages.insert(0, {"role": "system", "content": instructions})
    metadata = body.get("metadata")
    if metadata is not None and (problem := metadata_problem(metadata)) is not None:
        raise _invalid(problem, "metadata")
    for flag in ("store", "stream"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise _invalid(f"{flag} must be true or false", flag)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"),
                         ("max_output_tokens", "max_tokens"), ("stream", "stream"),
                         ("user", "user")):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    echo = {"instructions": instructions, "metadata": metadata or {},
            "max_output_tokens": body.get("max_output_tokens"),
            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "store": body.get("store", True), "user": body.get("user")}
    return chat, echo


def renamed(problem: LineProblem) -> LineProblem:
    """A problem found in the chat body, told in the Responses request's words."""
    param = problem.param or ""
    head, dot, rest = param.partition("[") if "[" in param else param.partition(".")
    if head not in _CHAT_NAMES:
        return problem
    name = _CHAT_NAMES[head]
    message = problem.message
    for chat_name, ours in _CHAT_NAMES.items():
        message = message.replace(chat_name, ours)
    return LineProblem(problem.code, message, name + (dot + rest if dot else ""))


def _invalid(message: str, param: str) -> LineProblem:
    return LineProblem(ErrorCode.INVALID_REQUEST.value, message, param)


def _messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise LineProblem(ErrorCode.MISSING_REQUIRED_PARAMETER.value, "input is required",
                          "input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _invalid("input must be a string or a non-empty list of messages", "input")
    out = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise _invalid(f"{where} is a {kind!r}; nightowl takes messages only "
                           "({role, content}): no tool calls, files or images", where)
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise _invalid(f"{where}.role must be one of {', '.join(_ROLES)}", f"{where}.role")
        out.append({"role": role, "content": _content(item.get("content"), where)})
    return out


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS or (
                not isinstance(part.get("text"), str)
            ):
                break
            parts.append(part["text"])
        else:
            return "".join(parts)
    raise _invalid(f"{where}.content must be a string or a list of input_text parts "
                   "(nightowl serves text models: image, audio and file parts are not "
                   "supported)", f"{where}.content")


def response_id(job_id: str, idx: int) -> str:
    """A response's id names its row, so GET /v1/responses/{id} finds it (direct or batch)."""
    return f"{ID_PREFIX}{job_id}_{idx}"


def parse_id(rid: str) -> tuple[str, int] | None:
    """(job id, item index) of a response id, or None when it is not one of ours."""
    if not rid.startswith(ID_PREFIX):
        return None
    job_id, _, idx = rid[len(ID_PREFIX):].rpartition("_")
    return (job_id, int(idx)) if job_id and idx.isdigit() else None


def _message_item(rid: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": "msg_" + rid[len(ID_PREFIX):], "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}] if status != "in_progress" else []}


def response_object(*, rid: str, model: str, created: float, echo: dict[str, Any],
                    status: str = "in_progress", text: str | None = None,
                    usage: dict[str, Any] | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `response` object: in progress (no output yet), completed, incomplete (it ran into
    max_output_tokens) or failed."""
    output = [] if text is None else [
        _message_item(rid, text, "incomplete" if status == "incomplete" else "completed")]
    return {
        "id": rid, "object": "response", "created_at": created, "status": status,
        "background": False, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete"
        else None,
        "instructions": echo.get("instructions"), "max_output_tokens":
        echo.get("max_output_tokens"), "metadata": echo.get("metadata") or {}, "model": model,
        "output": output, "parallel_tool_calls": False, "previous_response_id": None,
        "store": echo.get("store", True),
        # OpenAI's defaults, which nightowl applies when the request leaves them out.
        "temperature": 1.0 if echo.get("temperature") is None else echo["temperature"],
        "top_p": 1.0 if echo.get("top_p") in (None, 0) else echo["top_p"],
        "text": {"format": {"type": "text"}}, "tool_choice": "none", "tools": [],
        "truncation": "disabled", "user": echo.get("user"),
        "usage": None if usage is None else _usage(usage),
    }


def _usage(chat_usage: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = chat_usage.get("prompt_tokens", 0), chat_usage.get(
        "completion_tokens", 0)
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def _final_status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def from_chat(chat: dict[str, Any], *, rid: str, echo: dict[str, Any]) -> dict[str, Any]:
    """A finished chat completion body as the response object."""
    choice = chat["choices"][0]
    return response_object(rid=rid, model=chat["model"], created=float(chat["created"]),
                           echo=echo, status=_final_status(choice["finish_reason"]),
                           text=choice["message"]["content"] or "", usage=chat["usage"])


def _event(kind: str, seq: int, **fields: Any) -> str:
    data = json.dumps({"type": kind, "sequence_number": seq, **fields}, ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n"


async def chat_chunks(sse: Iterable[str | bytes] | AsyncIterable[str | bytes]
                      ) -> AsyncIterator[dict[str, Any]]:
    """The chat route's server-sent events back into chunk objects (up to [DONE])."""
    async def lines() -> AsyncIterator[str | bytes]:
        if isinstance(sse, AsyncIterable):
            async for piece in sse:
                yield piece
        else:
            for piece in sse:
                yield piece

    buffer = ""
    async for piece in lines():
        buffer += piece.decode() if isinstance(piece, bytes) else piece
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            data = "".join(line[5:].strip() for line in event.splitlines()
                           if line.startswith("data:"))
            if data == "[DONE]":
                return
            if data:
                yield json.loads(data)


async def stream_events(chunks: AsyncIterable[dict[str, Any]], *, rid: str, model: str,
                        created: float, echo: dict[str, Any]) -> AsyncIterator[str]:
    """Chat completion chunks as the Responses stream: created, in_progress, the message's
    item and part, a text delta per chat delta, the closing events, then completed (or
    incomplete). The chat stream must carry usage (stream_options.include_usage)."""
    seq = iter(range(1 << 62))
    head = response_object(rid=rid, model=model, created=created, echo=echo)
    yield _event("response.created", next(seq), response=head)
    yield _event("response.in_progress", next(seq), response=head)
    item = _message_item(rid, "", "in_progress")
    where = {"item_id": item["id"], "output_index": 0}
    yield _event("response.output_item.added", next(seq), output_index=0, item=item)
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield _event("response.content_part.added", next(seq), **where, content_index=0,
                 part=empty)
    text, finish, usage = [], None, None
    async for chunk in chunks:
        if "error" in chunk:  # a stream that broke off: the response failed
            failed = response_object(rid=rid, model=model, created=created, echo=echo,
                                     status="failed", error={
                                         "code": "server_error",
                                         "message": str(chunk["error"].get("message"))})
            yield _event("response.failed", next(seq), response=failed)
            return
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                text.append(delta)
                yield _event("response.output_text.delta", next(seq), **where,
                             content_index=0, delta=delta, logprobs=[])
            finish = choice.get("finish_reason") or finish
    whole = "".join(text)
    status = _final_status(finish)
    yield _event("response.output_text.done", next(seq), **where, content_index=0, text=whole,
                 logprobs=[])
    yield _event("response.content_part.done", next(seq), **where, content_index=0,
                 part={**empty, "text": whole})
    done = response_object(rid=rid, model=model, created=created, echo=echo, status=status,
                           text=whole, usage=usage or {})
    yield _event("response.output_item.done", next(seq), output_index=0,
                 item=done["output"][0])
    yield _event(f"response.{status}", next(seq), response=done)
