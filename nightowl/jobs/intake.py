"""One intake for a bulk job: where its items come from -> checked, line-numbered items.

A server path (CLI, schedule), an uploaded file id (HTTP, schedule) or items given inline
(HTTP) all become the same ParsedLine stream. The model is resolved once per submit: that
pinned version serves the context-length check and the job row alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.errors import InvalidInput
from nightowl.common.tokens import length_checker
from nightowl.jobs.inputs import ParsedLine, read_csv, read_items, read_jsonl
from nightowl.jobs.service import JobSpec, check_spec, resolve_model, submit_job
from nightowl.platform.orm import Job, ModelVersion
from nightowl.storage.files import get_file, local_path


@dataclass(frozen=True)
class FromPath:
    """A file the submitting process can read ('-': standard input)."""

    path: str
    fmt: str | None = None  # jsonl or csv; None: see input_format
    column: str | None = None
    id_column: str | None = None


@dataclass(frozen=True)
class FromFile:
    """A file uploaded with POST /v1/files, named by its id; its format as for FromPath, the
    name being the one it was uploaded under."""

    file_id: str
    fmt: str | None = None
    column: str | None = None
    id_column: str | None = None


@dataclass(frozen=True)
class Inline:
    """Items as objects, already parsed: line n is the n-th item."""

    items: Sequence[Mapping[str, Any]]


Source = FromPath | FromFile | Inline


def submit(*, session: Session, settings: Settings, spec: JobSpec, source: Source) -> Job:
    """Resolve the model once, read and check every item, store and queue the job."""
    # The request's own values first: a bad one is named before any lookup or read.
    check_spec(settings, spec)
    version = resolve_model(session, spec)
    if isinstance(source, FromFile):
        spec.input_file_id = source.file_id
    with open_lines(session, settings, source, spec=spec, version=version) as lines:
        return submit_job(session=session, settings=settings, spec=spec, lines=lines,
                          version=version)


@contextmanager
def open_lines(session: Session, settings: Settings, source: Source, *, spec: JobSpec,
               version: ModelVersion) -> Iterator[Iterator[ParsedLine]]:
    """The source's items, each checked against the kind and (unless truncating) the pinned
    version's context length."""
    kind = spec.kind
    check = None if spec.truncate else length_checker(version.source, kind)
    if isinstance(source, Inline):
        yield read_items(source.items, kind=kind, max_line_bytes=settings.max_line_bytes,
                         check_length=check)
        return
    if isinstance(source, FromFile):
        row = get_file(session, source.file_id, tenant_id=spec.tenant_id)
        path, name = local_path(row, settings), row.filename
    else:
        path, name = Path(source.path), source.path
    fmt = input_format(name, source.fmt, source.column, source.id_column)
    with _open(path) as stream:
        if fmt == "csv":
            yield read_csv(stream, kind=kind, column=source.column or kind.input_field,
                           id_column=source.id_column, max_line_bytes=settings.max_line_bytes,
                           check_length=check)
        else:
            yield read_jsonl(stream, kind=kind, max_line_bytes=settings.max_line_bytes,
                             check_length=check)


def input_format(name: str, fmt: str | None, column: str | None, id_column: str | None) -> str:
    """csv when a column is named (it implies csv) or, with no format given, for a .csv name;
    else the format given, jsonl by default."""
    if column or id_column or (fmt is None and name.lower().endswith(".csv")):
        return "csv"
    return fmt or "jsonl"


@contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    if str(path) == "-":
        yield sys.stdin.buffer
        return
    if not path.is_file():
        raise InvalidInput(f"file {str(path)!r} does not exist")
    with path.open("rb") as stream:
        yield stream
