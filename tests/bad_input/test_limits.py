"""The limits in Settings hold on every way in: the CLI on the database, HTTP, and the CLI
through the API (`nightowl --api URL submit`). Each refusal names the setting, and nothing
is left behind: no job or item rows, no uploaded bytes on disk."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from helpers import api_process, write_jsonl
from nightowl.cli import cli
from nightowl.common.config import Settings, get_settings
from nightowl.platform.orm import File, Job, JobItem

LIMITS = {"NIGHTOWL_MAX_ITEMS_PER_JOB": "3", "NIGHTOWL_MAX_LINE_BYTES": "200",
          "NIGHTOWL_MAX_UPLOAD_BYTES": "2000"}
ITEMS_MSG = "more than 3 items in one job (NIGHTOWL_MAX_ITEMS_PER_JOB); split the file"
LINE_MSG = "line 2: line is longer than 200 bytes (NIGHTOWL_MAX_LINE_BYTES)"
UPLOAD_MSG = "is larger than 2000 bytes (NIGHTOWL_MAX_UPLOAD_BYTES); split it"


@pytest.fixture
def small_limits(models: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """This process (CLI and in-process API) runs with small limits for the test."""
    for key, value in LIMITS.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


def _counts(session: Session) -> tuple[int, int, int]:
    session.expire_all()
    counts = tuple(session.scalar(select(func.count()).select_from(m)) or 0
                   for m in (Job, JobItem, File))
    session.commit()
    return counts  # type: ignore[return-value]


def _stored_files(settings: Settings) -> set[str]:
    folder = settings.home / "files"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _four_items(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "four.jsonl", [{"text": f"review {i}"} for i in range(4)])


def _long_line(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "long.jsonl", [{"text": "short"}, {"text": "x" * 300}])


def _big_file(tmp_path: Path) -> Path:
    # Lines under the line limit, but more bytes than an upload may have.
    return write_jsonl(tmp_path / "big.jsonl", [{"text": "y" * 150} for _ in range(20)])


@pytest.mark.parametrize(("make", "message"), [(_four_items, ITEMS_MSG), (_long_line, LINE_MSG)])
def test_cli_on_the_database_enforces_items_and_line_limits(
    small_limits: Settings, session: Session, tmp_path: Path,
    make: Callable[[Path], Path], message: str
) -> None:
    before = _counts(session)
    result = CliRunner().invoke(cli, ["submit", "sentiment", str(make(tmp_path)),
                                      "--model", "tiny-sentiment"])
    assert result.exit_code != 0 and message in result.output, result.output
    assert _counts(session) == before


@pytest.mark.parametrize(("make", "message"), [(_four_items, ITEMS_MSG), (_long_line, LINE_MSG)])
def test_http_enforces_items_and_line_limits_on_files_and_inline_items(
    small_limits: Settings, session: Session, client: Any, tmp_path: Path,
    make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    before = _counts(session)
    uploaded = client.post("/v1/files", data={"purpose": "jobs"},
                           files={"file": (path.name, path.read_bytes())})
    assert uploaded.status_code == 200, uploaded.text
    by_file = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment",
                                            "file_id": uploaded.json()["id"]})
    items = [json.loads(line) for line in path.read_text().splitlines()]
    inline = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment",
                                           "items": items})
    for response in (by_file, inline):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        text = "\n".join([error["message"], *(f"{p['where']}: {p['message']}"
                                               for p in error.get("problems") or [])])
        assert message in text
    jobs, items_, files = _counts(session)
    assert (jobs, items_) == before[:2] and files == before[2] + 1  # only the upload


def test_http_refuses_an_upload_over_the_limit_and_keeps_none_of_it(
    small_limits: Settings, session: Session, client: Any, tmp_path: Path
) -> None:
    path = _big_file(tmp_path)
    before, stored = _counts(session), _stored_files(small_limits)
    response = client.post("/v1/files", data={"purpose": "jobs"},
                           files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 400, response.text
    assert UPLOAD_MSG in response.json()["error"]["message"]
    assert _counts(session) == before
    assert _stored_files(small_limits) == stored


@pytest.fixture
def limited_api(models: Settings, tmp_path: Path) -> Iterator[str]:
    """A real `nightowl api` process started with the small limits."""
    with api_process(LIMITS, tmp_path / "api.log") as url:
        yield url



@pytest.mark.parametrize(("make", "message"), [
    (_four_items, ITEMS_MSG), (_long_line, LINE_MSG), (_big_file, UPLOAD_MSG)])
def test_cli_through_the_api_gets_each_limit_named(
    limited_api: str, api_key: str, session: Session, tmp_path: Path,
    make: Callable[[Path], Path], message: str
) -> None:
    before = _counts(session)
    result = CliRunner().invoke(cli, ["--api", limited_api, "--key", api_key, "submit",
                                      "sentiment", str(make(tmp_path)), "--model",
                                      "tiny-sentiment"])
    assert result.exit_code != 0, result.output
    assert message in result.output, result.output
    jobs, items, _ = _counts(session)
    assert (jobs, items) == before[:2]
