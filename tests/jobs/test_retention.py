"""Retention: what expired goes at the maintenance pass (rows, files' bytes, partitions), what a
user still has a right to stays. Jobs run with no model: their chunks are claimed and completed
by plain calls, as a worker would, so only the retention path is under test. Time moves by
handing the purge a later `now`."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text, update

from helpers import register_unloaded_model
from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.common.enums import ItemStatus, JobStatus, TaskKind
from nightowl.common.items import ItemOutcome
from nightowl.fleet import retention
from nightowl.jobs import chunks, quotas
from nightowl.jobs.inputs import ParsedLine
from nightowl.jobs.service import JobSpec, submit_job
from nightowl.openai import finalize
from nightowl.platform import auth, partitions
from nightowl.platform.db import session_scope
from nightowl.platform.orm import File, Job, JobChunk, JobItem, Tenant, new_job_id, utcnow
from nightowl.registry import versions as registry

HOUR = 3600
GEN = "apitest-gen"  # tests/api/conftest.py's fake_models: registered, never loaded


@pytest.fixture(scope="module")
def sentiment_model(migrated: Settings) -> str:
    return register_unloaded_model(migrated, "ret")


@pytest.fixture
def fake_gen(migrated: Settings) -> str:
    home = migrated.models_path / "rettest-gen"
    home.mkdir(parents=True, exist_ok=True)
    (home / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    with session_scope(migrated) as s:
        if not registry.list_versions(s, GEN):
            registry.register(s, name=GEN, kind=TaskKind.GENERATE, source=str(home))
    return GEN


@pytest.fixture
def sdk(client: Any) -> Callable[[str], openai.OpenAI]:
    """sdk(key) -> the openai SDK over the in-process app (no API process needed)."""
    def make(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url="http://testserver/v1", api_key=key, max_retries=0,
                             http_client=client)
    return make


def _tenant(settings: Settings, name: str, *, retention_seconds: int | None = None) -> str:
    with session_scope(settings) as s:
        tenant = auth.get_or_create_tenant(s, f"{name}-{uuid.uuid4().hex[:6]}")
        if retention_seconds is not None:
            quotas.set_quota(s, tenant.id, retention_seconds=retention_seconds)
        return tenant.id


def _key(settings: Settings, tenant_id: str) -> str:
    with session_scope(settings) as s:
        name = s.get(Tenant, tenant_id).name  # type: ignore[union-attr]
        return auth.create_key(s, tenant_name=name)[1]


def _run_inline(settings: Settings, job_id: str) -> None:
    """A worker's steps with no model: every chunk claimed and completed, then finalized."""
    with session_scope(settings) as s:
        numbers = list(s.scalars(select(JobChunk.chunk_no).where(JobChunk.job_id == job_id)))
    for no in numbers:
        with session_scope(settings) as s:
            claimed = chunks.claim(s, job_id, no, owner="w_ret/t:1:x", lease_seconds=60)
            assert claimed is not None
            outcomes = [ItemOutcome(i.id, ItemStatus.SUCCEEDED, output={"text": "ok"},
                                    tokens_in=2, tokens_out=1) for i in claimed.items]
            assert chunks.complete(s, claimed, outcomes, owner="w_ret/t:1:x", worker="t",
                                   device="cpu", batches=1, device_seconds=0.0)
    with session_scope(settings) as s:
        finalize.finish(s, job_id)
        assert s.get(Job, job_id).status.terminal  # type: ignore[union-attr]


def _submit(settings: Settings, model: str, tenant: str | None, items: int = 5) -> str:
    lines = (ParsedLine(n + 1, f"c{n}", {"text": f"review {n}"}) for n in range(items))
    spec = JobSpec(kind=TaskKind.SENTIMENT, model=model, chunk_size=2,
                   queue=f"ret-{uuid.uuid4().hex[:6]}", tenant_id=tenant)
    with session_scope(settings) as s:
        job_id = submit_job(session=s, settings=settings, spec=spec, lines=lines).id
    _run_inline(settings, job_id)
    return job_id


def _items(settings: Settings, job_id: str) -> int:
    with session_scope(settings) as s:
        return int(s.scalar(select(func.count()).select_from(JobItem)
                            .where(JobItem.job_id == job_id)) or 0)


def _upload(sdk: openai.OpenAI, **kw: Any) -> Any:
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": GEN, "messages": [{"role": "user", "content": "hi"}]}})
    return sdk.files.create(file=("in.jsonl", io.BytesIO((line + "\n").encode())),
                            purpose="batch", **kw)


@pytest.fixture
def purge_at(migrated: Settings) -> Iterator[Callable[[timedelta], retention.PurgeReport]]:
    def run(later: timedelta) -> retention.PurgeReport:
        with session_scope(migrated) as s:
            return retention.purge(s, migrated, now=utcnow() + later)
    yield run


def test_a_tenants_expired_results_files_and_outputs_go_everything_else_stays(
        migrated: Settings, sentiment_model: str, fake_gen: str,
        sdk: Callable[[str], openai.OpenAI],
        purge_at: Callable[[timedelta], retention.PurgeReport]) -> None:
    short = _tenant(migrated, "ret-short", retention_seconds=HOUR)
    keeper = _tenant(migrated, "ret-keep")  # no policy anywhere: kept until deleted
    a, b = sdk(_key(migrated, short)), sdk(_key(migrated, keeper))

    a_job = _submit(migrated, sentiment_model, short)
    b_job = _submit(migrated, sentiment_model, keeper)
    a_file = _upload(a)
    b_file = _upload(b)
    assert a_file.expires_at == a_file.created_at + HOUR  # the tenant's policy, shown
    assert b_file.expires_at is None
    batch = a.batches.create(input_file_id=a_file.id, endpoint="/v1/chat/completions",
                             completion_window="24h", metadata={"nightowl_queue": "gpu"},
                             output_expires_after={"anchor": "created_at", "seconds": 3 * HOUR})
    _run_inline(migrated, batch.id)
    done = a.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id
    output = a.files.retrieve(done.output_file_id)
    assert output.expires_at == done.completed_at + 3 * HOUR
    a_path = Path(_file_row(migrated, a_file.id).path)
    assert a_path.is_file()

    report = purge_at(timedelta(hours=2))
    assert a_job in report.job_ids and a_file.id in report.file_ids
    assert _items(migrated, a_job) == 0
    with session_scope(migrated) as s:
        assert s.get(Job, a_job) is None
        assert not s.scalar(select(func.count()).select_from(JobChunk)
                            .where(JobChunk.job_id == a_job))
    assert not a_path.exists()
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(a_file.id)
    # Its batch asked for three hours: output, batch and the file its batch named stay.
    assert a.files.content(done.output_file_id).text.count("\n") == 1
    assert a.batches.retrieve(batch.id).status == "completed"
    # The other tenant keeps everything.
    assert _items(migrated, b_job) == 5 and b.files.retrieve(b_file.id).id == b_file.id

    report = purge_at(timedelta(hours=3, minutes=30))
    assert batch.id in report.job_ids
    for gone in (lambda: a.batches.retrieve(batch.id),
                 lambda: a.files.retrieve(done.output_file_id)):
        with pytest.raises(openai.NotFoundError):
            gone()
    assert _items(migrated, batch.id) == 0
    assert _items(migrated, b_job) == 5 and b.files.retrieve(b_file.id).id == b_file.id
    assert _file_row(migrated, b_file.id).deleted_at is None


def _file_row(settings: Settings, file_id: str) -> File:
    with session_scope(settings) as s:
        row = s.get(File, file_id)
        assert row is not None
        return row


def test_file_expires_after_as_the_sdk_sends_it(
        migrated: Settings, fake_gen: str, sdk: Callable[[str], openai.OpenAI],
        purge_at: Callable[[timedelta], retention.PurgeReport]) -> None:
    c = sdk(_key(migrated, _tenant(migrated, "ret-sdk")))
    made = _upload(c, expires_after={"anchor": "created_at", "seconds": 2 * HOUR})
    assert made.expires_at == made.created_at + 2 * HOUR
    assert c.files.retrieve(made.id).expires_at == made.expires_at
    assert made.id in [f.id for f in c.files.list(purpose="batch")]
    for bad, param in (({"anchor": "created_at", "seconds": 60}, "expires_after.seconds"),
                       ({"anchor": "last_active_at", "seconds": HOUR}, "expires_after.anchor")):
        with pytest.raises(openai.BadRequestError) as e:
            _upload(c, expires_after=bad)
        assert e.value.body["param"] == param  # type: ignore[index]
    assert purge_at(timedelta(hours=1)).file_ids.count(made.id) == 0  # not yet its time
    assert c.files.retrieve(made.id).id == made.id
    assert made.id in purge_at(timedelta(hours=2, seconds=1)).file_ids
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(made.id)
    assert made.id not in [f.id for f in c.files.list()]


def test_batch_output_expires_after_is_checked(migrated: Settings, fake_gen: str,
                                                sdk: Callable[[str], openai.OpenAI]) -> None:
    c = sdk(_key(migrated, _tenant(migrated, "ret-bad")))
    file_id = _upload(c).id
    with pytest.raises(openai.BadRequestError) as e:
        c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                         completion_window="24h",
                         output_expires_after={"anchor": "created_at", "seconds": 40 * 86400})
    assert e.value.body["param"] == "output_expires_after.seconds"  # type: ignore[index]
    assert "2592000" in str(e.value)


def test_jobs_purge_lists_then_purges_what_expired(migrated: Settings,
                                                   sentiment_model: str) -> None:
    tenant = _tenant(migrated, "ret-cli", retention_seconds=HOUR)
    expired, kept = (_submit(migrated, sentiment_model, tenant) for _ in range(2))
    with session_scope(migrated) as s:  # an hour and a bit has passed, for one of them
        s.execute(update(Job).where(Job.id == expired)
                  .values(expires_at=utcnow() - timedelta(seconds=5)))
    runner = CliRunner()
    shown = json.loads(runner.invoke(cli, ["jobs", "show", kept]).output)
    assert (datetime.fromisoformat(shown["results_expire_at"])
            - datetime.fromisoformat(shown["completed_at"])) == timedelta(hours=1)
    dry = runner.invoke(cli, ["jobs", "purge", "--dry-run", "--list"], catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert "would purge" in dry.output and f"job {expired}" in dry.output
    assert kept not in dry.output and _items(migrated, expired) == 5
    done = runner.invoke(cli, ["jobs", "purge", "--list"], catch_exceptions=False)
    assert done.exit_code == 0 and f"job {expired}" in done.output, done.output
    assert _items(migrated, expired) == 0 and _items(migrated, kept) == 5
    late = runner.invoke(cli, ["jobs", "purge", "--as-of", "2099-01-01"])
    assert late.exit_code == 2 and "future" in late.output


def _job_at(settings: Settings, version_id: int, at_ms: int, expires_in: timedelta | None,
            items: int = 3) -> str:
    """A finished job made at `at_ms` (its id says when), with `items` result rows."""
    job_id = new_job_id("job", at_ms=at_ms)
    now = utcnow()
    with session_scope(settings) as s:
        s.add(Job(id=job_id, kind=TaskKind.SENTIMENT, model_ref="m", model_version_id=version_id,
                  status=JobStatus.COMPLETED, chunk_size=10, queue="cpu", total_items=items,
                  completed_at=now, expires_at=None if expires_in is None else now + expires_in))
        s.flush()
        s.add_all(JobItem(job_id=job_id, idx=n, custom_id=f"c{n}", input={"text": "x"},
                          status=ItemStatus.SUCCEEDED, output={"label": "positive"}, attempts=1)
                  for n in range(items))
    return job_id


def test_postgresql_purge_drops_a_window_once_every_job_in_it_expired(
        migrated: Settings, sentiment_model: str) -> None:
    with session_scope(migrated) as s:
        if not partitions.is_partitioned(s):
            pytest.skip("job_items is partitioned on PostgreSQL only (CI runs it)")
        version = registry.list_versions(s, sentiment_model)[0].id
        lo = partitions.now_ms() - 10 * 86_400_000  # a window ten days back, made for the test
        lo -= lo % 60_000
        window = partitions.create_window(s, "job", lo, lo + 60_000)
    early = _job_at(migrated, version, lo + 1, timedelta(hours=1))
    late = _job_at(migrated, version, lo + 2, timedelta(hours=5))
    today = _job_at(migrated, version, partitions.now_ms(), timedelta(hours=1))

    def tables() -> set[str]:
        with session_scope(migrated) as s:
            return set(s.scalars(text("SELECT tablename FROM pg_tables")))

    # Two hours on: one of the window's jobs has expired, the other has not; its rows go one by
    # one and the window stays.
    with session_scope(migrated) as s:
        report = retention.purge(s, migrated, now=utcnow() + timedelta(hours=2))
    assert window not in report.partitions_dropped and window in tables()
    assert _items(migrated, early) == 0 and _items(migrated, late) == 3
    with session_scope(migrated) as s:
        report = retention.purge(s, migrated, now=utcnow() + timedelta(hours=6))
    assert window in report.partitions_dropped and window not in tables()
    assert late in report.job_ids and _items(migrated, late) == 0
    # Today's window is not over, whatever time the purge is told: its rows went by job.
    assert _items(migrated, today) == 0
    assert any(t.startswith("job_items_job_") for t in tables())


def test_postgresql_items_made_before_their_window_move_into_it(
        migrated: Settings, sentiment_model: str) -> None:
    """No pass ran for days (no worker up): a job's items went to the default partition; the
    window made later takes them, and nothing is lost."""
    with session_scope(migrated) as s:
        if not partitions.is_partitioned(s):
            pytest.skip("job_items is partitioned on PostgreSQL only (CI runs it)")
        version = registry.list_versions(s, sentiment_model)[0].id
    lo = partitions.now_ms() + 30 * 86_400_000  # a month ahead: no window exists there yet
    lo -= lo % 60_000
    early = _job_at(migrated, version, lo + 5, None, items=4)

    def home() -> set[str]:
        with session_scope(migrated) as s:
            return set(s.scalars(text("SELECT DISTINCT tableoid::regclass::text FROM job_items "
                                      "WHERE job_id = :j"), {"j": early}))

    window = partitions.window_name("job", lo)
    try:
        assert home() == {partitions.DEFAULT}
        with session_scope(migrated) as s:
            assert partitions.create_window(s, "job", lo, lo + 60_000) == window
        assert home() == {window} and _items(migrated, early) == 4
    finally:
        with session_scope(migrated) as s:  # the month-ahead window goes with its job
            s.execute(text(f"DROP TABLE IF EXISTS {window}"))
            s.execute(text("DELETE FROM jobs WHERE id = :j"), {"j": early})


def test_postgresql_windows_are_made_ahead_around_what_exists(migrated: Settings) -> None:
    """The pass makes the missing windows up to two ahead, ending where a window someone
    made already begins, so none overlap (PostgreSQL would refuse an overlap anyway)."""
    with session_scope(migrated) as s:
        if not partitions.is_partitioned(s):
            pytest.skip("job_items is partitioned on PostgreSQL only (CI runs it)")
        step = 60_000
        at = partitions.now_ms() + 60 * 86_400_000  # two months on: a clean stretch
        at -= at % step
        try:
            early = partitions.create_window(s, "batch", at + 30_000, at + 90_000)
            made = partitions.ensure(s, window_seconds=60, at_ms=at)
            spans = sorted((w.lo_ms - at, w.hi_ms - at) for w in partitions.windows(s)
                           if w.prefix == "batch" and at <= w.lo_ms < at + 3 * step)
            assert spans == [(0, 30_000), (30_000, 90_000), (90_000, 120_000)]
            assert early not in made and len(made) == 2 * len(partitions.PREFIXES)
        finally:
            s.rollback()
            for w in partitions.windows(s):
                if w.lo_ms >= at - step:
                    s.execute(text(f"DROP TABLE {w.name}"))
            s.commit()
