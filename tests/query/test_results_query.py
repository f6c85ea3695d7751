"""Results across jobs: the CLI and HTTP filters, keyset streaming, exports, stats, compare."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from query_support import register_model, run_chunk, run_job, submit, unique
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.common.errors import InvalidInput
from nightowl.common.timespec import local_tz, parse_when
from nightowl.platform.db import session_factory
from nightowl.query.query import ResultFilter, iter_results
from nightowl.registry import versions as registry

REVIEWS = [
    "I want a REFUND, the blender arrived broken",    # negative, mentions refund
    "Refund processed quickly, thank you",             # mentions refund, but positive
    "terrible support, no refund offered",             # negative, mentions refund
    "terrible packaging",                              # negative, no refund
    "lovely product",                                  # positive
]


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def night(migrated: Settings, session: Session) -> dict[str, Any]:
    """A model whose @prod moved from v1 to v2, one job on each, with results produced last
    night, the afternoon before, and this morning (local time, as the CLI reads it)."""
    name = unique("sentiment")
    v1 = register_model(session, name)
    job_old = submit(migrated, model=f"{name}@prod", texts=REVIEWS)
    v2 = register_model(session, name)  # @prod now points here
    job_new = submit(migrated, model=f"{name}@prod", texts=REVIEWS * 3, chunk_size=5)
    tz = local_tz()
    last_night = parse_when("yesterday 23:30", tz=tz)
    afternoon = parse_when("yesterday 15:00", tz=tz)
    this_morning = parse_when("today 09:30", tz=tz)
    when = {0: last_night, 1: afternoon, 2: this_morning}  # chunk_no -> when it ran
    for n in range(3):
        run_chunk(migrated, job_new, n, finished_at=lambda _i, at=when[n]: at)
    run_job(migrated, job_old, finished_at=lambda _i: last_night)
    return {"name": name, "v1": v1, "v2": v2, "job_old": job_old, "job_new": job_new}


def test_time_specs_read_as_people_write_them() -> None:
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_when("12h", now=now) == now - timedelta(hours=12)
    assert parse_when("90s ago", now=now) == now - timedelta(seconds=90)
    assert parse_when("yesterday", now=now) == datetime(2025, 3, 9, tzinfo=UTC)
    assert parse_when("yesterday 18:00", now=now) == datetime(2025, 3, 9, 18, tzinfo=UTC)
    assert parse_when("2025-03-01T06:00+02:00") == datetime(2025, 3, 1, 4, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="not understood"):
        parse_when("last tuesday-ish")


def test_negative_refund_results_from_last_night_in_one_command(
        night: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "refunds.csv"
    result = invoke("results", "query", "--model", f"{night['name']}@prod", "--label",
                    "negative", "--contains", "refund", "--since", "yesterday 18:00",
                    "--until", "today 08:00", "-o", str(out))
    assert "wrote 2 rows" in result.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    # Chunk 0 of the v2 job (items 0-4) ran last night: its two negative refund reviews. The
    # v1 job ran last night too, but @prod means the version the alias points to now.
    assert [(r["job_id"], r["custom_id"]) for r in rows] == [
        (night["job_new"], "r0"), (night["job_new"], "r2")]
    assert {r["label"] for r in rows} == {"negative"}
    assert rows[0]["text"] == REVIEWS[0] and rows[0]["model"] == f"{night['name']}@v2"
    assert float(rows[0]["score"]) == pytest.approx(0.91)


def test_model_name_alone_means_every_version(night: dict[str, Any]) -> None:
    result = invoke("results", "query", "--model", night["name"], "--label", "NEGATIVE",
                    "--contains", "Refund", "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    by_job = {(r["job_id"], r["custom_id"]) for r in rows}
    assert (night["job_old"], "r0") in by_job and (night["job_new"], "r12") in by_job
    assert len(rows) == 2 + 2 * 3
    pinned = invoke("results", "query", "--model", f"{night['name']}@v1", "--format", "jsonl")
    assert {json.loads(line)["job_id"] for line in pinned.stdout.splitlines()} == {
        night["job_old"]}


def test_table_is_readable_and_bad_filters_say_why(night: dict[str, Any]) -> None:
    table = invoke("results", "query", "--job", night["job_new"], "--status", "succeeded",
                   "--limit", "3")
    assert "r0" in table.stdout and "negative" in table.stdout and "3 rows" in table.stderr
    bad = CliRunner().invoke(cli, ["results", "query", "--since", "next full moon"])
    assert bad.exit_code == 2 and "not understood" in bad.output
    unknown = CliRunner().invoke(cli, ["results", "query", "--model", "no-such-model@prod"])
    assert unknown.exit_code == 1 and "unknown model" in unknown.output


def test_parquet_export_has_flat_typed_columns(night: dict[str, Any], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "all.parquet"
    invoke("results", "query", "--model", night["name"], "-o", str(out))
    table = pq.read_table(out)
    assert table.num_rows == len(REVIEWS) * 4
    assert {"job_id", "label", "score", "text", "finished_at"} <= set(table.column_names)
    assert str(table.schema.field("finished_at").type) == "timestamp[us, tz=UTC]"
    assert set(table.column("label").to_pylist()) == {"negative", "positive"}
    assert not (tmp_path / "all.parquet.part").exists()


def test_streaming_reads_one_page_at_a_time(night: dict[str, Any], migrated: Settings) -> None:
    opened = [0]
    real = session_factory(migrated)

    def counting() -> Session:
        opened[0] += 1
        return real()

    f = ResultFilter(model=night["name"])
    stream = iter_results(counting, f, page_size=4)
    first = next(stream)
    assert opened[0] == 2  # one to resolve the filter, one for the first page only
    rest = list(stream)
    ids = [first["id"], *(r["id"] for r in rest)]
    assert len(ids) == len(REVIEWS) * 4 and ids == sorted(set(ids))
    # then a page per 4 rows, the last one short (or empty) which ends the stream
    assert opened[0] == 1 + len(ids) // 4 + 1
    assert len(list(iter_results(real, f, limit=7, page_size=4))) == 7


def test_http_results_pages_by_cursor_and_stays_in_its_tenant(
        migrated: Settings, session: Session, make_api_key: Callable[[str], str]) -> None:
    from fastapi.testclient import TestClient

    from nightowl.platform.auth import authenticate
    from nightowl_api.main import app

    key, other_key = make_api_key(unique("acme")), make_api_key(unique("globex"))
    tenant, other = authenticate(session, key), authenticate(session, other_key)
    session.commit()
    name = unique("sentiment")
    register_model(session, name)
    mine = submit(migrated, model=f"{name}@prod", texts=REVIEWS * 2, tenant_id=tenant)
    theirs = submit(migrated, model=f"{name}@prod", texts=REVIEWS, tenant_id=other)
    run_job(migrated, mine)
    run_job(migrated, theirs)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as http:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"model": name, "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/v1/results", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [r["custom_id"] for r in body["data"]]
            assert {r["job_id"] for r in body["data"]} <= {mine}
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"r{i}" for i in range(10)]
        csv_body = http.get("/v1/results", params={"model": name, "label": "negative",
                                                   "contains": "refund", "since": "1h",
                                                   "format": "csv"})
        assert csv_body.status_code == 200
        assert len(list(csv.DictReader(io.StringIO(csv_body.text)))) == 4
        bad = http.get("/v1/results", params={"since": "whenever"})
        assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]
        assert http.get(f"/v1/jobs/{theirs}/stats").status_code == 404
        assert http.get("/v1/results").status_code == 200
    assert TestClient(app).get("/v1/results").status_code == 401


def _tenant_with_model(session: Session, make_api_key: Callable[[str], str], prefix: str
                       ) -> tuple[str, str, str]:
    """A new tenant's key, the tenant, and a new sentiment model's name."""
    from nightowl.platform.auth import authenticate

    key = make_api_key(unique(prefix))
    tenant = authenticate(session, key)
    session.commit()
    name = unique("sentiment")
    register_model(session, name)
    return key, tenant, name


def test_job_stats_from_cli_and_http(migrated: Settings, session: Session,
                                     make_api_key: Callable[[str], str]) -> None:
    from fastapi.testclient import TestClient

    from nightowl_api.main import app

    key, tenant, name = _tenant_with_model(session, make_api_key, "stats")
    job = submit(migrated, model=f"{name}@prod", texts=REVIEWS * 4, chunk_size=5,
                 tenant_id=tenant)
    run_job(migrated, job, fail=lambda text: "packaging" in text)
    stats = json.loads(invoke("jobs", "stats", job, "--json").stdout)
    assert stats["items"]["succeeded"] == 16 and stats["items"]["failed"] == 4
    assert stats["errors"] == {"too_long": 4}
    assert stats["chunks"] == {"total": 4, "done": 4, "micro_batches": 4,
                               "mean_micro_batch_size": 5.0}
    assert stats["tokens"]["out"] == 16 and stats["tokens"]["in"] > 16
    item = stats["latency_seconds"]["item"]
    assert 0.019 <= item["p50"] <= item["p90"] <= item["p99"] <= item["max"] <= 0.03
    assert stats["latency_seconds"]["chunk"]["p50"] is not None
    assert stats["items_per_second"] > 0 and stats["device_seconds"] == pytest.approx(0.2)
    human = invoke("jobs", "stats", job)
    assert "items/s" in human.stdout and "too_long" in human.stdout
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as http:
        body = http.get(f"/v1/jobs/{job}/stats").json()
    assert body["items"] == stats["items"] and body["errors"] == stats["errors"]


def test_models_compare_side_by_side(session: Session, make_api_key: Callable[[str], str]
                                     ) -> None:
    from fastapi.testclient import TestClient

    from nightowl_api.main import app

    name = unique("sentiment")
    register_model(session, name, metrics={"eval/accuracy": 0.81, "eval/loss": 0.52})
    register_model(session, name, alias="candidate",
                   metrics={"eval/accuracy": 0.86, "eval/loss": 0.41, "eval/f1": 0.84})
    out = json.loads(invoke("models", "compare", f"{name}@prod", f"{name}@candidate",
                            "--json").stdout)
    rows = {r["metric"]: r for r in out["metrics"]}
    assert out["a"] == f"{name}@v1" and out["b"] == f"{name}@v2"
    assert rows["eval/accuracy"]["delta"] == pytest.approx(0.05)
    assert rows["eval/f1"]["a"] is None and rows["eval/f1"]["delta"] is None
    table = invoke("models", "compare", f"{name}@v1", f"{name}@v2")
    assert "+0.05" in table.stdout and "eval/loss" in table.stdout
    key = make_api_key(unique("cmp"))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as http:
        body = http.get("/v1/models/compare", params={"a": f"{name}@v1", "b": f"{name}@v2"})
    assert body.status_code == 200 and body.json()["metrics"] == out["metrics"]
    assert registry.resolve(session, f"{name}@prod").version == 1


def test_query_through_the_api_as_a_tenant(
        api_server: str, migrated: Settings, session: Session,
        make_api_key: Callable[[str], str]) -> None:
    key, tenant, name = _tenant_with_model(session, make_api_key, "remote")
    job = submit(migrated, model=f"{name}@prod", texts=REVIEWS, tenant_id=tenant)
    run_job(migrated, job)
    result = invoke("--api", api_server, "--key", key, "results", "query", "--model", name,
                    "--label", "negative", "--contains", "refund", "--since", "1h",
                    "--format", "jsonl")
    assert [json.loads(line)["custom_id"] for line in result.stdout.splitlines()] == ["r0", "r2"]
    refused = CliRunner().invoke(cli, ["--api", api_server, "--key", "nk-nope", "results",
                                       "query", "--format", "jsonl"])
    assert refused.exit_code == 1 and "API key" in refused.output
