"""Tenants and API keys. A key is shown once; only its sha256 and a short prefix are stored."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from nightowl.common.errors import InvalidInput, NotFound, Unauthorized
from nightowl.platform.orm import ApiKey, DashboardSession, Tenant, new_id, utcnow

KEY_PREFIX = "nk-"
PREFIX_CHARS = 12
LOCAL_TENANT = "local"
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$")
# Recording every request's use would make each read a write (and SQLite serialises writers).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    # Keys are 256 random bits, so a plain digest is enough: nobody can brute-force the input.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    if not _TENANT_NAME.match(name):
        raise InvalidInput(
            f"tenant name {name!r} must be letters, digits and . _ @ - (at most 200 characters)"
        )
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).first()
    if tenant is None:
        tenant = Tenant(id=new_id("tenant"), name=name)
        session.add(tenant)
        session.flush()
    return tenant


SHARED_OWNER = "shared"


def owner_names(session: Session, tenant_ids: Iterable[str | None]) -> dict[str | None, str]:
    """How an owner is shown everywhere (CLI, API, dashboard): its tenant's name; shared rows
    (no tenant) as "shared"."""
    wanted = {t for t in tenant_ids if t is not None}
    names: dict[str | None, str] = {None: SHARED_OWNER}
    if wanted:
        names.update(session.execute(select(Tenant.id, Tenant.name)
                                     .where(Tenant.id.in_(wanted))).tuples().all())
    return names


def operator_tenant_id(session: Session) -> str:
    """The tenant the local CLI acts as: what it submits shows under the key `up` prints."""
    return get_or_create_tenant(session, LOCAL_TENANT).id


def create_key(session: Session, *, tenant_name: str, expires_at: datetime | None = None
               ) -> tuple[ApiKey, str]:
    """A new key for the tenant (created if missing). Returns the row and the plaintext key,
    which exists nowhere else: print it once."""
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput(f"expiry {expires_at.isoformat()} needs a UTC offset (…Z)")
        if expires_at <= utcnow():
            raise InvalidInput(f"expiry {expires_at.isoformat()} is in the past")
    tenant = get_or_create_tenant(session, tenant_name)
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), tenant_id=tenant.id, prefix=plaintext[:PREFIX_CHARS],
                 key_hash=hash_key(plaintext), expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate(session: Session, key: str | None) -> str:
    """The tenant id that owns this key; Unauthorized for a missing, unknown or revoked key."""
    if not key:
        raise Unauthorized(
            "no API key given; send `Authorization: Bearer KEY` "
            "(create a key with `nightowl keys create TENANT`)"
        )
    return _key_row(session, key).tenant_id


def _key_row(session: Session, key: str) -> ApiKey:
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
    now = utcnow()
    if row is None or not _usable(row, now):
        # Only the prefix, which `keys list` shows anyway: the key itself is never echoed.
        shown = key[:PREFIX_CHARS] + "..." if len(key) > PREFIX_CHARS else "***"
        raise Unauthorized(f"incorrect, revoked or expired API key {shown}; "
                           "check it, or create one with `nightowl keys create TENANT`")
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return row


def _usable(row: ApiKey, now: datetime) -> bool:
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


# -- dashboard sessions: the browser's cookie holds a random session id, never the key; only
# its sha256 is stored, and it lasts no longer than the key it was opened with. --------------

SESSION_LIFETIME = timedelta(hours=12)


def open_session(session: Session, key: str) -> str:
    """A new session id for a valid key (Unauthorized otherwise)."""
    row = _key_row(session, key)
    sid = secrets.token_urlsafe(32)
    session.add(DashboardSession(id_hash=hash_key(sid), key_id=row.id,
                                 expires_at=utcnow() + SESSION_LIFETIME))
    session.flush()
    return sid


def session_tenant(session: Session, sid: str) -> str:
    """The tenant of a live session whose key is still valid; Unauthorized otherwise."""
    now = utcnow()
    found = session.execute(
        select(DashboardSession, ApiKey).join(ApiKey, ApiKey.id == DashboardSession.key_id)
        .where(DashboardSession.id_hash == hash_key(sid))).first()
    if found is None or found[0].expires_at <= now or not _usable(found[1], now):
        raise Unauthorized("the dashboard session ended or its key was revoked; log in again")
    return found[1].tenant_id


def close_session(session: Session, sid: str) -> None:
    session.execute(delete(DashboardSession).where(DashboardSession.id_hash == hash_key(sid)))


def session_token(sid: str, purpose: str) -> str:
    """A form token bound to the session (logout's CSRF token): another site's page can make a
    browser post, but cannot know the session id it would need to compute this."""
    return hashlib.sha256(f"{purpose}:{sid}".encode()).hexdigest()[:32]


def list_keys(session: Session, *, tenant_name: str | None = None,
              include_revoked: bool = False) -> list[tuple[ApiKey, str]]:
    stmt = (select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
            .order_by(Tenant.name, ApiKey.created_at))
    if tenant_name is not None:
        stmt = stmt.where(Tenant.name == tenant_name)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return [(key, name) for key, name in session.execute(stmt).tuples()]


def revoke_key(session: Session, key_ref: str) -> ApiKey:
    """Revoke by key id (key_...) or by the prefix `keys list` shows."""
    rows = list(session.scalars(
        select(ApiKey).where(or_(ApiKey.id == key_ref, ApiKey.prefix == key_ref))
    ))
    if not rows:
        raise NotFound(f"no API key with id or prefix {key_ref!r}; see `nightowl keys list`")
    if len(rows) > 1:
        raise InvalidInput(f"prefix {key_ref!r} matches {len(rows)} keys; revoke by key id")
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


OPERATOR_KEY_FILE = "operator.key"


def operator_key(session: Session, home: Path) -> str:
    """The operator tenant's key for `nightowl up` to print: the same one every start.

    Only hashes live in the database, so the plaintext is kept in a 0600 file in the home;
    a revoked or expired key there is replaced by a new one."""
    from nightowl.common.private import private_dir, write_private

    path = home / OPERATOR_KEY_FILE
    try:
        known = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if known:
        try:
            if authenticate(session, known) == operator_tenant_id(session):
                return known
        except Unauthorized:
            pass
    plaintext = create_key(session, tenant_name=LOCAL_TENANT)[1]
    private_dir(home)
    write_private(path, (plaintext + "\n").encode("utf-8"))
    return plaintext
