"""Operational answers: /healthz names what is down, /docs needs no CDN, unknown pages are
pages, and a job says when nothing can run it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.deps import _settings
from api.main import app
from nightowl.config import Settings

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
