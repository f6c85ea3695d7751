"""A checked direct request on the serving lane: the lane message, its answer, its SQL record.

The request is checked exactly as on the job path (nightowl.openai.direct.check); it then
travels as a nightowl.jobs.lane.LaneRequest, comes back as item outcomes that are shaped into
the same output line a one-item job gives, and is recorded with the same rows.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from nightowl.common.config import Settings
from nightowl.common.enums import ItemStatus
from nightowl.jobs.lane import Done, LaneItem, LaneRequest
from nightowl.jobs.lane_record import LaneRecord
from nightowl.openai.direct import Checked, answer
from nightowl.openai.output import response_id
from nightowl.platform.orm import JobItem, new_job_id


def to_lane(checked: Checked, settings: Settings) -> LaneRequest:
    field = checked.spec.kind.input_field
    version = checked.version
    # Log-probabilities are computed for the whole answer at its end, so a request asking for
    # them is answered whole (its stream then arrives at once, as before).
    follows = checked.direct.stream and not any(
        line.input.get("params", {}).get("logprobs") for line in checked.lines)
    return LaneRequest(
        id=new_job_id(checked.spec.origin.id_prefix), kind=checked.spec.kind.value,
        version_id=version.id,
        source=version.source, sha256=version.sha256, revision=version.revision,
        items=[LaneItem(line.input[field], dict(line.input.get("params", {})))
               for line in checked.lines],
        deadline=time.time() + settings.direct_timeout_seconds,
        queue=checked.spec.queue or "cpu", stream=follows)


def stream_id(checked: Checked, req: LaneRequest) -> str:
    """The id the finished response body will carry (chatcmpl-..., cmpl-...)."""
    return response_id(checked.direct.endpoint, req.id, 0)


def _at(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def items(checked: Checked, req: LaneRequest, done: Done) -> list[JobItem]:
    """The request's item rows as they will be stored (not added to any session)."""
    return [
        JobItem(job_id=req.id, idx=i, line_no=line.line_no, custom_id=line.custom_id,
                input=line.input, status=ItemStatus(o.status), output=o.output,
                error_code=o.error_code, error_message=o.error_message, tokens_in=o.tokens_in,
                tokens_out=o.tokens_out, started_at=_at(o.started_at),
                finished_at=_at(o.finished_at))
        for i, (line, o) in enumerate(zip(checked.lines, done.outcomes, strict=True))
    ]


def answer_line(checked: Checked, req: LaneRequest, done: Done) -> dict[str, Any]:
    return answer(req.id, items(checked, req, done), checked.direct)


def record(checked: Checked, req: LaneRequest, done: Done, created: datetime) -> LaneRecord:
    return LaneRecord(
        request=req, tenant_id=checked.spec.tenant_id, model_ref=checked.spec.model,
        metadata=checked.spec.metadata, custom_ids=[line.custom_id for line in checked.lines],
        inputs=[line.input for line in checked.lines], done=done,
        priority=checked.spec.priority, created=created)
