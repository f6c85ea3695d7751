"""A cancel racing a worker's chunk commit: the commit locks a chunk, then the job row; the
cancel must take its locks in that same order (or retry), so neither is rolled back as a
deadlock's victim and the cancel lands. PostgreSQL only: SQLite has one writer, no row locks."""

from __future__ import annotations

import threading
import time

import pytest
from core_support import Core
from sqlalchemy import text

from nightowl.common.enums import JobStatus
from nightowl.jobs import service as jobs
from nightowl.platform.db import make_engine, session_scope


def test_a_cancel_racing_a_chunk_commit_lands_and_the_commit_is_not_a_deadlock_victim(
        core: Core) -> None:
    if not core.settings.sqlalchemy_url.startswith("postgresql"):
        pytest.skip("row locks and deadlocks are PostgreSQL's; SQLite serialises writers")
    job_id = core.submit(6, chunk_size=1)
    engine = make_engine(core.settings.sqlalchemy_url)
    worker = engine.connect()
    # A worker's transaction, as a commit with a dispatch top-up runs it: a pending chunk
    # first (marked enqueued), the job row's counts after.
    tx = worker.begin()
    worker.execute(text("UPDATE job_chunks SET enqueued_at = now() WHERE id = (SELECT max(id) "
                        "FROM job_chunks WHERE job_id = :j AND status = 'pending')"),
                   {"j": job_id})
    outcome: dict[str, object] = {}

    def cancel() -> None:
        try:
            with session_scope(core.settings) as s:
                outcome["status"] = jobs.cancel_job(s, job_id).status
        except Exception as e:  # the test reports it below
            outcome["error"] = e

    canceller = threading.Thread(target=cancel)
    canceller.start()
    time.sleep(0.5)  # the cancel is now waiting on a lock the worker holds
    worker_error = None
    try:
        worker.execute(text("UPDATE jobs SET succeeded_items = succeeded_items WHERE id = :j"),
                       {"j": job_id})
        tx.commit()
    except Exception as e:
        worker_error = e
        tx.rollback()
    canceller.join(timeout=30)
    worker.close()
    engine.dispose()
    assert worker_error is None, f"the worker's commit was a deadlock victim: {worker_error}"
    assert "error" not in outcome, outcome
    assert outcome["status"] in (JobStatus.CANCELLING, JobStatus.CANCELLED)
