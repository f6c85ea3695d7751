"""One rule for text the database cannot store (NUL, lone surrogates), held at every door: a
URL's ids and filters, any JSON body field, an uploaded file's lines; and cursors past their
column's range. Each is a 4xx naming where, never a 500, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.orm import Session

from helpers import count_rows
from nightowl.common.config import Settings
from nightowl.platform.orm import File, Job

URLS = [
    "/v1/jobs/job_%00x", "/v1/jobs/job_%00x/results", "/v1/files/file-%00",
    "/v1/finetunes/run_%00", "/v1/schedules/a%00b", "/v1/results?contains=%00",
    "/v1/results?label=a%00", "/v1/results?job=job_%00", "/v1/files?purpose=%00",
    "/v1/jobs?status=%00",
]


@pytest.mark.parametrize("url", URLS)
def test_a_nul_in_an_id_or_filter_is_a_400(url: str, client: Any) -> None:
    response = client.get(url)
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["error"]["message"]


def _raw(body: str) -> dict[str, Any]:
    """Keyword arguments posting `body` as JSON text (escapes such as \\ud800 kept as written)."""
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


BODIES = [
    ("/v1/jobs", '{"kind": "generate", "model": "tiny-generator", "items": '
                 '[{"text": "a\\u0000b"}]}', "items[0].text"),
    ("/v1/jobs", '{"kind": "generate", "model": "tiny-generator", "items": '
                 '[{"custom_id": "x\\u0000", "text": "ok"}]}', "items[0].custom_id"),
    ("/v1/jobs", '{"kind": "generate", "model": "tiny-generator", "file_id": "file-\\u0000"}',
     "file_id"),
    ("/v1/chat/completions", '{"model": "tiny-generator", "messages": '
                             '[{"role": "user", "content": "hi \\ud800"}]}', "content"),
    ("/v1/completions", '{"model": "tiny-generator", "prompt": "\\udfff"}', "prompt"),
    ("/v1/batches", '{"input_file_id": "file-\\ud800", "endpoint": "/v1/completions", '
                    '"completion_window": "24h"}', "input_file_id"),
    ("/v1/finetunes", '{"kind": "sentiment", "base": "tiny-sentiment", '
                      '"training_file": "file-\\u0000"}', "training_file"),
]


@pytest.mark.parametrize(("path", "body", "field"), BODIES)
def test_a_body_field_holding_nul_or_a_lone_surrogate_is_named(
        path: str, body: str, field: str, client: Any, models: Settings,
        session: Session) -> None:
    before = count_rows(session, Job)
    response = client.post(path, **_raw(body))
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"], response.text
    assert count_rows(session, Job) == before


def test_an_uploaded_line_with_nul_is_refused_by_line_number(
        client: Any, models: Settings, session: Session) -> None:
    lines = json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "a\u0000b"}) + "\n"
    up = client.post("/v1/files", files={"file": ("in.jsonl", lines)},
                     data={"purpose": "jobs"})
    assert up.status_code == 200, up.text
    before = count_rows(session, Job)
    response = client.post("/v1/jobs", json={"kind": "generate", "model": "tiny-generator",
                                             "file_id": up.json()["id"]})
    assert response.status_code == 400, response.text
    assert "line 2" in response.text and "NUL" in response.text
    assert count_rows(session, Job) == before


def test_a_filename_with_nul_is_refused(client: Any, session: Session) -> None:
    before = count_rows(session, File)
    # Written by hand: HTTP clients percent-encode a NUL in a filename, a stranger need not.
    body = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\njobs\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00.jsonl"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n{}\n\r\n--b--\r\n")
    response = client.post("/v1/files", content=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert 400 <= response.status_code < 500, response.text
    assert count_rows(session, File) == before


@pytest.mark.parametrize("url", ["/v1/results?cursor=99999999999999999999999",
                                 "/v1/results?cursor=-5", "/v1/results?cursor=1e9"])
def test_a_cursor_past_its_range_is_a_400(url: str, client: Any) -> None:
    response = client.get(url)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "cursor"


def test_a_job_results_cursor_past_its_range_is_a_400(client: Any, models: Settings) -> None:
    job = client.post("/v1/jobs", json={"kind": "generate", "model": "tiny-generator",
                                        "items": [{"text": "hello"}]})
    assert job.status_code == 201, job.text
    response = client.get(f"/v1/jobs/{job.json()['id']}/results?cursor=99999999999")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "cursor"
