"""Tenant-owned models: each tenant sees, runs, fine-tunes and promotes only its own and the
shared models; a fine-tune of a shared base lands in the tenant's own space; /v1/models shows
no server paths."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.finetune import service as finetunes
from nightowl.platform.auth import get_or_create_tenant
from nightowl.platform.db import session_scope
from nightowl.registry import versions as registry
from nightowl_api.main import app

SENT = "apitest-sent"  # shared, registered by tests/api/conftest.py's fake_models


@pytest.fixture
def two(fake_models: Settings, make_api_key: Callable[[str], str]
        ) -> Iterator[tuple[TestClient, TestClient, str, str]]:
    suffix = uuid.uuid4().hex[:6]
    names = f"own-a-{suffix}", f"own-b-{suffix}"
    with TestClient(app) as a, TestClient(app) as b:
        a.headers["Authorization"] = f"Bearer {make_api_key(names[0])}"
        b.headers["Authorization"] = f"Bearer {make_api_key(names[1])}"
        yield a, b, names[0], names[1]


def _ok(response: Any) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def _train_file(client: TestClient) -> str:
    rows = [{"text": f"good thing {i}", "label": "positive"} for i in range(6)]
    rows += [{"text": f"bad thing {i}", "label": "negative"} for i in range(6)]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    return str(_ok(client.post("/v1/files", files={"file": ("t.jsonl", data)},
                               data={"purpose": "fine-tune"}))["id"])


def _finetune(client: TestClient, base: str, **extra: Any) -> Any:
    return client.post("/v1/finetunes", json={
        "kind": "sentiment", "base": base, "training_file": _train_file(client), **extra})


def _finish(settings: Settings, run_id: str, accuracy: float) -> str:
    """What the trainer does at the end of a run (registration and the promotion gate); the
    incumbent scored 0.5 on the same eval set."""
    with session_scope(settings) as s:
        version = finetunes.finish_run(
            s, run_id, model_path=f"/nowhere/{run_id}", sha256="0" * 64,
            metrics={"eval/accuracy": accuracy}, incumbent_metrics={"eval/accuracy": 0.5})
        return version.ref


def test_a_tenants_fine_tune_of_a_shared_model_changes_nothing_for_another(
    two: tuple[TestClient, TestClient, str, str], fake_models: Settings,
) -> None:
    a, b, _, _ = two
    shared_prod = registry.ModelRef.parse(SENT).name
    with session_scope(fake_models) as s:
        shared = registry.list_versions(s, shared_prod)[0]
        if registry.alias_holder(s, SENT, "prod") is None:
            registry.set_alias(s, shared, "prod")
        shared_ref = registry.alias_holder(s, SENT, "prod").ref  # type: ignore[union-attr]

    # B fine-tunes the shared model and asks for it to become `prod`, without register_as.
    run = _ok(_finetune(b, f"{SENT}@prod", promote_to="prod"))
    assert run["register_as"] == SENT
    b_ref = _finish(fake_models, run["id"], accuracy=0.99)
    assert b_ref != shared_ref

    def prod_of(client: TestClient) -> str:
        job = _ok(client.post("/v1/jobs", json={
            "kind": "sentiment", "model": f"{SENT}@prod", "queue": "gpu",
            "items": [{"custom_id": "x", "text": "hello"}]}))
        return str(job["model_version"])

    assert prod_of(b) == b_ref          # B's own alias now answers B's name@prod
    assert prod_of(a) == shared_ref     # A still runs the shared model
    a_models = {m["id"]: m for m in _ok(a.get("/v1/models"))["data"]}
    b_models = {m["id"]: m for m in _ok(b.get("/v1/models"))["data"]}
    assert b_ref in b_models and b_ref not in a_models
    assert b_models[b_ref]["owned_by"] != "nightowl"  # B's own, not a shared model
    assert b_models[f"{SENT}@prod"]["version"] == b_ref  # B's alias shadows the shared one...
    assert a_models[f"{SENT}@prod"]["version"] == shared_ref  # ...for B only
    assert all("source" not in m for m in (*a_models.values(), *b_models.values()))
    assert "/nowhere" not in a.get("/v1/models").text + b.get("/v1/models").text

    # A cannot see, run, fine-tune or compare B's version: exactly like a missing one.
    missing = f"{SENT}@v9999"
    answers = []
    for ref in (b_ref, missing):
        job = a.post("/v1/jobs", json={"kind": "sentiment", "model": ref, "queue": "gpu",
                                       "items": [{"custom_id": "x", "text": "hi"}]})
        assert job.status_code == 404, job.text
        answers.append(job.text.replace(ref, "REF").replace(ref.split("@")[1], "vN"))
        assert _finetune(a, ref).status_code == 404
        assert a.get("/v1/models/compare", params={"a": shared_ref, "b": ref}).status_code == 404
    assert answers[0] == answers[1]


def test_register_as_is_checked_before_training(
    two: tuple[TestClient, TestClient, str, str],
) -> None:
    _, b, _, _ = two
    # A generation model's name cannot take a sentiment version: refused at submit.
    bad = _finetune(b, SENT, register_as="apitest-gen")
    assert bad.status_code == 409, bad.text
    assert "generate" in bad.json()["error"]["message"]
    assert _finetune(b, SENT, register_as="bad@name").status_code == 400
    assert _ok(b.get("/v1/finetunes")) == []  # nothing was queued


def test_shared_models_are_the_operators_and_cli_work_is_the_operators(
    two: tuple[TestClient, TestClient, str, str], fake_models: Settings,
) -> None:
    a, _, name_a, _ = two
    with session_scope(fake_models) as s:
        tenant_a = get_or_create_tenant(s, name_a).id
        shared = registry.resolve(s, SENT)
        mine = registry.register(s, name=f"mine-{name_a}", kind=TaskKind.SENTIMENT,
                                 source="/nowhere", tenant_id=tenant_a)
        # A tenant cannot move a shared alias, nor point a shared alias at its own version.
        with pytest.raises(Exception, match="not a shared model"):
            registry.set_alias(s, mine, "prod", tenant_id=None)
        own_alias = registry.set_alias(s, shared, "mine", tenant_id=tenant_a)
        assert own_alias.tenant_id == tenant_a
        assert registry.alias_holder(s, SENT, "mine", tenant_id=None) is None
    # The operator's CLI lists every owner's versions, with the owner.
    listing = CliRunner().invoke(cli, ["models", "list"], catch_exceptions=False)
    assert listing.exit_code == 0 and name_a in listing.output and "shared" in listing.output
    refs = {m["id"] for m in _ok(a.get("/v1/models"))["data"]}
    assert mine.ref in refs
