"""OpenAI request bodies and Batch API input lines, checked the way OpenAI checks them.

A line's envelope (`{custom_id, method, url, body}`) is the batch's business: a malformed one
fails the whole batch. A bad *body* fails only its own request, which gets a 400 response in
the error file while the rest of the batch runs. `parse_body` is also what the direct
endpoints (/v1/chat/completions, ...) use, so a request is judged the same either way.
OpenAI's names map onto nightowl's per-kind params (nightowl.common.specs), which are then checked
by the same rules as every other door's: a bad top_k reads the same in a batch's error file as
from `nightowl submit`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeGuard

from nightowl.common import specs as P
from nightowl.common.chat import ROLES, message_text
from nightowl.common.enums import ErrorCode, TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.common.values import check_json
from nightowl.jobs.inputs import MAX_CUSTOM_ID, _decode, _read_lines
from nightowl.openai import responses
from nightowl.openai.problems import LineProblem

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
RESPONSES = responses.RESPONSES
ENDPOINTS: dict[str, TaskKind] = {
    COMPLETIONS: TaskKind.GENERATE,
    CHAT: TaskKind.GENERATE,
    RESPONSES: TaskKind.GENERATE,
    EMBEDDINGS: TaskKind.EMBED,
    "/v1/translations": TaskKind.TRANSLATE,
    "/v1/classifications": TaskKind.SENTIMENT,
}
# Body fields each endpoint honours; any other OpenAI parameter is refused by name.
# `user` is an opaque caller tag OpenAI keeps for abuse tracking: accepted and not used.
_GENERATION = ("model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
               "stop", "seed", "logprobs", "presence_penalty", "frequency_penalty", "user",
               "stream", "stream_options", "top_k", "repetition_penalty")
ACCEPTED: dict[str, frozenset[str]] = {
    CHAT: frozenset((*_GENERATION, "messages", "top_logprobs")),
    COMPLETIONS: frozenset((*_GENERATION, "prompt")),
    RESPONSES: responses.ACCEPTED,
    EMBEDDINGS: frozenset(("model", "input", "dimensions", "encoding_format", "user")),
    "/v1/translations": frozenset(("model", "input", "max_tokens", "max_completion_tokens",
                                   "num_beams", "user")),
    "/v1/classifications": frozenset(("model", "input", "all_scores", "user")),
}
# OpenAI's cap on inputs in one embeddings request (prompts in a completions request too).
MAX_INPUTS = 2048
# Completions' logprobs is a count of alternatives (0-5); chat's is a flag plus top_logprobs.
MAX_COMPLETION_LOGPROBS = 5
# OpenAI samples unless told otherwise: temperature 1 over the whole distribution (top_p 1, and
# no top-k cut, which transformers would otherwise apply at 50). nightowl's own `submit
# generate` keeps its greedy default; only requests that came in OpenAI's shape get these.
OPENAI_SAMPLING: dict[str, Any] = {"do_sample": True, "temperature": 1.0, "top_p": 1.0,
                                   "top_k": 0}


@dataclass
class Request:
    """A checked request body: the model it names, its text or messages, runner params."""

    model: str
    text: str | None = None  # the prompt or input, for every endpoint except chat
    messages: list[dict[str, str]] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # How an embedding is written out (float or base64); not a runner parameter.
    encoding_format: str | None = None
    max_tokens: int | None = None  # as asked, before any clamp to the model's context
    # n choices of a greedy request: one decode, its text given n times (greedy decoding gives
    # the same text every time, and transformers refuses n sequences without sampling).
    copies: int = 1
    # The prompt or input as token ids of the model's vocabulary (decoded against the model).
    token_ids: list[int] | None = None
    # A /v1/responses request: what its response object echoes (instructions, metadata...).
    echo: dict[str, Any] | None = None
    # An embeddings batch line whose input lists several texts (or token-id lists): one item,
    # answered by one response listing a vector per entry.
    parts: list[str | list[int]] | None = None


@dataclass
class BatchLine:
    line_no: int
    custom_id: str
    request: Request | None  # None when the body was refused
    problem: LineProblem | None = None

    @property
    def model(self) -> str:
        return self.request.model if self.request else ""


def read_lines(stream: IO[bytes], *, endpoint: str,
               max_line_bytes: int) -> Iterator[BatchLine | dict[str, Any]]:
    """Each non-blank line as a BatchLine, or as a batch error object naming its line."""
    for line_no, raw in _read_lines(stream, max_line_bytes):
        if raw is None:
            yield LineProblem("line_too_long", f"line is longer than {max_line_bytes} bytes "
                              "(NIGHTOWL_MAX_LINE_BYTES)").as_error(line_no)
            continue
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark, as some editors on Windows write
        if not raw.strip():
            continue
        try:
            yield parse_line(raw, line_no, endpoint)
        except LineProblem as p:
            yield p.as_error(line_no)


def parse_line(raw: bytes, line_no: int, endpoint: str) -> BatchLine:
    """The line's envelope checked (LineProblem: the batch fails); its body checked on its own
    (a problem there stays on the line)."""
    try:
        obj = json.loads(_decode(raw))
    except RecursionError:
        raise LineProblem("invalid_json_line", f"line {line_no} is nested too deeply") from None
    except ValueError as e:
        raise LineProblem("invalid_json_line", f"line {line_no} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise LineProblem("invalid_json_line", "each line must be a JSON object")
    try:
        check_json(f"line {line_no}", obj)  # what the database can store, as every door checks
    except InvalidInput as e:
        raise LineProblem("invalid_json_line", str(e)) from e
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise LineProblem("missing_required_parameter",
                          f"custom_id must be a non-empty string of at most {MAX_CUSTOM_ID} "
                          "characters", "custom_id")
    if obj.get("method") != "POST":
        raise LineProblem("invalid_method", f"method must be \"POST\", got {obj.get('method')!r}",
                          "method")
    url = obj.get("url")
    if url not in ENDPOINTS:
        raise LineProblem("invalid_url", f"url {url!r} is not supported; use one of "
                          f"{', '.join(ENDPOINTS)}", "url")
    if url != endpoint:
        raise LineProblem("mismatched_endpoint",
                          f"url {url} does not match the batch's endpoint {endpoint}", "url")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineProblem("invalid_request", "body must be a JSON object", "body")
    try:
        return BatchLine(line_no, custom_id, parse_body(body, url, batch=True))
    except LineProblem as p:
        return BatchLine(line_no, custom_id, None, p)


def parse_body(body: dict[str, Any], url: str, *, batch: bool = False) -> Request:
    """A request body as nightowl's input and runner params, or LineProblem saying why not."""
    kind = ENDPOINTS[url]
    if url == RESPONSES:
        try:
            chat, echo = responses.to_chat(body)
            request = parse_body(chat, CHAT, batch=batch)
        except LineProblem as p:
            raise responses.renamed(p) from None
        request.echo = echo
        return request
    for key in body:
        if key not in ACCEPTED[url]:
            raise LineProblem(ErrorCode.UNSUPPORTED_PARAMETER.value,
                              f"parameter {key!r} is not supported by nightowl's {url}; "
                              "remove it from the request", key)
    if body.get("stream") and batch:
        raise LineProblem(ErrorCode.INVALID_REQUEST.value,
                          "stream is not supported inside a batch; remove it", "stream")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise LineProblem(ErrorCode.MISSING_REQUIRED_PARAMETER.value,
                          "model must name a nightowl model (see GET /v1/models)", "model")
    request = Request(model.strip())
    if url == CHAT:
        request.messages = _messages(body.get("messages"))
    else:
        param = "prompt" if url == COMPLETIONS else "input"
        value = body.get(param)
        if url == EMBEDDINGS and batch and _several(value):
            # A batch line is one item: its entries stay together (a direct request makes an
            # item of each, nightowl.openai.direct).
            request.text, request.parts = "", _parts(value, param)
        else:
            given = _one_text(value, param, "prompt" if url == COMPLETIONS else "text",
                              ids_ok=url in (COMPLETIONS, EMBEDDINGS))
            if isinstance(given, list):
                request.text, request.token_ids = "", given
            else:
                request.text = given
    if kind == TaskKind.SENTIMENT:
        if body.get("all_scores") is not None:
            if not isinstance(body["all_scores"], bool):
                raise _invalid("all_scores must be true or false", "all_scores")
            request.params["all_scores"] = body["all_scores"]
    elif kind == TaskKind.EMBED:
        _embedding_params(body, request)
    elif kind == TaskKind.TRANSLATE:
        _max_tokens(body, request)
        _same_name(body, request.params, "num_beams")
    else:
        _generation_params(body, request, chat=url == CHAT)
    # max_new_tokens stands for max_tokens, checked above against the model's context.
    mapped = {k: v for k, v in request.params.items() if k != "max_new_tokens"}
    try:
        P.check_params(kind, mapped)
    except InvalidInput as e:
        raise _invalid(str(e).split("\n")[0],
                       e.problems[0][0] if e.problems else e.param or "body") from None
    return request


def _same_name(body: dict[str, Any], params: dict[str, Any], *names: str) -> None:
    """Parameters OpenAI and nightowl share by name: passed on, checked by the kind's spec."""
    for name in names:
        if body.get(name) is not None:
            params[name] = body[name]


def _invalid(message: str, param: str) -> LineProblem:
    return LineProblem(ErrorCode.INVALID_REQUEST.value, message, param)


def token_ids(value: Any) -> list[int] | None:
    """`value` as token ids (a non-empty list of non-negative integers), or None if it is not."""
    if isinstance(value, list) and value and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        return value
    return None


def _several(value: Any) -> TypeGuard[list[Any]]:
    """Whether an embeddings input lists several entries (not one text, not one id list)."""
    return isinstance(value, list) and len(value) > 1 and token_ids(value) is None


def _parts(value: list[Any], param: str) -> list[str | list[int]]:
    """Each entry of a list input as a text or a token-id list, OpenAI's cap kept; a bad entry
    is named by its position."""
    if len(value) > MAX_INPUTS:
        raise _invalid(f"{param} has {len(value)} entries; at most {MAX_INPUTS} per request "
                       "(split them over several lines)", param)
    out: list[str | list[int]] = []
    for n, entry in enumerate(value):
        ids = token_ids(entry)
        if ids is None and isinstance(entry, list):
            raise _invalid(f"{param}[{n}] must be a string or a non-empty list of token ids "
                           "(non-negative integers)", f"{param}[{n}]")
        out.append(ids if ids is not None else _required_text(entry, f"{param}[{n}]"))
    return out


def _one_text(value: Any, param: str, what: str, *, ids_ok: bool = False
              ) -> str | list[int]:
    """One text (or, where OpenAI takes them, one list of token ids) per request, as OpenAI's
    single-item form; a one-element list is the same."""
    if isinstance(value, list) and not value:
        raise _invalid(f"{param} is an empty list; give at least one {what}", param)
    if ids_ok and (ids := token_ids(value)) is not None:
        return ids
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
        if ids_ok and (ids := token_ids(value)) is not None:
            return ids
    if isinstance(value, list):
        raise _invalid(f"{param} may hold one {what} per request here; send each {what} as its "
                       "own request (or batch line)", param)
    return _required_text(value, param)


def _required_text(value: Any, param: str) -> str:
    if value is None:
        raise LineProblem(ErrorCode.MISSING_REQUIRED_PARAMETER.value, f"{param} is required",
                          param)
    if not isinstance(value, str):
        raise _invalid(f"{param} must be a string, got {type(value).__name__}", param)
    if not value.strip():
        raise _invalid(f"{param} is empty", param)
    return value


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise LineProblem(ErrorCode.MISSING_REQUIRED_PARAMETER.value,
                          "messages must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _invalid(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
        if m["role"] == "tool" and not (isinstance(m.get("tool_call_id"), str)
                                        and m["tool_call_id"]):
            raise _invalid(f"{where} has role tool but no tool_call_id; a tool message answers "
                           "the assistant's tool call of that id", f"{where}.tool_call_id")
        text = message_text(m.get("content"))
        if text is None:
            raise _invalid(f"{where}.content must be a string or a list of text parts (nightowl "
                           "serves text models: image and audio parts are not supported)",
                           f"{where}.content")
        out.append({"role": str(m["role"]), "content": text})
    return out


def _number(body: dict[str, Any], key: str, low: float, high: float, *,
            integer: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise _invalid(f"{key} must be {kind} from {low:g} to {high:g}, got {value!r}", key)
    return value


def _max_tokens(body: dict[str, Any], request: Request) -> None:
    for key in ("max_completion_tokens", "max_tokens"):
        if (value := _number(body, key, 1, 2**31 - 1, integer=True)) is not None:
            request.params["max_new_tokens"] = request.max_tokens = value


def _embedding_params(body: dict[str, Any], request: Request) -> None:
    _same_name(body, request.params, "dimensions")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in P.ENCODING_FORMATS:
        raise _invalid(f"encoding_format must be one of {', '.join(P.ENCODING_FORMATS)}, got "
                       f"{fmt!r}", "encoding_format")
    request.encoding_format = fmt


def _generation_params(body: dict[str, Any], request: Request, *, chat: bool) -> None:
    params = request.params
    _max_tokens(body, request)
    temperature = _number(body, "temperature", 0, 2)
    # Under the sampler's floor is as cold as sampling goes: OpenAI's 0, greedy.
    greedy = temperature is not None and temperature < P.MIN_TEMPERATURE
    if greedy:
        params["do_sample"] = False
    else:
        params.update(OPENAI_SAMPLING)
        if temperature is not None:
            params["temperature"] = float(temperature)
    if body.get("top_p") != 0:  # OpenAI's top_p=0 means no nucleus cut: the default 1
        _same_name(body, params, "top_p")
    _same_name(body, params, "top_k")
    if (n := _number(body, "n", 1, P.MAX_RETURN_SEQUENCES, integer=True)) is not None and n > 1:
        if greedy:
            request.copies = n
        else:
            params["num_return_sequences"] = n
    _same_name(body, params, "seed")
    for key in ("presence_penalty", "frequency_penalty"):
        if (value := _number(body, key, *P.PENALTY_RANGE)) is not None and value:
            params[key] = float(value)
    _same_name(body, params, "repetition_penalty")
    _logprobs(body, params, chat=chat)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (not isinstance(stops, list) or len(stops) > P.MAX_STOP_STRINGS
                or not all(isinstance(s, str) and 0 < len(s) <= P.MAX_STOP_LENGTH
                           for s in stops)):
            raise _invalid(f"stop must be a string or a list of at most {P.MAX_STOP_STRINGS} "
                           f"non-empty strings of at most {P.MAX_STOP_LENGTH} characters", "stop")
        if stops:
            params["stop"] = stops


def _logprobs(body: dict[str, Any], params: dict[str, Any], *, chat: bool) -> None:
    value = body.get("logprobs")
    if value is None:
        if body.get("top_logprobs") is not None:
            raise _invalid("top_logprobs needs logprobs=true", "top_logprobs")
        return
    if chat:
        if not isinstance(value, bool):
            raise _invalid(f"logprobs must be true or false, got {value!r}", "logprobs")
        top = _number(body, "top_logprobs", 0, P.MAX_TOP_LOGPROBS, integer=True)
        if top and not value:
            raise _invalid("top_logprobs needs logprobs=true", "top_logprobs")
        if value:
            params["logprobs"], params["top_logprobs"] = True, top or 0
        return
    count = _number(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS, integer=True)
    params["logprobs"], params["top_logprobs"] = True, count
