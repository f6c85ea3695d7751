"""Per-tenant quotas: the operator sets them from the CLI; over one, HTTP answers 429 with
Retry-After and an OpenAI-shaped error naming the limit, the CLI says by how much, and nothing
of the refused job is stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform.orm import Job, JobItem
from nightowl_api.main import app

SENT = "apitest-sent"  # tests/api/conftest.py: registered, never run (jobs go to the gpu queue)


def _job(client: TestClient, n: int) -> Any:
    return client.post("/v1/jobs", json={
        "kind": "sentiment", "model": SENT, "queue": "gpu", "truncate": True,
        "items": [{"custom_id": f"q{i}", "text": f"review {i}"} for i in range(n)]})


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    return result


def _rows(session: Session) -> tuple[int, int]:
    session.expire_all()
    return (session.scalar(select(func.count()).select_from(Job)) or 0,
            session.scalar(select(func.count()).select_from(JobItem)) or 0)


def test_over_a_quota_the_api_answers_429_and_stores_nothing(
    fake_models: Settings, make_api_key: Callable[[str], str], session: Session
) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:6]}"
    key = make_api_key(tenant)
    set_ = _cli("quota", "set", tenant, "--max-queued-items", "100", "--max-running-jobs", "1")
    assert set_.exit_code == 0, set_.output
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        first = _job(client, 60)
        assert first.status_code == 201
        # OpenAI's rate-limit headers, counted before the job was queued.
        assert (first.headers["x-ratelimit-limit-requests"],
                first.headers["x-ratelimit-remaining-requests"]) == ("100", "100")
        assert "x-ratelimit-limit-tokens" not in first.headers  # no token quota here
        before = _rows(session)

        r = _job(client, 10)
        assert r.status_code == 429
        assert r.headers["x-ratelimit-remaining-requests"] == "40"
        assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) > 0
        error = r.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("rate_limit_error", "max_running_jobs")
        assert "max_running_jobs quota is 1" in error["message"]
        assert "over by 1" in error["message"]
        assert _rows(session) == before

        assert _cli("quota", "set", tenant, "--max-running-jobs", "5").exit_code == 0
        r = _job(client, 50)  # 60 queued + 50 > 100
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "max_queued_items"
        assert "over its max_queued_items quota of 100 by 10" in r.json()["error"]["message"]
        assert _rows(session) == before

        r = _job(client, 40)  # exactly at the limit is allowed
        assert r.status_code == 201, r.text
        shown = _cli("quota", "show", tenant)
        assert shown.exit_code == 0
        assert tenant in shown.output and "100" in shown.output and "5" in shown.output

        assert _cli("quota", "set", tenant, "--max-queued-items", "none").exit_code == 0
        assert _job(client, 500).status_code == 201


def test_a_file_bigger_than_the_quota_stops_at_the_first_batch_and_the_cli_says_by_how_much(
    fake_models: Settings, make_api_key: Callable[[str], str], api_server: str,
    session: Session, tmp_path: Path
) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:6]}"
    key = make_api_key(tenant)
    assert _cli("quota", "set", tenant, "--max-queued-items", "1000").exit_code == 0
    f = tmp_path / "big.jsonl"
    f.write_text("".join(json.dumps({"custom_id": f"x{i}", "text": "ok"}) + "\n"
                         for i in range(5000)))
    before = _rows(session)
    result = CliRunner().invoke(cli, ["--api", api_server, "--key", key, "submit", "sentiment",
                                      str(f), "--model", SENT, "--queue", "gpu", "--truncate"])
    assert result.exit_code == 1
    assert "429" in result.output and "max_queued_items quota of 1,000" in result.output
    # Refused after the first batch of lines, not after reading all 5,000.
    assert "adds at least 2,000" in result.output and "split it into jobs of at most 1,000" \
        in result.output
    assert _rows(session) == before


def test_quota_set_refuses_unknown_tenants_and_bad_numbers(migrated: Settings) -> None:
    r = _cli("quota", "set", "no-such-tenant", "--max-running-jobs", "2")
    assert r.exit_code == 1 and "no tenant 'no-such-tenant'" in r.output
    r = _cli("quota", "set", "x", "--max-running-jobs", "0")
    assert r.exit_code == 2 and "use 'none' to remove the limit" in r.output
    r = _cli("quota", "set", "x")
    assert r.exit_code == 2 and "--max-queued-items" in r.output


def _tenant_counting(session: Session, make_api_key: Callable[[str], str], texts: list[str]
                     ) -> tuple[str, str, int]:
    """A new tenant, its key, and the tokens tiny-sentiment's own tokenizer counts in texts."""
    from tokenizers import Tokenizer

    from nightowl.registry import versions as registry

    tenant = f"quota-{uuid.uuid4().hex[:6]}"
    key = make_api_key(tenant)
    source = registry.resolve(session, "tiny-sentiment@prod").source
    tokenizer = Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
    return tenant, key, sum(len(tokenizer.encode(t).ids) for t in texts)


def test_a_token_quota_counts_input_tokens_with_the_models_tokenizer(
    models: Settings, make_api_key: Callable[[str], str], session: Session
) -> None:
    texts = [f"the film was great and the acting was fine, review {i}" for i in range(30)]
    tenant, key, per_job = _tenant_counting(session, make_api_key, texts)
    limit = per_job + per_job // 2
    assert _cli("quota", "set", tenant, "--max-queued-tokens", str(limit)).exit_code == 0

    def job(client: TestClient) -> Any:
        # The gpu queue: no test worker reads it, so the job stays queued and counts.
        return client.post("/v1/jobs", json={
            "kind": "sentiment", "model": "tiny-sentiment@prod", "queue": "gpu",
            "items": [{"custom_id": f"t{i}", "text": t} for i, t in enumerate(texts)]})

    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        first = job(client)
        assert first.status_code == 201, first.text
        before = _rows(session)
        r = job(client)
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["code"] == "max_queued_tokens"
        assert (f"has {per_job:,} input tokens queued and this job adds {per_job:,}: over its "
                f"max_queued_tokens quota of {limit:,} by {2 * per_job - limit:,}"
                in error["message"])
        assert _rows(session) == before
        shown = _cli("quota", "show", tenant)
        assert f"{per_job:,}" in shown.output and f"{limit:,}" in shown.output

        # Cancelled work no longer counts: the same job now fits.
        assert client.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
        assert job(client).status_code == 201


def test_a_job_with_skipped_lines_counts_all_its_valid_lines_tokens(
    models: Settings, make_api_key: Callable[[str], str], session: Session
) -> None:
    """Lines refused at submit are stored as failed items and carry no tokens: the job's
    queued share is its valid lines' tokens, not scaled down by the refused ones."""
    from nightowl.jobs import quotas
    from nightowl.platform.auth import authenticate

    texts = [f"a fine film, review {i}" for i in range(30)]
    tenant, key, per_job = _tenant_counting(session, make_api_key, texts)
    assert _cli("quota", "set", tenant, "--max-queued-tokens", str(10 * per_job)).exit_code == 0
    items = [{"custom_id": f"t{i}", "text": t} for i, t in enumerate(texts)]
    items += [{"custom_id": f"bad{i}", "text": ""} for i in range(10)]
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        r = client.post("/v1/jobs", json={"kind": "sentiment", "model": "tiny-sentiment@prod",
                                          "queue": "gpu", "on_invalid": "skip", "items": items})
        assert r.status_code == 201, r.text
        assert (r.json()["total"], r.json()["failed"]) == (40, 10)
        tenant_id = authenticate(session, key)
        session.rollback()
        assert quotas.usage(session, tenant_id).queued_tokens == per_job
        assert client.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 200
