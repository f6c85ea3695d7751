"""OpenAI Batch API input lines: `{custom_id, method, url, body}` checked one by one, and the
request body mapped onto nightowl's own input and generation parameters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from nightowl.chat import ROLES, message_text
from nightowl.enums import TaskKind
from nightowl.errors import InvalidInput
from nightowl.inputs import MAX_CUSTOM_ID, _decode, _read_lines
from nightowl.params import check_json

ENDPOINTS: dict[str, TaskKind] = {
    "/v1/completions": TaskKind.GENERATE,
    "/v1/chat/completions": TaskKind.GENERATE,
    "/v1/translations": TaskKind.TRANSLATE,
    "/v1/classifications": TaskKind.SENTIMENT,
}
CHAT = "/v1/chat/completions"
MAX_N = 8
MAX_STOP = 4


class LineProblem(Exception):
    """One bad line: an OpenAI batch error object {code, message, line, param}."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    def as_error(self, line_no: int) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": line_no, "param": self.param}


@dataclass
class BatchLine:
    line_no: int
    custom_id: str
    model: str
    text: str | None = None  # the prompt or input, for every endpoint except chat
    messages: list[dict[str, str]] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def read_lines(stream: IO[bytes], *, endpoint: str,
               max_line_bytes: int) -> Iterator[BatchLine | dict[str, Any]]:
    """Each non-blank line as a BatchLine, or as an error object naming its line."""
    for line_no, raw in _read_lines(stream, max_line_bytes):
        if raw is None:
            yield LineProblem("line_too_long", f"line is longer than {max_line_bytes} bytes "
                              "(NIGHTOWL_MAX_LINE_BYTES)").as_error(line_no)
            continue
        if not raw.strip():
            continue
        try:
            yield parse_line(raw, line_no, endpoint)
        except LineProblem as p:
            yield p.as_error(line_no)


def parse_line(raw: bytes, line_no: int, endpoint: str) -> BatchLine:
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
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise LineProblem("missing_required_parameter", "body.model must name a nightowl model "
                          "(see GET /v1/models)", "body.model")
    line = BatchLine(line_no, custom_id, model.strip(), params=_params(body, ENDPOINTS[url]))
    if url == CHAT:
        line.messages = _messages(body.get("messages"))
    elif url == "/v1/completions":
        line.text = _prompt(body.get("prompt"))
    else:
        line.text = _required_text(body.get("input"), "body.input")
    return line


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise LineProblem("invalid_request", "body.prompt may hold one prompt per request line; "
                          "put each prompt on its own line", "body.prompt")
    return _required_text(prompt, "body.prompt")


def _required_text(value: Any, param: str) -> str:
    if value is None:
        raise LineProblem("missing_required_parameter", f"{param} is required", param)
    if not isinstance(value, str):
        raise LineProblem("invalid_request", f"{param} must be a string, got "
                          f"{type(value).__name__}", param)
    if not value.strip():
        raise LineProblem("invalid_request", f"{param} is empty", param)
    return value


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise LineProblem("missing_required_parameter",
                          "body.messages must be a non-empty list of {role, content}",
                          "body.messages")
    out = []
    for i, m in enumerate(messages):
        where = f"body.messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise LineProblem("invalid_request", f"{where}.role must be one of "
                              f"{', '.join(ROLES)}", f"{where}.role")
        text = message_text(m.get("content"))
        if text is None:
            raise LineProblem("invalid_request", f"{where}.content must be a string or a list of "
                              "text parts", f"{where}.content")
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
        raise LineProblem("invalid_request", f"body.{key} must be {kind} from {low:g} to "
                          f"{high:g}, got {value!r}", f"body.{key}")
    return value


def _params(body: dict[str, Any], kind: TaskKind) -> dict[str, Any]:
    """OpenAI request parameters as the runner's: max_tokens -> max_new_tokens, n ->
    num_return_sequences, temperature 0 -> greedy. Parameters with no counterpart are ignored."""
    if body.get("stream"):
        raise LineProblem("invalid_request", "body.stream is not supported in a batch",
                          "body.stream")
    params: dict[str, Any] = {}
    if kind == TaskKind.SENTIMENT:
        if body.get("all_scores") is not None:
            if not isinstance(body["all_scores"], bool):
                raise LineProblem("invalid_request", "body.all_scores must be true or false",
                                  "body.all_scores")
            params["all_scores"] = body["all_scores"]
        return params
    for key in ("max_completion_tokens", "max_tokens"):
        if (value := _number(body, key, 1, 1_000_000, integer=True)) is not None:
            params["max_new_tokens"] = value
    if kind == TaskKind.TRANSLATE:
        if (beams := _number(body, "num_beams", 1, MAX_N, integer=True)) is not None:
            params["num_beams"] = beams
        return params
    temperature = _number(body, "temperature", 0, 2)
    if temperature is not None:
        if temperature == 0:
            params["do_sample"] = False
        else:
            params["temperature"], params["do_sample"] = float(temperature), True
    if (top_p := _number(body, "top_p", 0, 1)) is not None and top_p > 0:
        params["top_p"] = float(top_p)
    if (top_k := _number(body, "top_k", 0, 100_000, integer=True)) is not None:
        params["top_k"] = top_k
    if (n := _number(body, "n", 1, MAX_N, integer=True)) is not None and n > 1:
        params["num_return_sequences"] = n
    if (seed := _number(body, "seed", -(2**63), 2**63 - 1, integer=True)) is not None:
        params["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (not isinstance(stops, list) or len(stops) > MAX_STOP
                or not all(isinstance(s, str) and s for s in stops)):
            raise LineProblem("invalid_request", f"body.stop must be a string or a list of at "
                              f"most {MAX_STOP} non-empty strings", "body.stop")
        if stops:
            params["stop"] = stops
    return params
