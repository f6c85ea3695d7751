"""Uploaded files: bytes on disk under `home/files`, a row in `files`, size-checked on the way."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import IO

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.common.errors import ArtifactError, InvalidInput, NotFound
from nightowl.common.private import private_dir, private_file
from nightowl.common.values import check_text
from nightowl.platform import retention
from nightowl.platform.orm import File, new_id, utcnow
from nightowl.platform.paging import keyset_page
from nightowl.storage import usage
from nightowl.storage.artifacts import get_store, is_store_uri, sha256_file

COPY_BLOCK = 1 << 20


def create_file(
    session: Session,
    settings: Settings,
    *,
    stream: IO[bytes],
    filename: str,
    purpose: str,
    tenant_id: str | None = None,
    expires_after: int | None = None,
) -> File:
    """Store an upload. `expires_after`: seconds from now until the maintenance pass deletes
    it (OpenAI's expires_after); else the tenant's or the operator's retention applies."""
    check_text("filename", filename)
    # OpenAI's form (file-...); ids of the older file_... form still name their files.
    file_id = new_id("file").replace("_", "-", 1)
    folder = private_dir(settings.home / "files")
    path = folder / file_id
    digest = hashlib.sha256()
    size = 0
    # The tenant's stored-bytes quota: refused at once when full, else as soon as it would be.
    left = usage.room(session, tenant_id)
    try:
        with private_file(path).open("wb") as out:
            while block := stream.read(COPY_BLOCK):
                size += len(block)
                if left is not None and size > left:
                    usage.check(session, tenant_id, size)
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
    stored = str(path)
    store = get_store(settings)
    if store.shared:
        # Other hosts (another API replica, beat, a worker) read it from the store; this host
        # keeps its copy, so reading it back here costs nothing.
        try:
            store.put_file(f"files/{file_id}", path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        stored = store.uri(f"files/{file_id}")
    usage.check(session, tenant_id, size)  # what other uploads stored meanwhile counts too
    now = utcnow()
    row = File(id=file_id, tenant_id=tenant_id, filename=filename, purpose=purpose, bytes=size,
               path=stored, sha256=digest.hexdigest(), created_at=now,
               expires_at=retention.expiry(
                   now, retention.resolve(session, settings, tenant_id, expires_after)))
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, file_id: str, *, tenant_id: str | None = None) -> File:
    row = session.get(File, file_id)
    # Past its expiry it is gone, though the pass that deletes its bytes may not have run yet.
    if row is None or row.deleted_at is not None or _expired(row) or (
        tenant_id is not None and row.tenant_id != tenant_id
    ):
        raise NotFound(f"no file {file_id!r}")
    return row


def list_files_page(session: Session, *, tenant_id: str | None, purpose: str | None = None,
                    after: str | None = None, limit: int = 100,
                    ascending: bool = False) -> tuple[list[File], bool]:
    """One page by keyset: `after` is the last id of the previous page. Returns (page, more)."""
    stmt = select(File).where(File.deleted_at.is_(None), _live())
    if tenant_id is not None:
        stmt = stmt.where(File.tenant_id == tenant_id)
    if purpose is not None:
        stmt = stmt.where(File.purpose == purpose)
    anchor = None
    if after is not None:
        try:
            anchor = get_file(session, after, tenant_id=tenant_id)
        except NotFound:
            raise InvalidInput(f"after={after!r} is not a file id of yours") from None
    return keyset_page(session, stmt, File.created_at, File.id, anchor, limit,
                       ascending=ascending)

def _expired(row: File) -> bool:
    return row.expires_at is not None and row.expires_at <= utcnow()


def _live() -> ColumnElement[bool]:
    return or_(File.expires_at.is_(None), File.expires_at > utcnow())


def delete_file(session: Session, file_id: str, *, tenant_id: str | None = None,
                settings: Settings | None = None) -> File:
    row = get_file(session, file_id, tenant_id=tenant_id)
    row.deleted_at = utcnow()
    # The row says "deleted" before the bytes go: a reader in between gets a 404, never a live
    # row whose bytes are missing.
    session.commit()
    remove_bytes(row.id, row.path, settings or get_settings())
    return row


def remove_bytes(file_id: str, path: str, settings: Settings) -> None:
    """A deleted file's bytes: from the artifact store and this host, or its local path."""
    if is_store_uri(path):
        get_store(settings).delete_prefix(f"files/{file_id}")
        (settings.home / "files" / file_id).unlink(missing_ok=True)
    else:
        Path(path).unlink(missing_ok=True)


def local_path(row: File, settings: Settings) -> Path:
    """A path on this host with the file's bytes: where it was written, or a copy fetched
    from the artifact store into the cache and checked against the row's sha256."""
    if not is_store_uri(row.path):
        if not os.path.isfile(row.path):
            # Deleted by a request that has not committed yet, or removed by hand.
            raise NotFound(f"no file {row.id!r}: its bytes are gone")
        return Path(row.path)
    own = settings.home / "files" / row.id
    if own.is_file() and own.stat().st_size == row.bytes:
        return own
    cached = settings.cache_path / "files" / row.sha256
    if cached.is_file() and cached.stat().st_size == row.bytes:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f"{row.sha256}.{uuid.uuid4().hex[:8]}.part")
    store = get_store(settings)
    try:
        store.get_file(store.key_of(row.path), tmp)
        if sha256_file(tmp) != row.sha256:
            raise ArtifactError(f"file {row.id} in the store does not match its sha256")
        tmp.replace(cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def copy_to(row: File, target: IO[bytes], settings: Settings | None = None) -> None:
    with open(local_path(row, settings or get_settings()), "rb") as src:
        shutil.copyfileobj(src, target, COPY_BLOCK)
