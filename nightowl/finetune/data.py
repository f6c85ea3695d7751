"""Fine-tune datasets: validated line by line, copied into the run's artifact folder."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidInput
from nightowl.common.private import private_dir, private_file

FIELDS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.SENTIMENT: ("text", "label"),
    TaskKind.TRANSLATE: ("source", "target"),
    TaskKind.GENERATE: ("text",),
}
MAX_PROBLEMS = 50


def read_rows(path: Path, kind: TaskKind, *, what: str = "training file") -> list[dict[str, Any]]:
    """Rows of a fine-tune file; any problem is reported with its line number, nothing kept."""
    if not path.is_file():
        raise InvalidInput(f"{what} {str(path)!r} does not exist")
    rows: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    # Every line is checked, so the error can say how many are bad; the first few are listed.
    invalid = total = 0
    plain_text = kind == TaskKind.GENERATE and path.suffix.lower() == ".txt"
    for line_no, raw in _lines(path):
        if not raw.strip():
            continue
        total += 1
        if plain_text:
            rows.append({"text": raw.rstrip("\n")})
            continue
        row, problem = _row(raw, kind)
        if problem is None:
            rows.append(row)
            continue
        invalid += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append((f"line {line_no}", problem))
    if problems:
        raise InvalidInput(f"{what} {path.name}: {invalid} of {total} lines are invalid; "
                           "nothing was queued", problems, of_lines=(invalid, total))
    if not rows:
        raise InvalidInput(f"{what} {path.name} is empty: no rows to train on")
    if kind == TaskKind.SENTIMENT:
        labels = sorted({r["label"] for r in rows})
        if len(labels) < 2:
            raise InvalidInput(
                f"{what} {path.name} has a single label {labels[0]!r}; a classifier needs at "
                "least two classes"
            )
    return rows


def _row(raw: str, kind: TaskKind) -> tuple[dict[str, Any], str | None]:
    """One line as a training row, or what is wrong with it."""
    try:
        obj = json.loads(raw)
    except ValueError as e:
        return {}, f"malformed JSON: {e}"
    if not isinstance(obj, dict):
        return {}, "expected a JSON object per line"
    row: dict[str, Any] = {}
    for field in FIELDS[kind]:
        value = obj.get(field)
        if field == "label" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            return {}, f"missing or empty field {field!r} (a string)"
        row[field] = value
    return row, None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidInput(f"line {line_no} of {path.name} is not valid UTF-8") from e


def split(rows: list[dict[str, Any]], fraction: float, seed: int
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not 0 < fraction < 1:
        raise InvalidInput(f"--eval-split must be between 0 and 1, not {fraction}")
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = max(1, int(len(shuffled) * fraction))
    if n_eval >= len(shuffled):
        raise InvalidInput("too few rows to split off an eval set; give --eval FILE")
    return shuffled[n_eval:], shuffled[:n_eval]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """A tenant's training data: in a 0700 folder, the file 0600 from its first byte."""
    private_dir(path.parent)
    with private_file(path).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check_eval_labels(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]]) -> None:
    """A classifier cannot be judged on labels it never saw trained."""
    stray = sorted({r["label"] for r in eval_rows} - {r["label"] for r in train_rows})
    if stray:
        raise InvalidInput(f"eval labels {stray} never appear in the training data", param="eval")
