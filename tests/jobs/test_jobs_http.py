"""/v1/jobs over HTTP: submit inline, watch, page through results, control, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from helpers import Worker, wait_for_job
from nightowl.common.enums import JobStatus


def test_inline_job_runs_and_pages_results_in_order(
    client: Any, start_worker: Callable[..., Worker]
) -> None:
    items = [{"custom_id": f"c{i}", "text": f"the film was {'great' if i % 2 else 'awful'}"}
             for i in range(25)]
    resp = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment@prod",
                                         "items": items, "chunk_size": 10,
                                         "metadata": {"team": "search"}})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "queued" and job["total"] == 25
    assert job["model_version"] == "tiny-sentiment@v1"
    worker = start_worker()
    assert wait_for_job(job["id"], worker=worker).status == JobStatus.COMPLETED

    got, cursor = [], None
    while True:
        page = client.get(f"/v1/jobs/{job['id']}/results",
                          params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        got += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [r["custom_id"] for r in got] == [i["custom_id"] for i in items]
    assert all(r["status"] == "succeeded" and r["output"]["label"] for r in got)

    stream = client.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"})
    assert stream.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in stream.text.splitlines()]
    assert [r["custom_id"] for r in lines] == [i["custom_id"] for i in items]

    shown = client.get(f"/v1/jobs/{job['id']}").json()
    assert shown["status"] == "completed" and shown["succeeded"] == 25
    assert shown["metadata"] == {"team": "search"}
    assert job["id"] in [j["id"] for j in client.get("/v1/jobs").json()["data"]]
    cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancel.status_code == 409 and "already completed" in cancel.json()["error"]["message"]


def test_bad_requests_say_what_and_where(client: Any, models: Any) -> None:
    resp = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment",
                                         "items": [{"text": "ok"}, {"source": "no text"}]})
    assert resp.status_code == 400
    body = resp.json()["error"]
    assert "1 of 2 lines are invalid; nothing was queued" in body["message"]
    assert body["problems"] == [{"where": "line 2", "message": "missing field 'text'"}]

    resp = client.post("/v1/jobs", json={"kind": "sentiment", "model": "nope@prod",
                                         "items": [{"text": "x"}]})
    assert resp.status_code == 404 and "unknown model 'nope@prod'" in resp.text
    assert client.get("/v1/jobs/job_doesnotexist").status_code == 404
    resp = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment"})
    assert resp.status_code == 400 and "exactly one of `items`" in resp.text
