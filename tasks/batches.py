"""Background checks of batch input files (nightowl.openai.validation), sent by name by the API."""

from __future__ import annotations

from nightowl.common.config import get_settings
from nightowl.common.enums import TaskName
from nightowl.openai import validation as batch_async
from nightowl.platform.db import session_scope
from nightowl_tasks.app import app


@app.task(name=TaskName.VALIDATE_BATCH.value)
def validate_batch_task(job_id: str) -> str:
    settings = get_settings()
    with session_scope(settings) as session:
        return batch_async.validate(session, settings, job_id)
