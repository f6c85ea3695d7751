"""`nightowl sql`: analysts read through the documented views; nothing they type can write."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from query_support import register_model, run_chunk, run_job, submit, unique
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.cli import cli
from nightowl.common.config import Settings
from nightowl.platform.orm import Job

TEXTS = ["terrible, broken on arrival", "works fine", "terrible taste", "nice"]


def sql(*args: str) -> Any:
    return CliRunner().invoke(cli, ["sql", *args])


def rows(statement: str) -> list[dict[str, Any]]:
    result = sql(statement, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def retried(migrated: Settings, session: Session) -> dict[str, str]:
    """A job whose items 1 and 3 failed, and a retry (a child job) that then got them right."""
    name = unique("sentiment")
    register_model(session, name)
    parent = submit(migrated, model=f"{name}@prod", texts=TEXTS)
    run_job(migrated, parent, fail=lambda t: t in ("works fine", "nice"))
    child = submit(migrated, model=f"{name}@prod", texts=[TEXTS[1], TEXTS[3]],
                   custom_ids=["r1", "r3"], parent_job_id=parent)
    return {"name": name, "parent": parent, "child": child}


def test_v_results_shows_the_latest_finished_attempt_of_each_item(
        retried: dict[str, str], migrated: Settings) -> None:
    query = (f"SELECT root_job_id, job_id, custom_id, status, label FROM v_results "
             f"WHERE model_name = '{retried['name']}' ORDER BY custom_id")
    # The retry has not run yet: the failures are still the latest results.
    before = rows(query)
    assert [(r["custom_id"], r["status"]) for r in before] == [
        ("r0", "succeeded"), ("r1", "failed"), ("r2", "succeeded"), ("r3", "failed")]
    run_chunk(migrated, retried["child"], 0)
    after = rows(query)
    assert [(r["custom_id"], r["status"], r["label"]) for r in after] == [
        ("r0", "succeeded", "negative"), ("r1", "succeeded", "positive"),
        ("r2", "succeeded", "negative"), ("r3", "succeeded", "positive")]
    assert {r["root_job_id"] for r in after} == {retried["parent"]}
    assert [r["job_id"] for r in after] == [retried["parent"], retried["child"],
                                            retried["parent"], retried["child"]]


def test_label_daily_and_throughput_views(retried: dict[str, str], migrated: Settings) -> None:
    run_chunk(migrated, retried["child"], 0)
    daily = rows(f"SELECT label, items, avg_score FROM v_label_daily "
                 f"WHERE model_name = '{retried['name']}' ORDER BY label")
    assert [(r["label"], r["items"]) for r in daily] == [("negative", 2), ("positive", 2)]
    assert daily[0]["avg_score"] == pytest.approx(0.91)
    speed = rows(f"SELECT job_id, chunks_done, items_per_second, wall_seconds, tokens_out "
                 f"FROM v_job_throughput WHERE job_id = '{retried['parent']}'")
    assert speed[0]["chunks_done"] == 1 and speed[0]["tokens_out"] == 2
    assert speed[0]["wall_seconds"] >= 0


def test_table_output_for_people() -> None:
    result = sql("SELECT 1 AS one, 'two' AS two")
    assert result.exit_code == 0 and "one" in result.stdout and "two" in result.stdout
    assert "1 rows" in result.stderr


@pytest.mark.parametrize("statement", [
    "DELETE FROM jobs",
    "UPDATE jobs SET status = 'failed'",
    "CREATE TABLE scratch (x INTEGER)",
    "DROP VIEW v_results",
])
def test_writes_are_refused_and_change_nothing(statement: str, session: Session,
                                               retried: dict[str, str]) -> None:
    jobs_before = session.scalar(select(func.count()).select_from(Job))
    session.rollback()
    result = sql(statement)
    assert result.exit_code == 1
    assert "read-only" in result.output and "tries to change the database" in result.output
    assert session.scalar(select(func.count()).select_from(Job)) == jobs_before
    assert rows("SELECT COUNT(*) AS n FROM v_results")[0]["n"] > 0


def test_smuggled_second_statement_is_refused(session: Session) -> None:
    result = sql("SELECT 1; DELETE FROM jobs")
    assert result.exit_code == 1 and "one statement at a time" in result.output


def test_a_bad_query_names_the_problem() -> None:
    result = sql("SELECT nope FROM v_results")
    assert result.exit_code == 1 and "the query failed" in result.output
    assert "nope" in result.output
