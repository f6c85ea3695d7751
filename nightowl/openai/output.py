"""A batch's output and error files: made on demand from job_items, streamed, with stable ids.

Output lines are OpenAI's `{id, custom_id, response: {status_code, request_id, body}, error}`,
the body shaped like the endpoint's own response (text_completion, chat.completion, ...).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from nightowl.common.enums import ErrorCode, ItemStatus, JobOrigin, JobStatus
from nightowl.common.errors import NotFound
from nightowl.jobs.service import iter_items
from nightowl.openai import responses
from nightowl.openai.batches import (
    OUTPUT,
    batch_file_id,
    file_ids,
    get_batch,
    parse_batch_file_id,
)
from nightowl.openai.fields import read_openai, write_openai
from nightowl.platform.orm import Job, JobItem, utcnow

ERROR_STATUSES = [ItemStatus.FAILED, ItemStatus.CANCELLED, ItemStatus.EXPIRED]
_CLIENT_ERRORS = {c.value for c in (
    ErrorCode.INVALID_INPUT, ErrorCode.TOO_LONG, ErrorCode.INVALID_REQUEST,
    ErrorCode.MISSING_REQUIRED_PARAMETER, ErrorCode.UNSUPPORTED_PARAMETER,
    ErrorCode.CONTEXT_LENGTH_EXCEEDED, ErrorCode.MODEL_NOT_FOUND)}
_TEXT_KEYS = ("text", "generated_text", "translation", "translation_text", "output")
_LIST_KEYS = ("texts", "generated_texts", "sequences", "choices", "outputs")


@dataclass
class BatchFile:
    job: Job
    which: str  # OUTPUT or ERRORS

    @property
    def id(self) -> str:
        return batch_file_id(self.job.id, self.which)


def get_batch_file(session: Session, file_id: str, *, tenant_id: str | None) -> BatchFile | None:
    """The batch file with this id; None if the id is not a batch file's; NotFound if it is one
    that does not exist (yet), belongs to another tenant, or was deleted."""
    parsed = parse_batch_file_id(file_id)
    if parsed is None:
        return None
    batch_id, which = parsed
    try:
        job = get_batch(session, batch_id, tenant_id=tenant_id)
    except NotFound:
        raise NotFound(f"no file {file_id!r}") from None
    deleted = read_openai(job).deleted_files
    # Past its expiry it is gone, though the pass that purges the batch may not have run yet.
    expired = job.expires_at is not None and job.expires_at <= utcnow()
    if file_ids(job)[which] is None or which in deleted or expired:
        raise NotFound(f"no file {file_id!r}")
    return BatchFile(job, which)


def list_batch_files(session: Session, *, tenant_id: str | None,
                     limit: int = 10_000) -> list[BatchFile]:
    """The output and error files of finished batches (newest batches first), as files.list
    shows them with purpose batch_output."""
    finished = [JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.EXPIRED]
    stmt = (select(Job).where(Job.origin == JobOrigin.BATCH,
                              Job.status.in_(finished),
                              or_(Job.expires_at.is_(None), Job.expires_at > utcnow()))
            .order_by(Job.created_at.desc(), Job.id.desc()).limit(limit))
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    out = []
    for job in session.scalars(stmt):
        deleted = read_openai(job).deleted_files
        out += [BatchFile(job, which) for which, file_id in file_ids(job).items()
                if file_id is not None and which not in deleted]
    return out


def iter_lines(session: Session, bf: BatchFile) -> Iterator[str]:
    """The file's JSONL lines in input order, read in keyset pages (flat memory)."""
    meta = read_openai(bf.job)
    endpoint, model = meta.endpoint, meta.model or bf.job.model_ref
    statuses = [ItemStatus.SUCCEEDED] if bf.which == OUTPUT else ERROR_STATUSES
    for item in iter_items(session, bf.job.id, statuses=statuses):
        yield json.dumps(output_line(bf.job.id, item, endpoint, model), ensure_ascii=False) + "\n"


def file_size(session: Session, bf: BatchFile) -> int:
    """Bytes of the file: counted once by streaming it, then kept on the (finished) job."""
    sizes = dict(read_openai(bf.job).file_bytes)
    if bf.which not in sizes:
        sizes[bf.which] = sum(len(line.encode("utf-8")) for line in iter_lines(session, bf))
        write_openai(bf.job, file_bytes=sizes)
        session.commit()
    return int(sizes[bf.which])


def delete_batch_file(session: Session, bf: BatchFile) -> None:
    deleted = read_openai(bf.job).deleted_files
    write_openai(bf.job, deleted_files=sorted({*deleted, bf.which}))
    session.commit()


def file_object(bf: BatchFile, size: int) -> dict[str, Any]:
    job = bf.job
    finished = job.completed_at or job.cancelled_at or job.expired_at or job.created_at
    return {"id": bf.id, "object": "file", "bytes": size, "created_at": int(finished.timestamp()),
            "filename": f"{bf.id}.jsonl", "purpose": "batch_output", "status": "processed",
            "expires_at": int(job.expires_at.timestamp()) if job.expires_at else None,
            "status_details": None}


def _request_id(job_id: str, idx: int) -> str:
    # Derived from the row, so every download of the file is byte-identical.
    return hashlib.sha256(f"{job_id}:{idx}".encode()).hexdigest()[:24]


def response_id(endpoint: str, job_id: str, idx: int) -> str:
    """The id of the response body output_line gives this item (known before it runs)."""
    prefix = {"/v1/chat/completions": "chatcmpl", "/v1/classifications": "clf",
              "/v1/translations": "trl"}.get(endpoint, "cmpl")
    return f"{prefix}-{_request_id(job_id, idx)}"


def output_line(job_id: str, item: JobItem, endpoint: str, model: str) -> dict[str, Any]:
    rid = _request_id(job_id, item.idx)
    line: dict[str, Any] = {"id": f"batch_req_{rid}", "custom_id": item.custom_id}
    if item.status == ItemStatus.SUCCEEDED:
        body = response_body(endpoint, item, model, rid)
        if endpoint == responses.RESPONSES:
            body = responses.from_chat(body, rid=responses.response_id(job_id, item.idx),
                                       echo=(item.input or {}).get("response") or {})
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
                "param": (item.input or {}).get("error_param"),
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


def _copies(item: JobItem) -> int:
    """How many times the item's one (greedy) text stands for n choices."""
    return int((item.input or {}).get("copies") or 1)


def _usage(item: JobItem) -> dict[str, int]:
    # n greedy choices are billed as n completions, as OpenAI counts them.
    prompt, completion = item.tokens_in or 0, (item.tokens_out or 0) * _copies(item)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def response_body(endpoint: str, item: JobItem, model: str, rid: str) -> dict[str, Any]:
    output = item.output or {}
    created = int(item.finished_at.timestamp()) if item.finished_at else 0
    if endpoint == "/v1/embeddings":
        # An item of several inputs has a vector per input (tokens_in is their sum).
        vectors = output.get("embeddings") or [output.get("embedding") or []]
        base64_form = item.input.get("encoding_format") == "base64"
        tokens = item.tokens_in or 0
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": n,
                          "embedding": _base64(vector) if base64_form else vector}
                         for n, vector in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    if endpoint == "/v1/classifications":
        result = {k: v for k, v in output.items() if k not in ("id", "object", "model")}
        return {"id": f"clf-{rid}", "object": "classification", "created": created,
                "model": model, **result, "usage": _usage(item)}
    texts = _texts(output)
    reasons = _finish_reasons(output, item, len(texts))
    logprobs = _logprobs(output, len(texts))
    if (copies := _copies(item)) > 1 and len(texts) == 1:
        texts, reasons, logprobs = texts * copies, reasons * copies, logprobs * copies
    if endpoint in ("/v1/chat/completions", responses.RESPONSES):
        choices: list[dict[str, Any]] = [
            {"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
             "logprobs": None if lp is None else {"content": lp, "refusal": None},
             "finish_reason": reason}
            for i, (text, reason, lp) in enumerate(zip(texts, reasons, logprobs, strict=True))
        ]
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        choices = [{"index": i, "text": text, "finish_reason": reason,
                    "logprobs": None if lp is None else _completion_logprobs(lp)}
                   for i, (text, reason, lp) in enumerate(zip(texts, reasons, logprobs,
                                                               strict=True))]
        obj, prefix = ("translation", "trl") if endpoint == "/v1/translations" else (
            "text_completion", "cmpl")
    return {"id": f"{prefix}-{rid}", "object": obj, "created": created, "model": model,
            "choices": choices, "usage": _usage(item)}


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 form: little-endian float32, which the vector already is."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _logprobs(output: dict[str, Any], n: int) -> list[list[dict[str, Any]] | None]:
    """Each choice's per-token logprobs as the runner gave them (chat's content form)."""
    choices = output.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        return [None] * n
    return [c.get("logprobs") if isinstance(c, dict) else None for c in choices]


def _completion_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The legacy completions form: parallel lists, alternatives as {token: logprob}."""
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]}
                             for e in entries],
            "text_offset": offsets}
