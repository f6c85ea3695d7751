"""Operational answers: /healthz names what is down, /docs needs no CDN, unknown pages are
pages, and a job says when nothing can run it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nightowl.common.config import Settings
from nightowl_api.deps import _settings
from nightowl_api.main import app

GEN = "apitest-gen"  # registered by tests/api/conftest.py's fake_models, never run


@pytest.fixture
def dead_broker(migrated: Settings) -> Iterator[None]:
    broken = migrated.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    app.dependency_overrides[_settings] = lambda: broken
    yield
    app.dependency_overrides.pop(_settings, None)


def test_healthz_reports_database_and_broker(migrated: Settings) -> None:
    with TestClient(app) as c:
        r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_and_names_the_broker_when_it_is_down(dead_broker: None) -> None:
    with TestClient(app) as c:
        r = c.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert body["broker"].startswith("down")


def test_compose_healthcheck_of_the_api_uses_healthz() -> None:
    from pathlib import Path

    compose = (Path(__file__).resolve().parents[2] / "compose.yaml").read_text()
    api_block = compose.split("\n  api:\n", 1)[1].split("\n  worker-cpu:", 1)[0]
    assert "/healthz" in api_block.split("healthcheck:", 1)[1]


def test_docs_page_loads_swagger_ui_from_this_server(migrated: Settings) -> None:
    with TestClient(app) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "http" not in page.text.replace(
            "https://swagger.io", "")
        assert c.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
        assert c.get("/docs/assets/swagger-ui.css").status_code == 200
        redoc = c.get("/redoc")
        assert redoc.status_code == 200 and "/docs/assets/redoc.standalone.js" in redoc.text
        assert "fonts.googleapis" not in redoc.text and "cdn" not in redoc.text.lower()


def test_unknown_pages_are_html_for_browsers_and_json_for_the_api(client: Any) -> None:
    page = client.get("/ui/nothing-here", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "Nothing lives at" in page.text and "/ui/nothing-here" in page.text
    job = client.get("/ui/jobs/job_nope", headers={"Accept": "text/html"})
    assert job.status_code == 404 and "job_nope" in job.text and "<html" in job.text
    api = client.get("/v1/jobs/job_nope")
    assert api.status_code == 404 and api.json()["error"]["message"]


def test_job_health_says_no_worker_consumes_its_queue(client: Any, fake_models: Settings
                                                      ) -> None:
    # The gpu queue: no test worker reads it.
    job = client.post("/v1/jobs", json={"kind": "generate", "model": GEN, "queue": "gpu",
                                        "items": [{"custom_id": "h1", "text": "hi"}]}).json()
    health = client.get(f"/v1/jobs/{job['id']}/health").json()
    assert health["queue"] == "gpu" and health["broker"] is True and health["workers"] == 0
    assert "nightowl worker -Q gpu" in health["warning"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200


def test_finetune_shows_versions_as_names_and_the_decision_in_words(
        client: Any, api_key: str, migrated: Settings) -> None:
    import uuid

    from nightowl.common.enums import RunStatus, TaskKind
    from nightowl.platform.auth import authenticate
    from nightowl.platform.db import session_scope
    from nightowl.platform.orm import TrainingRun, new_id
    from nightowl.registry import versions as registry

    name = f"opstest-{uuid.uuid4().hex[:6]}"
    with session_scope(migrated) as s:
        tenant = authenticate(s, api_key)
        v1 = registry.register(s, name=name, kind=TaskKind.SENTIMENT, source="/x/1")
        v2 = registry.register(s, name=name, kind=TaskKind.SENTIMENT, source="/x/2",
                               base_version_id=v1.id)
        run = TrainingRun(id=new_id("ft"), tenant_id=tenant, kind=TaskKind.SENTIMENT,
                          base_version_id=v1.id, status=RunStatus.SUCCEEDED, hyperparams={},
                          register_as=name, promote_to="prod", gate_metric="eval/accuracy",
                          result_version_id=v2.id, promotion={
                              "alias": "prod", "metric": "eval/accuracy", "promoted": False,
                              "candidate": 0.5, "incumbent": 0.625,
                              "incumbent_version": f"{name}@v1"})
        s.add(run)
        s.flush()
        run_id = run.id
    body = client.get(f"/v1/finetunes/{run_id}").json()
    assert (body["base_version"], body["result_version"]) == (f"{name}@v1", f"{name}@v2")
    assert body["promotion_summary"] == (
        f"not promoted to @prod: eval/accuracy 0.5000 does not beat 0.6250 of {name}@v1")
    listed = client.get("/v1/finetunes").json()
    assert any(r["id"] == run_id and r["result_version"] == f"{name}@v2" for r in listed)
