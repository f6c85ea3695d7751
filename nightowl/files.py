"""Uploaded files: bytes on disk under `home/files`, a row in `files`, size-checked on the way."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import IO

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from nightowl.config import Settings
from nightowl.errors import InvalidInput, NotFound
from nightowl.models import File, new_id, utcnow
from nightowl.private import private_dir, private_file

COPY_BLOCK = 1 << 20


def create_file(
    session: Session,
    settings: Settings,
    *,
    stream: IO[bytes],
    filename: str,
    purpose: str,
    tenant_id: str | None = None,
) -> File:
    file_id = new_id("file")
    folder = private_dir(settings.home / "files")
    path = folder / file_id
    digest = hashlib.sha256()
    size = 0
    try:
        with private_file(path).open("wb") as out:
            while block := stream.read(COPY_BLOCK):
                size += len(block)
                if size > settings.max_upload_bytes:
                    raise InvalidInput(
                        f"file {filename!r} is larger than {settings.max_upload_bytes} bytes "
                        "(NIGHTOWL_MAX_UPLOAD_BYTES); split it"
                    )
                digest.update(block)
                out.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    row = File(id=file_id, tenant_id=tenant_id, filename=filename, purpose=purpose, bytes=size,
               path=str(path), sha256=digest.hexdigest())
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, file_id: str, *, tenant_id: str | None = None) -> File:
    row = session.get(File, file_id)
    if row is None or row.deleted_at is not None or (
        tenant_id is not None and row.tenant_id != tenant_id
    ):
        raise NotFound(f"no file {file_id!r}")
    return row


def list_files(session: Session, *, tenant_id: str | None, purpose: str | None = None,
               limit: int = 100) -> list[File]:
    stmt = select(File).where(File.deleted_at.is_(None)).order_by(File.created_at.desc()).limit(
        limit)
    if tenant_id is not None:
        stmt = stmt.where(File.tenant_id == tenant_id)
    if purpose is not None:
        stmt = stmt.where(File.purpose == purpose)
    return list(session.scalars(stmt))


def list_files_page(session: Session, *, tenant_id: str | None, purpose: str | None = None,
                    after: str | None = None, limit: int = 100,
                    ascending: bool = False) -> tuple[list[File], bool]:
    """One page by keyset: `after` is the last id of the previous page. Returns (page, more)."""
    created, ident = File.created_at, File.id
    stmt = (select(File).where(File.deleted_at.is_(None)).limit(limit + 1)
            .order_by(*((created, ident) if ascending else (created.desc(), ident.desc()))))
    if tenant_id is not None:
        stmt = stmt.where(File.tenant_id == tenant_id)
    if purpose is not None:
        stmt = stmt.where(File.purpose == purpose)
    if after is not None:
        try:
            anchor = get_file(session, after, tenant_id=tenant_id)
        except NotFound:
            raise InvalidInput(f"after={after!r} is not a file id of yours") from None
        if ascending:
            stmt = stmt.where(or_(created > anchor.created_at,
                                  and_(created == anchor.created_at, ident > anchor.id)))
        else:
            stmt = stmt.where(or_(created < anchor.created_at,
                                  and_(created == anchor.created_at, ident < anchor.id)))
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit

def delete_file(session: Session, file_id: str, *, tenant_id: str | None = None) -> File:
    row = get_file(session, file_id, tenant_id=tenant_id)
    row.deleted_at = utcnow()
    Path(row.path).unlink(missing_ok=True)
    return row


def copy_to(row: File, target: IO[bytes]) -> None:
    with open(row.path, "rb") as src:
        shutil.copyfileobj(src, target, COPY_BLOCK)
