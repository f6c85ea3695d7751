"""Value checkers shared by submit (nightowl.common.specs) and the workers' runners, and how a
declared field's range is read and worded.

Each names the field, the accepted range and the value it got, so a bad value reads the same
whichever door it came through and whichever side (submit or worker) caught it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, get_args, overload

import annotated_types as at
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from nightowl.common.errors import InvalidInput, InvalidParams

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
    """Refuse what the database cannot store or a reader cannot walk: text with NUL or lone
    surrogates (check_text), nesting past MAX_DEPTH, NaN or Infinity, and (given max_bytes) a
    serialised size over it."""
    _walk(where, value, 0)
    check_text(where, value)
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))
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


def text_problem(value: object) -> tuple[str, str] | None:
    """(path, what) of the first string, key or value, that is not storable text, else None.

    The one rule for every door: PostgreSQL refuses NUL in text (and a row holding one breaks
    every later reader on SQLite), and a lone surrogate is not UTF-8 at all. Walked with a
    stack, so a body nested thousands deep cannot exhaust the recursion limit."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return path, "a NUL character (\\u0000), which cannot be stored as text"
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return path, "a lone surrogate (like \\ud800), which is not text"
        elif isinstance(v, dict):
            for k, x in v.items():
                name = printable(str(k))
                stack.append((f"{path}.{name}" if path else name, x))
                stack.append((f"{path}.{name}" if path else name, k))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in enumerate(v))
    return None


def check_text(where: str, value: object) -> None:
    """InvalidInput naming the field if `value` holds text the database cannot store."""
    found = text_problem(value)
    if found is not None:
        path, what = found
        field = f"{where}.{path}" if path and where else (path or where)
        raise InvalidInput(f"{field} holds {what}; remove it or fix the encoding",
                           param=field or None)


def printable(text: str) -> str:
    """`text` with NUL and lone surrogates shown as escapes: safe to quote in a message."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()


def bounds(info: FieldInfo) -> tuple[float | None, bool, float | None, bool]:
    """(low, low excluded?, high, high excluded?) of a field, from its declared constraints."""
    low: float | None = None
    high: float | None = None
    low_open = high_open = False
    for m in info.metadata:
        if isinstance(m, at.Ge):
            low = m.ge  # type: ignore[assignment]
        elif isinstance(m, at.Gt):
            low, low_open = m.gt, True  # type: ignore[assignment]
        elif isinstance(m, at.Le):
            high = m.le  # type: ignore[assignment]
        elif isinstance(m, at.Lt):
            high, high_open = m.lt, True  # type: ignore[assignment]
    return low, low_open, high, high_open


def field_types(info: FieldInfo) -> tuple[Any, ...]:
    return get_args(info.annotation) or (info.annotation,)


def describe_number(low: float, low_open: bool, high: float | None) -> str:
    if high is None or math.isinf(high):
        return f"a number {'>' if low_open else '>='} {low:g}"
    if low_open:
        return f"a number in ({low:g}, {high:g}]"
    return f"a number from {low!r} to {high!r}"


def shown(value: object) -> str:
    """A whole float as the integer it is: `--lr -1` (a float option) and `"lr": -1` in JSON
    read the same in the message."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its $defs written in place, to sit inside another schema."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    # The field that holds it keeps its own title and help text.
    return {k: v for k, v in out.items() if k not in ("title", "description")}


def invalid(error: ValidationError, *, prefix: str = "") -> InvalidInput:
    """A pydantic error as the API words a malformed body: `field: what is wrong`."""
    problems = []
    for e in error.errors():
        where = prefix + ".".join(str(p) for p in e["loc"])
        problems.append((where or "request", str(e["msg"])))
    where, msg = problems[0]
    return InvalidInput(f"{where}: {msg}", problems if len(problems) > 1 else None,
                        param=where)


# One range for every entry point (CLI, HTTP, schedules, the OpenAI-compatible routes).
PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = -100, 100, 0
# What interactive one-item requests should use, so they pass bulk work already queued.
PRIORITY_INTERACTIVE = 50


# OpenAI's metadata limits (batches, responses, fine-tuning jobs): 16 pairs, keys up to 64
# characters, values up to 512.
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


def metadata_problem(metadata: Any) -> str | None:
    """Why `metadata` is not an OpenAI metadata map, or None when it is one."""
    if not isinstance(metadata, dict):
        return "metadata must be an object of string keys to string values"
    if len(metadata) > MAX_METADATA_PAIRS:
        return f"metadata has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS}"
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY or not isinstance(value, str) or (
            len(value) > MAX_METADATA_VALUE
        ):
            return (f"metadata[{key!r:.70}] must be a string of at most {MAX_METADATA_VALUE} "
                    f"characters under a key of at most {MAX_METADATA_KEY}")
    return None
