"""Streaming readers for job input: JSONL or CSV, line-numbered problems, never the whole file.

A sentiment line may carry an optional string "label" (the known answer); it is kept in the
item's input so nightly fine-tunes can learn from labelled traffic.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from nightowl.common.enums import ErrorCode, TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.common.specs import check_params
from nightowl.common.values import check_json, text_problem

MAX_CUSTOM_ID = 200


@dataclass
class ParsedLine:
    line_no: int
    custom_id: str
    input: dict[str, Any]
    error: tuple[ErrorCode, str] | None = None


def _read_lines(stream: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line_no, raw bytes), or None for a line over the limit (whose rest is skipped)."""
    line_no = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while True:
                rest = stream.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield line_no, None
            continue
        yield line_no, raw


def _decode(raw: bytes) -> str:
    if b"\x00" in raw:
        raise ValueError("binary data (NUL bytes); input must be UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "re-encode the file as UTF-8"
        ) from e


def _item(
    kind: TaskKind, obj: Any, line_no: int, check_length: Callable[[str], str | None] | None
) -> ParsedLine:
    default_id = str(line_no)
    if not isinstance(obj, dict):
        return ParsedLine(
            line_no, default_id, {}, (ErrorCode.INVALID_INPUT, "expected a JSON object per line")
        )
    custom_id = obj.get("custom_id", default_id)
    if isinstance(custom_id, int) and not isinstance(custom_id, bool):
        custom_id = str(custom_id)
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return ParsedLine(
            line_no,
            default_id,
            {},
            (ErrorCode.INVALID_INPUT, f"custom_id must be a non-empty string of at most "
             f"{MAX_CUSTOM_ID} characters, got {custom_id!r:.60}"),
        )
    field = kind.input_field
    text = obj.get(field)
    if text is None:
        return ParsedLine(
            line_no, custom_id, {}, (ErrorCode.INVALID_INPUT, f"missing field {field!r}")
        )
    if not isinstance(text, str):
        return ParsedLine(
            line_no,
            custom_id,
            {},
            (ErrorCode.INVALID_INPUT,
             f"field {field!r} must be a string, got {type(text).__name__}"),
        )
    if not text.strip():
        return ParsedLine(
            line_no, custom_id, {}, (ErrorCode.INVALID_INPUT, f"field {field!r} is empty")
        )
    data: dict[str, Any] = {field: text}
    params = obj.get("params")
    if params is not None:
        if not isinstance(params, dict):
            return ParsedLine(
                line_no, custom_id, {}, (ErrorCode.INVALID_INPUT, "params must be an object")
            )
        data["params"] = params
    if kind == TaskKind.SENTIMENT and "label" in obj:
        # A known label rides along with the item so scheduled fine-tunes can train on it
        # (`{"query": {"labelled_since": ...}}`); the model never sees it.
        label = obj["label"]
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        if not isinstance(label, str) or not label.strip():
            return ParsedLine(
                line_no, custom_id, {},
                (ErrorCode.INVALID_INPUT, "label must be a non-empty string when given"),
            )
        data["label"] = label
    try:
        # Text the database cannot store (lone surrogates) or params a runner would refuse
        # become this line's error now, not a failure per item in the worker.
        check_json("the line", {"custom_id": custom_id, **data})
        if "params" in data:
            check_params(kind, data["params"])
    except InvalidInput as e:
        return ParsedLine(line_no, custom_id if text_problem(custom_id) is None else default_id, {},
                          (ErrorCode.INVALID_INPUT, str(e).split("\n")[0]))
    if check_length is not None and (problem := check_length(text)):
        return ParsedLine(line_no, custom_id, data, (ErrorCode.TOO_LONG, problem))
    return ParsedLine(line_no, custom_id, data)


def read_jsonl(
    stream: IO[bytes],
    *,
    kind: TaskKind,
    max_line_bytes: int,
    check_length: Callable[[str], str | None] | None = None,
) -> Iterator[ParsedLine]:
    for line_no, raw in _read_lines(stream, max_line_bytes):
        if raw is None:
            yield _too_long(line_no, max_line_bytes)
            continue
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark, as some Windows editors write
        if not raw.strip():
            continue
        try:
            obj = json.loads(_decode(raw))
        except RecursionError:
            yield ParsedLine(line_no, str(line_no), {}, (
                ErrorCode.INVALID_INPUT, "malformed JSON: nested too deeply"))
            continue
        except ValueError as e:
            msg = str(e) if "UTF-8" in str(e) or "binary" in str(e) else f"malformed JSON: {e}"
            yield ParsedLine(line_no, str(line_no), {}, (ErrorCode.INVALID_INPUT, msg))
            continue
        yield _item(kind, obj, line_no, check_length)


def read_items(
    items: Sequence[Mapping[str, Any]],
    *,
    kind: TaskKind,
    max_line_bytes: int,
    check_length: Callable[[str], str | None] | None = None,
) -> Iterator[ParsedLine]:
    """Items given inline (already parsed): item n is checked as line n of a file would be,
    its size included (measured as the JSON line it stands for; never parsed again)."""
    for line_no, obj in enumerate(items, start=1):
        size = len(json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > max_line_bytes:
            yield _too_long(line_no, max_line_bytes)
            continue
        yield _item(kind, dict(obj), line_no, check_length)


def _too_long(line_no: int, max_line_bytes: int) -> ParsedLine:
    return ParsedLine(line_no, str(line_no), {}, (
        ErrorCode.INVALID_INPUT,
        f"line is longer than {max_line_bytes} bytes (NIGHTOWL_MAX_LINE_BYTES)"))


def read_csv(
    stream: IO[bytes],
    *,
    kind: TaskKind,
    column: str,
    id_column: str | None,
    max_line_bytes: int,
    check_length: Callable[[str], str | None] | None = None,
) -> Iterator[ParsedLine]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="")
    csv.field_size_limit(max_line_bytes)
    # strict: a quote left open is an error at its line, not a field that swallows the rest of
    # the file (newlines included) and is queued as text.
    reader = csv.DictReader(text, strict=True)
    try:
        header = reader.fieldnames
    except UnicodeDecodeError as e:
        raise InvalidInput("line 1: the CSV header is not valid UTF-8; re-encode as UTF-8") from e
    if not header:
        raise InvalidInput("the CSV file is empty: it has no header line")
    missing = [c for c in (column, id_column) if c and c not in header]
    if missing:
        raise InvalidInput(
            f"line 1: CSV column(s) {', '.join(map(repr, missing))} not found; "
            f"the header has {', '.join(map(repr, header))} (choose with --column / --id-column)"
        )
    while True:
        # The row's first line (a quoted field may span several); DictReader.line_num is only
        # updated on success, so read the inner reader's.
        start = reader.reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            line_no = reader.line_num + 1
            raise InvalidInput(
                f"line {line_no}: not valid UTF-8; re-encode the file as UTF-8"
            ) from None
        except csv.Error as e:
            yield ParsedLine(start, str(start), {}, (ErrorCode.INVALID_INPUT, _csv_problem(
                e, start, reader.reader.line_num)))
            continue
        line_no = reader.line_num
        obj: dict[str, Any] = {kind.input_field: row.get(column)}
        if id_column:
            obj["custom_id"] = row.get(id_column)
        yield _item(kind, obj, line_no, check_length)


def _csv_problem(error: csv.Error, start: int, end: int) -> str:
    opened = f"malformed CSV: a quoted field opened on line {start}"
    fix = 'close the quote at the end of its field, and write a quote inside a field as ""'
    if "unexpected end of data" in str(error):
        upto = f" (it runs to line {end}, the end of the file)" if end > start else ""
        return f"{opened} is never closed{upto}; {fix}"
    if "expected after" in str(error):
        where = f" on line {end}" if end > start else ""
        return f"{opened} is closed{where} by a quote that is not followed by a comma; {fix}"
    return f"malformed CSV: {error}"
