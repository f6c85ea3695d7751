"""Direct requests through the serving lane, with the openai SDK against a real `nightowl api`
process and real workers: text streamed as it is generated, a hang-up cancels, quotas and
tenancy hold, every request is recorded in SQL, and a worker SIGKILLed under direct load
leaves no request hanging."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from helpers import Worker, module_worker
from nightowl.common.config import Settings
from nightowl.jobs import lane
from nightowl.platform.broker import redis_client
from nightowl.platform.orm import Job, JobItem, Tenant

pytestmark = pytest.mark.integration
GEN = "tiny-generator"
HELLO = [{"role": "user", "content": "the owl"}]


@pytest.fixture(scope="module")
def worker(models: Settings, stack_env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from module_worker(stack_env, ["-Q", "cpu", "-c", "1"], tmp_path_factory, "lane")


def _client(url: str, key: str, timeout: float = 120) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=timeout)


def _recorded(session: Session, tenant: str, *, count: int = 1,
              timeout: float = 30) -> list[Job]:
    """The tenant's direct requests as SQL holds them, once `count` are written."""
    deadline = time.monotonic() + timeout
    while True:
        session.expire_all()
        jobs = list(session.scalars(select(Job).join(Tenant, Tenant.id == Job.tenant_id)
                                    .where(Tenant.name == tenant).order_by(Job.created_at)))
        session.commit()
        if len(jobs) >= count:
            return jobs
        assert time.monotonic() < deadline, f"{len(jobs)} of {count} requests recorded"
        time.sleep(0.1)


def _long_answer(client: openai.OpenAI, tokens: int) -> tuple[Any, dict[str, Any]]:
    """A seeded chat that runs to `tokens` tokens (the tiny model often ends at once); the
    seed-th call of the client's tenant."""
    for seed in range(40):
        body: dict[str, Any] = {"model": GEN, "messages": HELLO, "max_tokens": tokens,
                                "temperature": 2.0, "seed": seed}
        whole = client.chat.completions.create(**body)
        if whole.usage is not None and whole.usage.completion_tokens == tokens:
            return whole, body
    raise AssertionError(f"no seed gave {tokens} tokens")


def test_streamed_text_comes_token_by_token_and_matches_the_whole_answer(
        api_server: str, make_api_key: Callable[[str], str], worker: Worker) -> None:
    client = _client(api_server, make_api_key(f"lane-{uuid.uuid4().hex[:6]}"))
    whole, body = _long_answer(client, 24)
    chunks = list(client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices
              and c.choices[0].delta.content]
    # One chunk per settled piece of text, in order: they add up to the unstreamed answer.
    assert len(pieces) > 3, pieces
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices
              and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_a_client_that_hangs_up_cancels_its_request(
        api_server: str, make_api_key: Callable[[str], str], worker: Worker,
        settings: Settings, session: Session) -> None:
    """Hung up after the first text: the worker stops that request and SQL records it
    cancelled. No worker reads a lane the request never reaches, so a queued one cannot end
    otherwise."""
    tenant = f"lane-{uuid.uuid4().hex[:6]}"
    client = _client(api_server, make_api_key(tenant))
    _, body = _long_answer(client, 64)
    stream = client.chat.completions.create(**body, stream=True)
    pieces = iter(stream)
    next(pieces)  # the role
    assert next(pieces).choices[0].delta.content
    stream.close()
    job = _recorded(session, tenant, count=body["seed"] + 2)[-1]
    assert job.status.value == "cancelled", job.status
    item = session.scalars(select(JobItem).where(JobItem.job_id == job.id)).one()
    assert item.status.value == "cancelled" and item.error_code == "cancelled"
    # The worker saw the mark (the request's key is set for it).
    assert redis_client(settings).exists(lane.cancel_key(job.id))


def test_quota_tenancy_and_rows_in_sql(
        api_server: str, make_api_key: Callable[[str], str], worker: Worker,
        session: Session, cli_runner: Any) -> None:
    from nightowl.cli import cli

    tenant_a, tenant_b = (f"lane-{x}-{uuid.uuid4().hex[:6]}" for x in "ab")
    a = _client(api_server, make_api_key(tenant_a))
    key_b = make_api_key(tenant_b)
    answer = a.chat.completions.create(model=GEN, messages=HELLO, max_tokens=4)
    job = _recorded(session, tenant_a)[0]
    # The request's rows, as a one-item job leaves them: the job, the item with its result
    # and provenance, its chunk.
    assert job.status.value == "completed" and job.metadata_["openai"]["direct"] is True
    item = session.scalars(select(JobItem).where(JobItem.job_id == job.id)).one()
    assert item.output is not None and item.worker and item.tokens_out == (
        answer.usage.completion_tokens)  # type: ignore[union-attr]
    with httpx.Client(base_url=api_server) as http:
        mine = http.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {a.api_key}"})
        assert mine.status_code == 200 and mine.json()["succeeded"] == 1
        theirs = http.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {key_b}"})
        assert theirs.status_code == 404
        listed = http.get("/v1/jobs", headers={"Authorization": f"Bearer {key_b}"}).json()
        assert job.id not in str(listed)

    # B at its quota of running jobs (one bulk job nobody runs: the gpu queue) gets a 429.
    done = cli_runner.invoke(cli, ["quota", "set", tenant_b, "--max-running-jobs", "1"])
    assert done.exit_code == 0, done.output
    with httpx.Client(base_url=api_server) as http:
        held = http.post("/v1/jobs", headers={"Authorization": f"Bearer {key_b}"}, json={
            "kind": "generate", "model": GEN, "queue": "gpu", "items": [{"text": "x"}]})
        assert held.status_code == 201, held.text
    with pytest.raises(openai.RateLimitError) as refused:
        _client(api_server, key_b).chat.completions.create(model=GEN, messages=HELLO,
                                                           max_tokens=4)
    assert refused.value.code == "max_running_jobs"


def test_a_worker_killed_under_direct_load_leaves_no_request_hanging(
        api_server: str, make_api_key: Callable[[str], str], worker: Worker,
        stack_env: dict[str, str], tmp_path: Path, settings: Settings,
        session: Session) -> None:
    """The module's worker stops first, so the one killed holds every request; they come back
    to the lane (nothing of them was streamed) and a new worker answers them. Each call ends
    well inside its client timeout."""
    worker.stop()
    tenant = f"lane-{uuid.uuid4().hex[:6]}"
    doomed = Worker(stack_env, ["-Q", "cpu", "-c", "1"], tmp_path / "doomed.log")
    client = _client(api_server, make_api_key(tenant), timeout=90)
    r: redis.Redis = redis_client(settings)

    def plain(n: int) -> str:
        try:
            got = client.completions.create(model=GEN, prompt=f"owl {n}", max_tokens=200,
                                            temperature=2.0, seed=n)
            return "answered" if got.choices[0].text is not None else "empty"
        except openai.APIStatusError as e:
            return f"error {e.status_code}"

    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(plain, n) for n in range(8)]
        # Killed once it has taken them: their event streams exist and the lane is empty.
        deadline = time.monotonic() + 120
        while r.llen(lane.queue_key("cpu")) or len(r.keys(lane.events_key("*"))) < 8:
            assert time.monotonic() < deadline, doomed.output()[-3000:]
            time.sleep(0.02)
        doomed.kill()
        rescuer = Worker(stack_env, ["-Q", "cpu", "-c", "1"], tmp_path / "rescuer.log")
        try:
            outcomes = [c.result(timeout=100) for c in calls]
        finally:
            rescuer.stop()
    assert outcomes == ["answered"] * 8, (outcomes, rescuer.output()[-3000:])
    # Each ran twice: once on the killed worker, once on the new one.
    jobs = _recorded(session, tenant, count=8)
    attempts = session.scalars(select(JobItem.attempts).where(
        JobItem.job_id.in_([j.id for j in jobs]))).all()
    assert sorted(attempts) == [2] * 8
