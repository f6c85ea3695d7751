"""Each job kind's parameters, in one place: names, types, ranges, defaults and limits.

Torch-free, so every door (CLI, HTTP, schedule, retry, batch line) checks a request at submit
with the same definition the worker's runner applies; a runner reads its names and limits from
here and adds only what a loaded model knows (its position limit).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, overload

from nightowl.enums import TaskKind
from nightowl.errors import InvalidInput, InvalidParams

# Generation
# No model here has more positions than this; a larger request is a typo, not a wish.
MAX_NEW_TOKENS = 65_536
DEFAULT_MAX_NEW_TOKENS = 32
MAX_RETURN_SEQUENCES = 8
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 200
MAX_TOP_LOGPROBS = 20
# OpenAI's range for presence_penalty and frequency_penalty.
PENALTY_RANGE = (-2.0, 2.0)
# torch.manual_seed takes a non-negative 64-bit integer.
SEED_RANGE = (0, 2**63 - 1)
MAX_TOP_K = 1_000_000
GENERATE_PARAMS = (
    "max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "seed",
    "num_return_sequences", "stop", "logprobs", "top_logprobs", "presence_penalty",
    "frequency_penalty", "repetition_penalty",
)
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")

# Translation
DEFAULT_TRANSLATE_NEW_TOKENS = 128
MAX_BEAMS = 8
TRANSLATE_PARAMS = ("max_new_tokens", "num_beams")

# Sentiment
SENTIMENT_PARAMS = ("all_scores",)

# Embeddings: `dimensions` keeps the first N components (then normalises again, as OpenAI's
# text-embedding-3 models do); encoding_format only changes how the vector is written out.
EMBED_PARAMS = ("dimensions", "normalize")
ENCODING_FORMATS = ("float", "base64")

PARAMS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.GENERATE: GENERATE_PARAMS,
    TaskKind.TRANSLATE: TRANSLATE_PARAMS,
    TaskKind.SENTIMENT: SENTIMENT_PARAMS,
    TaskKind.EMBED: EMBED_PARAMS,
}
# No encoder here is wider than this; `dimensions` above the model's width is refused by the runner.
MAX_DIMENSIONS = 65_536
MAX_SEED = SEED_RANGE[1]
# A job's deadline: beyond a year is a unit mistake (and 1e308 s overflows a timedelta).
MAX_DEADLINE = timedelta(days=366)
# JSON nesting deeper than this in params, metadata or an item is refused, not recursed into.
MAX_DEPTH = 32


@overload
def param_int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int: ...
@overload
def param_int(
    params: Mapping[str, Any], name: str, default: None, low: int, high: int
) -> int | None: ...
def param_int(
    params: Mapping[str, Any], name: str, default: int | None, low: int, high: int
) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    # bool is an int in Python; `true` for a token count is a user mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParams(
            f"{name} must be an integer between {low} and {high}, got {value!r}",
            [(name, f"integer {low}..{high}")],
        )
    if not low <= value <= high:
        raise InvalidParams(
            f"{name} must be between {low} and {high}, got {value}",
            [(name, f"integer {low}..{high}")],
        )
    return value


def param_float(
    params: Mapping[str, Any],
    name: str,
    *,
    low: float,
    high: float,
    low_open: bool,
    describe: str,
) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok_type and math.isfinite(value):
        above = value > low if low_open else value >= low
        if above and value <= high:
            return float(value)
    raise InvalidParams(f"{name} must be {describe}, got {value!r}", [(name, describe)])


@overload
def param_bool(params: Mapping[str, Any], name: str, default: bool) -> bool: ...
@overload
def param_bool(params: Mapping[str, Any], name: str, default: None) -> bool | None: ...
def param_bool(params: Mapping[str, Any], name: str, default: bool | None) -> bool | None:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParams(
            f"{name} must be true or false, got {value!r}", [(name, "true or false")]
        )
    return value


def stop_strings(value: Any) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    ok = (
        isinstance(values, list)
        and len(values) <= MAX_STOP_STRINGS
        and all(isinstance(v, str) and 0 < len(v) <= MAX_STOP_LENGTH for v in values)
    )
    if not ok:
        raise InvalidParams(
            f"stop must be a non-empty string or a list of up to {MAX_STOP_STRINGS} non-empty "
            f"strings of at most {MAX_STOP_LENGTH} characters, got {value!r}",
            [("stop", "string or list of strings")],
        )
    return list(values)


def check_params(kind: TaskKind, params: object) -> dict[str, Any]:
    """The model-independent half of each runner's sanitize step, at submit time."""
    if not isinstance(params, dict):
        raise InvalidParams("params must be an object of name: value", [("params", "object")])
    check_json("params", params)
    allowed = PARAMS[kind]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidParams(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {kind.value}; "
            f"allowed: {', '.join(allowed)}",
            [(name, "not a parameter of this task") for name in unknown])
    if kind in (TaskKind.GENERATE, TaskKind.TRANSLATE):
        param_int(params, "max_new_tokens", None, 1, MAX_NEW_TOKENS)
    if kind == TaskKind.GENERATE:
        param_float(params, "temperature", low=0, high=math.inf, low_open=True,
                    describe="a number > 0")
        param_float(params, "top_p", low=0, high=1, low_open=True, describe="a number in (0, 1]")
        param_int(params, "top_k", None, 0, MAX_TOP_K)
        param_int(params, "seed", None, *SEED_RANGE)
        param_int(params, "num_return_sequences", None, 1, MAX_RETURN_SEQUENCES)
        param_bool(params, "do_sample", None)
        stop_strings(params.get("stop"))
        param_bool(params, "logprobs", None)
        param_int(params, "top_logprobs", None, 0, MAX_TOP_LOGPROBS)
        low, high = PENALTY_RANGE
        for name in ("presence_penalty", "frequency_penalty"):
            param_float(params, name, low=low, high=high, low_open=False,
                        describe=f"a number from {low} to {high}")
        param_float(params, "repetition_penalty", low=0, high=math.inf, low_open=True,
                    describe="a number > 0")
    elif kind == TaskKind.TRANSLATE:
        param_int(params, "num_beams", None, 1, MAX_BEAMS)
    elif kind == TaskKind.EMBED:
        param_int(params, "dimensions", None, 1, MAX_DIMENSIONS)
        param_bool(params, "normalize", None)
    else:
        param_bool(params, "all_scores", None)
    return params


def deadline(seconds: float | None) -> timedelta | None:
    if seconds is None:
        return None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or \
            not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_DEADLINE.total_seconds():
        raise InvalidInput(f"deadline {seconds!r} s must be a number of seconds in "
                           f"(0, {int(MAX_DEADLINE.total_seconds())}] (at most 366 days)",
                           param="deadline_seconds")
    return timedelta(seconds=seconds)


def check_json(where: str, value: object, *, max_bytes: int | None = None) -> None:
    """Refuse what the database cannot store or a reader cannot walk: lone surrogates (not
    UTF-8), nesting past MAX_DEPTH, and (given max_bytes) a serialised size over it."""
    _walk(where, value, 0)
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{where} holds a lone surrogate (like \\ud800), which is not "
                           "text; fix the encoding", param=where) from None
    except ValueError:
        raise InvalidInput(f"{where} holds NaN or Infinity, which JSON cannot carry",
                           param=where) from None
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(f"{where} is {size} bytes serialised, over the limit of {max_bytes}"
                           " (NIGHTOWL_MAX_METADATA_BYTES); keep labels small", param=where)


def _walk(where: str, value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{where} is nested deeper than {MAX_DEPTH} levels", param=where)
    if isinstance(value, dict):
        for k, v in value.items():
            _walk(where, k, depth + 1)
            _walk(where, v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _walk(where, v, depth + 1)
