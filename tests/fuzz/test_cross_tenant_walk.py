"""Tenant A uses every kind of object (files, jobs, a private model, a fine-tune, a schedule, a
batch, work held by a worker); tenant B then walks every list and detail route of /openapi.json,
the dashboard's pages and /metrics, and sees none of A's ids or names anywhere."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.platform.auth import authenticate
from nightowl.platform.orm import Schedule, Worker, new_id, utcnow
from nightowl.registry import versions as registry
from nightowl_api.main import app

DASHBOARD = ["/", "/ui/runs", "/ui/models", "/ui/schedules", "/ui/workers", "/ui/metrics",
             "/ui/api/jobs", "/ui/jobs/{job_id}", "/ui/runs/{run_id}", "/ui/api/jobs/{job_id}",
             "/ui/api/runs/{run_id}/metrics"]


def _ok(response: Any) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def _tenant_a_uses_everything(a: TestClient, session: Session, tag: str) -> dict[str, str]:
    """What tenant A made, by what names and ids another tenant must never see."""
    tenant_a = authenticate(session, a.headers["Authorization"].split()[1])
    source = registry.resolve(session, "tiny-generator").source
    shared_name, own_name = f"secret-{tag}", f"only-a-{tag}"
    for name in (shared_name, shared_name, own_name):
        registry.register(session, name=name, kind=TaskKind.GENERATE, source=source,
                          tenant_id=tenant_a)
    session.commit()
    lines = "\n".join(json.dumps({"custom_id": f"cid-{tag}-{i}", "text": f"text {tag} {i}"})
                      for i in range(3)) + "\n"
    upload = _ok(a.post("/v1/files", files={"file": (f"file-{tag}.jsonl", lines)},
                        data={"purpose": "jobs"}))
    # The gpu queue: no test worker reads it, so A's work stays put while B looks around.
    job = _ok(a.post("/v1/jobs", json={"kind": "generate", "model": f"{own_name}@v1",
                                       "queue": "gpu", "file_id": upload["id"],
                                       "metadata": {"label": f"meta-{tag}"}}))
    train = "\n".join(json.dumps({"text": f"t{i}", "label": "pos" if i % 2 else "neg"})
                      for i in range(20))
    train_file = _ok(a.post("/v1/files", files={"file": (f"train-{tag}.jsonl", train)},
                            data={"purpose": "fine-tune"}))
    run = _ok(a.post("/v1/finetunes", json={"kind": "sentiment", "base": "tiny-sentiment",
                                            "training_file": train_file["id"],
                                            "register_as": f"ft-{tag}"}))
    schedule = _ok(a.post("/v1/schedules", json={
        "name": f"sched-{tag}", "cron": "0 2 * * *", "target": "job", "enabled": False,
        "spec": {"kind": "generate", "model": own_name, "input_file_id": upload["id"]}}))
    batch_line = json.dumps({"custom_id": f"bcid-{tag}", "method": "POST",
                             "url": "/v1/completions",
                             "body": {"model": own_name, "prompt": "hi", "max_tokens": 2}})
    batch_file = _ok(a.post("/v1/files", files={"file": (f"batch-{tag}.jsonl", batch_line)},
                            data={"purpose": "batch"}))
    batch = _ok(a.post("/v1/batches", json={
        "input_file_id": batch_file["id"], "endpoint": "/v1/completions",
        "completion_window": "24h", "metadata": {"nightowl_queue": "gpu"}}))
    # A worker holding A's chunk and run, as its heartbeat records them.
    session.add(Worker(id=new_id("wrk"), name=f"walk-{tag}", host="walk", pid=1, queues="gpu",
                       device="cpu", status="alive", last_seen_at=utcnow(),
                       current={"chunks": [f"{job['id']}#0"], "runs": [run["id"]]}))
    session.commit()
    return {"job_id": job["id"], "run_id": run["id"], "file_id": upload["id"],
            "batch_id": batch["id"], "name": schedule["name"],
            "model_id": f"{own_name}@v1", "train_file": train_file["id"],
            "batch_file": batch_file["id"], "own_name": own_name, "ft_name": f"ft-{tag}",
            "custom_id": f"cid-{tag}", "label": f"meta-{tag}", "filename": f"file-{tag}"}


def _paths(spec: dict[str, Any], ids: dict[str, str]) -> list[str]:
    """Every GET route of the API, its path parameters filled with A's ids."""
    out = []
    for path, ops in spec["paths"].items():
        if "get" not in ops:
            continue
        filled = re.sub(r"\{(\w+)(:path)?\}", lambda m: ids.get(m.group(1), "x"), path)
        out.append(filled)
    return out


def test_tenant_b_sees_nothing_of_tenant_a(
        models: Settings, make_api_key: Callable[[str], str], session: Session) -> None:
    tag = uuid.uuid4().hex[:8]
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as anonymous:
        a.headers["Authorization"] = f"Bearer {make_api_key(f'walk-a-{tag}')}"
        b.headers["Authorization"] = f"Bearer {make_api_key(f'walk-b-{tag}')}"
        secrets = _tenant_a_uses_everything(a, session, tag)
        try:
            # B's own model under the name A uses is B's v1: no number tells B that A has two.
            tenant_b = authenticate(session, b.headers["Authorization"].split()[1])
            mine = registry.register(session, name=f"secret-{tag}", kind=TaskKind.GENERATE,
                                     source="/nowhere", tenant_id=tenant_b)
            session.commit()
            assert mine.version == 1
            compare = b.get("/v1/models/compare", params={"a": f"secret-{tag}@v1",
                                                         "b": f"secret-{tag}@v2"})
            assert "has no version v2 (it has v1)" in compare.text, compare.text

            walked = []
            for path in _paths(app.openapi(), secrets) + [
                    p.format(**secrets) for p in DASHBOARD]:
                walked.append((path, b.get(path, follow_redirects=False)))
            walked.append(("/metrics", anonymous.get("/metrics")))
            assert len(walked) >= 35
            for path, response in walked:
                assert response.status_code < 500, (path, response.text[:300])
                asked = [v for v in secrets.values() if v in path]
                # A's id in the path answers as an unknown one would: 404, quoting only it.
                assert not asked or response.status_code == 404, (path, response.status_code)
                for what, value in secrets.items():
                    if value not in asked:
                        assert value not in response.text, (path, what, value)
            workers = _ok(b.get("/v1/workers"))
            assert any(w["name"] == f"walk-{tag}" for w in workers)
            assert all(w["current_jobs"] == [] and w["current_runs"] == []
                       for w in workers if w["name"] == f"walk-{tag}")
            # A still sees its own, through the same routes.
            assert secrets["job_id"] in a.get("/v1/workers").text
            assert secrets["own_name"] in a.get("/v1/models").text
        finally:
            a.post(f"/v1/finetunes/{secrets['run_id']}/cancel")
            a.post(f"/v1/jobs/{secrets['job_id']}/cancel")
            a.post(f"/v1/batches/{secrets['batch_id']}/cancel")
            session.execute(delete(Worker).where(Worker.name == f"walk-{tag}"))
            session.execute(delete(Schedule).where(Schedule.name == secrets["name"]))
            session.commit()
