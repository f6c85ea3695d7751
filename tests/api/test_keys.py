"""API keys: created once on the CLI, stored hashed, required by every endpoint but the open two."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform.db import session_factory
from nightowl.platform.orm import ApiKey, Tenant
from nightowl_api.main import app

# Open by design: liveness, Prometheus, the API's own docs, and the dashboard's login pages.
OPEN_PATHS = {"/healthz", "/metrics", app.openapi_url, "/docs", "/docs/oauth2-redirect",
              "/redoc", "/ui/login", "/ui/logout"}


def _api_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of every APIRoute, also inside included routers (which FastAPI
    keeps as wrappers; a route's own path has its router's prefix, not the parents')."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif (inner := getattr(route, "original_router", None)) is not None:
            # The include's context holds the whole prefix above the router (/v1 here).
            context = getattr(route, "include_context", None)
            yield from _api_routes(inner.routes, getattr(context, "prefix", "") or prefix)


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(
    migrated: Settings, cli_runner: CliRunner
) -> None:
    created = cli_runner.invoke(cli, ["keys", "create", "acme-keys"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("nk-") and len(key) > 40
    with session_factory(migrated)() as s:
        row = s.scalars(
            select(ApiKey).join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(Tenant.name == "acme-keys")
        ).one()
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert key not in (row.id, row.prefix, row.key_hash) and key.startswith(row.prefix)

    listed = cli_runner.invoke(cli, ["keys", "list", "--tenant", "acme-keys"])
    assert listed.exit_code == 0, listed.output
    assert row.prefix in listed.output and key not in listed.output

    with TestClient(app) as c:
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        revoked = cli_runner.invoke(cli, ["keys", "revoke", row.prefix])
        assert revoked.exit_code == 0, revoked.output
        refused = c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    assert row.prefix not in cli_runner.invoke(cli, ["keys", "list"]).output


@pytest.mark.parametrize("header", [None, "Bearer nk-not-a-real-key", "Basic dXNlcjpwYXNz"])
def test_requests_without_a_valid_key_get_an_openai_shaped_401(
    migrated: Settings, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    with TestClient(app) as c:
        for path in ("/v1/jobs", "/v1/batches", "/v1/files", "/v1/models"):
            r = c.get(path, headers=headers)
            assert r.status_code == 401, path
            error = r.json()["error"]
            assert error["code"] == "invalid_api_key" and error["message"]
            assert set(error) >= {"message", "type", "param", "code"}
        assert c.get("/healthz").status_code == 200


def test_every_route_but_the_open_ones_refuses_anonymous_callers(migrated: Settings) -> None:
    routes = [(full, r) for full, r in _api_routes(app.routes) if full not in OPEN_PATHS]
    assert len(routes) >= 12  # jobs, files, batches, models at least
    assert {"/v1/jobs", "/v1/files", "/v1/chat/completions"} <= {full for full, _ in routes}
    with TestClient(app, follow_redirects=False) as c:
        for full, route in routes:
            path = full
            for name in route.param_convertors:
                path = path.replace(f"{{{name}}}", "x" if name != "path" else "x/y")
            for method in route.methods - {"HEAD"}:
                r = c.request(method, path)
                if full == "/" or full.startswith("/ui"):
                    # The dashboard sends a browser to its login page instead.
                    assert r.status_code in (401, 303, 307), (method, full, r.status_code)
                else:
                    assert r.status_code == 401, (method, full, r.status_code)


def test_a_key_authenticates_as_its_own_tenant(
    migrated: Settings, make_api_key: Callable[[str], str]
) -> None:
    a, b = make_api_key("keys-tenant-a"), make_api_key("keys-tenant-b")
    with TestClient(app) as c:
        made = c.post("/v1/files", headers={"Authorization": f"Bearer {a}"},
                      files={"file": ("x.jsonl", b'{"text": "hi"}\n')}, data={"purpose": "jobs"})
        assert made.status_code == 200, made.text
        file_id = made.json()["id"]
        assert c.get(f"/v1/files/{file_id}",
                     headers={"Authorization": f"Bearer {a}"}).status_code == 200
        assert c.get(f"/v1/files/{file_id}",
                     headers={"Authorization": f"Bearer {b}"}).status_code == 404
