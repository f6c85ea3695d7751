"""Background checks of batch input files (nightowl.batch_async); sent by name from the API."""

from __future__ import annotations

from nightowl import batch_async
from nightowl.config import get_settings
from nightowl.db import session_scope
from nightowl.enums import TaskName
from nightowl_tasks.app import app


@app.task(name=TaskName.VALIDATE_BATCH.value)
def validate_batch_task(job_id: str) -> str:
    settings = get_settings()
    with session_scope(settings) as session:
        return batch_async.validate(session, settings, job_id)
