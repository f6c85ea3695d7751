"""A batch's output and error files: made on demand from job_items, streamed, with stable ids.

Output lines are OpenAI's `{id, custom_id, response: {status_code, request_id, body}, error}`,
the body shaped like the endpoint's own response (text_completion, chat.completion, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from nightowl.batches import ERRORS, ID_PREFIX, OUTPUT, file_ids, get_batch
from nightowl.enums import ErrorCode, ItemStatus
from nightowl.errors import NotFound
from nightowl.jobs import iter_items
from nightowl.models import Job, JobItem

ERROR_STATUSES = [ItemStatus.FAILED, ItemStatus.CANCELLED, ItemStatus.EXPIRED]
_CLIENT_ERRORS = {ErrorCode.INVALID_INPUT.value, ErrorCode.TOO_LONG.value}
_TEXT_KEYS = ("text", "generated_text", "translation", "translation_text", "output")
_LIST_KEYS = ("texts", "generated_texts", "sequences", "choices", "outputs")


@dataclass
class BatchFile:
    job: Job
    which: str  # OUTPUT or ERRORS

    @property
    def id(self) -> str:
        return f"{self.job.id}_{self.which}"


def get_batch_file(session: Session, file_id: str, *, tenant_id: str | None) -> BatchFile | None:
    """The batch file with this id; None if the id is not a batch file's; NotFound if it is one
    that does not exist (yet), belongs to another tenant, or was deleted."""
    if not file_id.startswith(ID_PREFIX + "_"):
        return None
    batch_id, _, which = file_id.rpartition("_")
    if which not in (OUTPUT, ERRORS):
        return None
    try:
        job = get_batch(session, batch_id, tenant_id=tenant_id)
    except NotFound:
        raise NotFound(f"no file {file_id!r}") from None
    deleted = (job.metadata_.get("openai") or {}).get("deleted_files") or []
    if file_ids(job)[which] != file_id or which in deleted:
        raise NotFound(f"no file {file_id!r}")
    return BatchFile(job, which)


def iter_lines(session: Session, bf: BatchFile) -> Iterator[str]:
    """The file's JSONL lines in input order, read in keyset pages (flat memory)."""
    meta = bf.job.metadata_.get("openai") or {}
    endpoint, model = meta.get("endpoint", ""), meta.get("model") or bf.job.model_ref
    statuses = [ItemStatus.SUCCEEDED] if bf.which == OUTPUT else ERROR_STATUSES
    for item in iter_items(session, bf.job.id, statuses=statuses):
        yield json.dumps(output_line(bf.job.id, item, endpoint, model), ensure_ascii=False) + "\n"


def file_size(session: Session, bf: BatchFile) -> int:
    """Bytes of the file: counted once by streaming it, then kept on the (finished) job."""
    meta = dict(bf.job.metadata_.get("openai") or {})
    sizes = dict(meta.get("file_bytes") or {})
    if bf.which not in sizes:
        sizes[bf.which] = sum(len(line.encode("utf-8")) for line in iter_lines(session, bf))
        meta["file_bytes"] = sizes
        bf.job.metadata_ = {**bf.job.metadata_, "openai": meta}
        session.commit()
    return int(sizes[bf.which])


def delete_batch_file(session: Session, bf: BatchFile) -> None:
    meta = dict(bf.job.metadata_.get("openai") or {})
    meta["deleted_files"] = sorted({*(meta.get("deleted_files") or []), bf.which})
    bf.job.metadata_ = {**bf.job.metadata_, "openai": meta}
    session.commit()


def file_object(bf: BatchFile, size: int) -> dict[str, Any]:
    job = bf.job
    finished = job.completed_at or job.cancelled_at or job.expired_at or job.created_at
    return {"id": bf.id, "object": "file", "bytes": size, "created_at": int(finished.timestamp()),
            "filename": f"{bf.id}.jsonl", "purpose": "batch_output", "status": "processed",
            "expires_at": None, "status_details": None}


def _request_id(job_id: str, idx: int) -> str:
    # Derived from the row, so every download of the file is byte-identical.
    return hashlib.sha256(f"{job_id}:{idx}".encode()).hexdigest()[:24]


def output_line(job_id: str, item: JobItem, endpoint: str, model: str) -> dict[str, Any]:
    rid = _request_id(job_id, item.idx)
    line: dict[str, Any] = {"id": f"batch_req_{rid}", "custom_id": item.custom_id}
    if item.status == ItemStatus.SUCCEEDED:
        body = response_body(endpoint, item, model, rid)
        line["response"] = {"status_code": 200, "request_id": f"req_{rid}", "body": body}
        line["error"] = None
    elif item.status in (ItemStatus.CANCELLED, ItemStatus.EXPIRED):
        # As OpenAI reports requests a cancelled or expired batch never ran.
        code = "batch_cancelled" if item.status == ItemStatus.CANCELLED else "batch_expired"
        line["response"] = None
        line["error"] = {"code": code, "message": item.error_message or code}
    else:
        client = item.error_code in _CLIENT_ERRORS
        line["response"] = {
            "status_code": 400 if client else 500,
            "request_id": f"req_{rid}",
            "body": {"error": {
                "message": item.error_message or "the request failed",
                "type": "invalid_request_error" if client else "server_error",
                "param": None,
                "code": item.error_code,
            }},
        }
        line["error"] = None
    return line


def _texts(output: dict[str, Any]) -> list[str]:
    """The generated texts, whichever key the runner put them under."""
    for key in _LIST_KEYS:
        value = output.get(key)
        if isinstance(value, list) and value:
            return [_texts(v)[0] if isinstance(v, dict) else str(v) for v in value]
    for key in _TEXT_KEYS:
        if isinstance(output.get(key), str):
            return [output[key]]
    return [json.dumps(output, ensure_ascii=False)]


def _finish_reasons(output: dict[str, Any], item: JobItem, n: int) -> list[str]:
    choices = output.get("choices")
    given: Any = output.get("finish_reason")
    if isinstance(choices, list) and len(choices) == n and all(
        isinstance(c, dict) and isinstance(c.get("finish_reason"), str) for c in choices
    ):
        given = [c["finish_reason"] for c in choices]
    if isinstance(given, str):
        given = [given] * n
    if isinstance(given, list) and len(given) == n:
        # The runner says "eos" when the model ended the text itself: OpenAI calls that "stop".
        return ["stop" if g == "eos" else str(g) for g in given]
    limit = (item.input.get("params") or {}).get("max_new_tokens")
    per_choice = (item.tokens_out or 0) / max(n, 1)
    return ["length" if limit and per_choice >= limit else "stop"] * n


def _usage(item: JobItem) -> dict[str, int]:
    prompt, completion = item.tokens_in or 0, item.tokens_out or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def response_body(endpoint: str, item: JobItem, model: str, rid: str) -> dict[str, Any]:
    output = item.output or {}
    created = int(item.finished_at.timestamp()) if item.finished_at else 0
    if endpoint == "/v1/classifications":
        result = {k: v for k, v in output.items() if k not in ("id", "object", "model")}
        return {"id": f"clf-{rid}", "object": "classification", "created": created,
                "model": model, **result, "usage": _usage(item)}
    texts = _texts(output)
    reasons = _finish_reasons(output, item, len(texts))
    if endpoint == "/v1/chat/completions":
        choices: list[dict[str, Any]] = [
            {"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
             "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
        ]
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))]
        obj, prefix = ("translation", "trl") if endpoint == "/v1/translations" else (
            "text_completion", "cmpl")
    return {"id": f"{prefix}-{rid}", "object": obj, "created": created, "model": model,
            "choices": choices, "usage": _usage(item)}
