"""/v1/files: uploads (OpenAI-compatible), plus the output and error files of batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session

from nightowl.common.errors import InvalidInput
from nightowl.openai import output as batch_output
from nightowl.platform import retention
from nightowl.platform.db import session_factory
from nightowl.platform.orm import File
from nightowl.storage import files as service
from nightowl_api.deps import SessionDep, SettingsDep, TenantDep
from nightowl_api.openai_schemas import FileDeleted, FileList, FileObject

router = APIRouter(prefix="/files", tags=["files"])
# batch: OpenAI batch input; jobs: nightowl job input (`nightowl --api URL submit`); the others
# are OpenAI's, stored for clients that upload them (nightowl itself reads batch and jobs).
PURPOSES = ("batch", "jobs", "fine-tune", "user_data", "assistants", "vision", "evals")
BATCH_OUTPUT = "batch_output"


def file_out(row: File) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=int(row.created_at.timestamp()),
                      filename=row.filename, purpose=row.purpose,
                      expires_at=int(row.expires_at.timestamp()) if row.expires_at else None)


@router.post("")
def upload_file(
    file: UploadFile, purpose: Annotated[str, Form()], session: SessionDep,
    settings: SettingsDep, tenant: TenantDep,
    anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    seconds: Annotated[str | None, Form(alias="expires_after[seconds]")] = None,
) -> FileObject:
    """Upload a file (multipart: file, purpose=batch for batch input; optional
    expires_after[anchor]=created_at and expires_after[seconds], as the openai SDK sends)."""
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose {purpose!r} is not supported; use one of "
                           f"{', '.join(PURPOSES)}", param="purpose")
    given = None if anchor is None and seconds is None else {"anchor": anchor,
                                                              "seconds": seconds}
    expires_after = retention.expires_after_seconds(given, param="expires_after")
    row = service.create_file(session, settings, stream=file.file,
                              filename=file.filename or "upload.jsonl", purpose=purpose,
                              tenant_id=tenant, expires_after=expires_after)
    session.commit()
    return file_out(row)


@router.get("")
def list_files(session: SessionDep, tenant: TenantDep, purpose: str | None = None,
               after: str | None = Query(None, description="Last id of the previous page"),
               limit: int = Query(10_000, ge=1, le=10_000),
               order: Literal["asc", "desc"] = "desc") -> FileList:
    """Your files, newest first: uploads, and batches' output and error files (batch_output)."""
    ascending = order == "asc"
    if purpose not in (None, BATCH_OUTPUT):
        rows, more = service.list_files_page(session, tenant_id=tenant, purpose=purpose,
                                             after=after, limit=limit, ascending=ascending)
        data = [file_out(r) for r in rows]
    else:
        data, more = _merged_page(session, tenant, purpose, after, limit, ascending)
    return FileList(data=data, first_id=data[0].id if data else None,
                    last_id=data[-1].id if data else None, has_more=more)


def _merged_page(session: Session, tenant: str, purpose: str | None, after: str | None,
                 limit: int, ascending: bool) -> tuple[list[FileObject], bool]:
    """Uploads and batch files in one order; batch files exist only as their batch's rows."""
    found: list[FileObject] = []
    if purpose is None:
        rows, _ = service.list_files_page(session, tenant_id=tenant, limit=10_000)
        found += [file_out(r) for r in rows]
    for bf in batch_output.list_batch_files(session, tenant_id=tenant):
        found.append(FileObject(**batch_output.file_object(
            bf, batch_output.file_size(session, bf))))
    found.sort(key=lambda f: (f.created_at, f.id), reverse=not ascending)
    start = 0
    if after is not None:
        at = next((i for i, f in enumerate(found) if f.id == after), None)
        if at is None:
            raise InvalidInput(f"after={after!r} is not a file id of yours", param="after")
        start = at + 1
    return found[start:start + limit], len(found) > start + limit


@router.get("/{file_id}")
def get_file(file_id: str, session: SessionDep, tenant: TenantDep) -> FileObject:
    """One file's metadata."""
    bf = batch_output.get_batch_file(session, file_id, tenant_id=tenant)
    if bf is not None:
        return FileObject(**batch_output.file_object(bf, batch_output.file_size(session, bf)))
    return file_out(service.get_file(session, file_id, tenant_id=tenant))


@router.get("/{file_id}/content", response_model=None, responses={200: {
    "content": {"application/octet-stream": {}, "application/jsonl": {}}}})
def file_content(file_id: str, session: SessionDep, settings: SettingsDep,
                 tenant: TenantDep) -> FileResponse | StreamingResponse:
    """The file's bytes; a batch's output and error files are streamed from its rows."""
    bf = batch_output.get_batch_file(session, file_id, tenant_id=tenant)
    if bf is None:
        row = service.get_file(session, file_id, tenant_id=tenant)
        return FileResponse(service.local_path(row, settings),
                            media_type="application/octet-stream", filename=row.filename)
    job_id = bf.job.id
    # Release the request's transaction: on SQLite it holds the lock the stream's session needs.
    session.commit()

    def stream() -> Iterator[str]:
        # Its own session: the request's closes when the handler returns, before streaming.
        with session_factory(settings)() as s:
            again = batch_output.get_batch_file(s, file_id, tenant_id=tenant)
            assert again is not None and again.job.id == job_id
            yield from batch_output.iter_lines(s, again)

    return StreamingResponse(stream(), media_type="application/jsonl")


@router.delete("/{file_id}")
def delete_file(file_id: str, session: SessionDep, tenant: TenantDep) -> FileDeleted:
    """Delete a file: its bytes go now; batches that used it keep their results."""
    bf = batch_output.get_batch_file(session, file_id, tenant_id=tenant)
    if bf is not None:
        batch_output.delete_batch_file(session, bf)
    else:
        service.delete_file(session, file_id, tenant_id=tenant)
    return FileDeleted(id=file_id, deleted=True)
