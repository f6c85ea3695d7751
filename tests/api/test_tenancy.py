"""Tenant isolation: another tenant's files, batches, jobs and results answer 404 everywhere,
exactly like ids that do not exist; the operator's CLI sees every tenant."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl_api.main import app

GEN = "apitest-gen"  # registered by tests/api/conftest.py's fake_models


def _line(custom_id: str, content: str) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": GEN, "messages": [{"role": "user", "content": content}],
                                "max_tokens": 4}})


@pytest.fixture
def tenants(fake_models: Settings,
            make_api_key: Callable[[str], str]) -> Iterator[tuple[TestClient, TestClient]]:
    import uuid

    suffix = uuid.uuid4().hex[:6]
    with TestClient(app) as a, TestClient(app) as b:
        a.headers["Authorization"] = f"Bearer {make_api_key(f'iso-a-{suffix}')}"
        b.headers["Authorization"] = f"Bearer {make_api_key(f'iso-b-{suffix}')}"
        yield a, b


def _ok(response: Any) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def test_another_tenants_ids_answer_404_everywhere(
    tenants: tuple[TestClient, TestClient],
) -> None:
    a, b = tenants
    data = "\n".join([_line("q1", "hello"), _line("q2", "again")]).encode()
    file_id = _ok(a.post("/v1/files", files={"file": ("in.jsonl", data)},
                         data={"purpose": "batch"}))["id"]
    # The gpu queue: no test worker reads it, so A's work stays put while B pokes at it.
    gpu = {"nightowl_queue": "gpu"}
    batch = _ok(a.post("/v1/batches", json={"input_file_id": file_id, "metadata": gpu,
                                             "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"}))
    cancelled = _ok(a.post("/v1/batches", json={"input_file_id": file_id, "metadata": gpu,
                                                 "endpoint": "/v1/chat/completions",
                                                 "completion_window": "24h"}))
    cancelled = _ok(a.post(f"/v1/batches/{cancelled['id']}/cancel"))
    error_file = cancelled["error_file_id"]
    assert cancelled["status"] == "cancelled" and error_file
    job = _ok(a.post("/v1/jobs", json={"kind": "generate", "model": GEN, "queue": "gpu",
                                        "items": [{"custom_id": "j1", "text": "hi"}]}))

    forbidden = [
        ("GET", f"/v1/files/{file_id}"), ("GET", f"/v1/files/{file_id}/content"),
        ("DELETE", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{error_file}"), ("GET", f"/v1/files/{error_file}/content"),
        ("DELETE", f"/v1/files/{error_file}"),
        ("GET", f"/v1/batches/{batch['id']}"), ("POST", f"/v1/batches/{batch['id']}/cancel"),
        ("GET", f"/v1/jobs/{batch['id']}"), ("GET", f"/v1/jobs/{batch['id']}/results"),
        ("GET", f"/v1/jobs/{job['id']}"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("POST", f"/v1/jobs/{job['id']}/retry"), ("GET", f"/v1/jobs/{job['id']}/results"),
        ("GET", f"/v1/jobs/{job['id']}/results?format=jsonl"),
        ("GET", f"/v1/jobs/{cancelled['id']}/results?errors=true"),
    ]
    for method, path in forbidden:
        theirs = b.request(method, path)
        missing = b.request(method, path.replace("_", "_0", 1))
        assert theirs.status_code == 404, (method, path, theirs.status_code, theirs.text)
        # Indistinguishable from an id that does not exist: no hint the row is there.
        assert missing.status_code == 404, (method, path)
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    refused = b.post("/v1/batches", json={"input_file_id": file_id, "completion_window": "24h",
                                          "endpoint": "/v1/chat/completions"})
    assert refused.status_code == 404
    job_create = b.post("/v1/jobs", json={"kind": "generate", "model": GEN, "file_id": file_id})
    assert job_create.status_code == 404

    mine = {"files": {file_id}, "batches": {batch["id"], cancelled["id"]},
            "jobs": {job["id"], batch["id"], cancelled["id"]}}
    for name, ids in mine.items():
        listed = {row["id"] for row in _ok(b.get(f"/v1/{name}"))["data"]}
        assert not listed & ids, name
        assert ids <= {row["id"] for row in _ok(a.get(f"/v1/{name}"))["data"]}, name
    assert b.get("/v1/batches", params={"after": batch["id"]}).status_code == 400

    # Nothing B tried changed A's rows.
    assert _ok(a.get(f"/v1/batches/{batch['id']}"))["status"] == "in_progress"
    assert _ok(a.get(f"/v1/jobs/{job['id']}"))["status"] == "queued"
    assert a.get(f"/v1/files/{file_id}/content").content == data
    assert len(a.get(f"/v1/files/{error_file}/content").text.splitlines()) == 2
    assert _ok(a.post(f"/v1/jobs/{job['id']}/cancel"))["status"] == "cancelled"


def test_the_cli_through_the_api_acts_as_the_keys_tenant(
    fake_models: Settings, api_server: str, make_api_key: Callable[[str], str],
    cli_runner: CliRunner, tmp_path: Any,
) -> None:
    key_a, key_b = make_api_key("cli-tenant-a"), make_api_key("cli-tenant-b")
    src = tmp_path / "in.jsonl"
    src.write_text('{"custom_id": "c1", "text": "one"}\n{"custom_id": "c2", "text": "two"}\n')

    def as_(key: str, *args: str) -> Any:
        return cli_runner.invoke(cli, ["--api", api_server, "--key", key, *args])

    submitted = as_(key_a, "submit", "generate", str(src), "--model", GEN, "--queue", "gpu")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[-1]
    assert job_id.startswith("job_")

    shown = as_(key_a, "jobs", "show", job_id)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["total"] == 2
    assert job_id in as_(key_a, "jobs", "list").stdout
    assert job_id not in as_(key_b, "jobs", "list").stdout
    for args in (["jobs", "show", job_id], ["jobs", "cancel", job_id],
                 ["results", "export", job_id]):
        denied = as_(key_b, *args)
        assert denied.exit_code != 0 and "404" in denied.output, (args, denied.output)

    assert as_(key_a, "jobs", "cancel", job_id).stdout.split() == [job_id, "cancelled"]
    exported = as_(key_a, "results", "export", job_id)
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["custom_id"], r["status"]) for r in rows] == [("c1", "cancelled"),
                                                            ("c2", "cancelled")]
    # Env vars work like the options; a wrong key is refused with the API's message.
    bad = cli_runner.invoke(cli, ["jobs", "list"], env={"NIGHTOWL_API_URL": api_server,
                                                        "NIGHTOWL_API_KEY": "nk-wrong"})
    assert bad.exit_code != 0 and "401" in bad.output
    # Without --api the CLI is the operator, on the database: it sees every tenant's job.
    operator = cli_runner.invoke(cli, ["jobs", "show", job_id])
    assert operator.exit_code == 0 and json.loads(operator.stdout)["id"] == job_id
