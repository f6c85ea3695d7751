"""The model registry: versions, aliases, and references like `name`, `name@prod`, `name@v3`."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.orm import Session

from nightowl.common.enums import TaskKind
from nightowl.common.errors import Conflict, InvalidInput, NotFound
from nightowl.platform.auth import LOCAL_TENANT
from nightowl.platform.orm import ModelAlias, ModelVersion, Tenant, utcnow

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_VERSION = re.compile(r"^v(\d+)$")
LATEST = "latest"


@dataclass(frozen=True)
class ModelRef:
    name: str
    selector: str | None  # None = latest version; "vN" = pinned; anything else = an alias

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, selector = text.strip().partition("@")
        if not _NAME.match(name):
            raise InvalidInput(
                f"model reference {text!r} is not NAME, NAME@ALIAS or NAME@vN "
                "(letters, digits, . _ - /)"
            )
        return cls(name=name, selector=selector or None)


def visible(tenant_id: str | None) -> ColumnElement[bool]:
    """Versions a tenant may see and run: its own and the shared ones. None is the operator's
    administrative view (every version), used by the local CLI's listings only."""
    if tenant_id is None:
        return true()
    return or_(ModelVersion.tenant_id.is_(None), ModelVersion.tenant_id == tenant_id)


def _operator(session: Session) -> str | None:
    """The operator's tenant id, if it exists yet: whom the tenant-less tools speak for."""
    return session.scalars(select(Tenant.id).where(Tenant.name == LOCAL_TENANT)).first()


def _alias_row(session: Session, name: str, alias: str, tenant_id: str | None
               ) -> ModelAlias | None:
    """The tenant's own alias, else the shared one: a tenant's `name@prod` shadows the shared
    `name@prod` for that tenant only."""
    owners = [tenant_id, None] if tenant_id is not None else [None]
    for owner in owners:
        owned = (ModelAlias.tenant_id.is_(None) if owner is None
                 else ModelAlias.tenant_id == owner)
        row = session.scalars(
            select(ModelAlias).where(ModelAlias.name == name, ModelAlias.alias == alias, owned)
        ).first()
        if row is not None:
            return row
    return None


def resolve(session: Session, ref: str, *, tenant_id: str | None = None) -> ModelVersion:
    """Pin a reference to one version now, so later alias moves do not change queued work.

    A tenant resolves among its own and shared versions; another tenant's model answers
    exactly like a missing one. Without a tenant (the operator's tools) `NAME` and aliases
    mean what they mean to the operator's tenant, and `NAME@vN` any version."""
    parsed = ModelRef.parse(ref)
    viewer = tenant_id if tenant_id is not None else _operator(session)
    version: ModelVersion | None
    if parsed.selector is None or parsed.selector == LATEST:
        latest_of = (visible(viewer) if viewer is not None
                     else ModelVersion.tenant_id.is_(None))
        version = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == parsed.name, latest_of)
            .order_by(ModelVersion.version.desc())
            .limit(1)
        ).first()
    elif m := _VERSION.match(parsed.selector):
        version = session.scalars(
            select(ModelVersion).where(
                ModelVersion.name == parsed.name, ModelVersion.version == int(m.group(1)),
                visible(tenant_id),
            # The operator sees every owner's vN: the shared one first.
            ).order_by(ModelVersion.tenant_id.is_not(None), ModelVersion.id)
        ).first()
    else:
        row = _alias_row(session, parsed.name, parsed.selector, viewer)
        version = session.get(ModelVersion, row.version_id) if row is not None else None
    if version is None:
        raise NotFound(_missing(session, parsed, ref, tenant_id))
    return version


# resolve_recent: (ref, tenant) -> (when it was resolved, the version, detached).
_recent: dict[tuple[str, str | None], tuple[float, ModelVersion]] = {}
_recent_lock = threading.Lock()
RECENT_S = 2.0


def resolve_recent(session: Session, ref: str, *, tenant_id: str | None = None) -> ModelVersion:
    """`resolve`, reusing an answer up to RECENT_S old: for the direct-request path, which
    would otherwise read the registry on every request. An alias moved meanwhile reaches
    direct requests within that time; queued work is pinned at submit as always. The version
    returned is detached (read-only, shared between callers)."""
    key = (ref, tenant_id)
    now = time.monotonic()
    with _recent_lock:
        found = _recent.get(key)
    if found is not None and now - found[0] < RECENT_S:
        return found[1]
    version = resolve(session, ref, tenant_id=tenant_id)
    session.expunge(version)
    with _recent_lock:
        if len(_recent) > 10_000:
            _recent.clear()
        _recent[key] = (now, version)
    return version


def _missing(session: Session, parsed: ModelRef, ref: str, tenant_id: str | None) -> str:
    """Say which part of the reference is wrong: the model, its version, or its alias."""
    versions = session.scalars(select(ModelVersion.version).where(
        ModelVersion.name == parsed.name, visible(tenant_id)).order_by(ModelVersion.version)).all()
    if not versions:
        known = ", ".join(list_names(session, tenant_id=tenant_id))
        if not known:
            return (f"unknown model {ref!r}: no models are registered yet; run `nightowl "
                    "models bootstrap` for the tiny offline ones, or `nightowl models add`")
        return (f"unknown model {ref!r} (known models: {known}); see `nightowl models "
                "list`, or register one with `nightowl models add`")
    if parsed.selector and _VERSION.match(parsed.selector):
        return (f"{parsed.name} has no version {parsed.selector} (it has "
                f"{', '.join(f'v{v}' for v in versions)}); see `nightowl models show "
                f"{parsed.name}`")
    owned = true() if tenant_id is None else or_(ModelAlias.tenant_id.is_(None),
                                                 ModelAlias.tenant_id == tenant_id)
    aliases = sorted(set(session.scalars(select(ModelAlias.alias).where(
        ModelAlias.name == parsed.name, owned))))
    have = ", ".join(f"@{a}" for a in aliases) or "none"
    return (f"{parsed.name} has no alias @{parsed.selector} (its aliases: {have}); use one of "
            f"those, a version like {parsed.name}@v{versions[-1]}, or set it with `nightowl "
            f"models promote {parsed.name}@v{versions[-1]} {parsed.selector}`")


def list_names(session: Session, *, tenant_id: str | None = None) -> list[str]:
    return list(session.scalars(select(ModelVersion.name).where(visible(tenant_id))
                                .distinct().order_by(ModelVersion.name)))


def check_name(session: Session, name: str, kind: TaskKind, *, tenant_id: str | None) -> None:
    """Whether `name` can take a new `kind` version in this owner's space; called at submit
    time too, so a fine-tune learns of a bad `register_as` before it trains, not after."""
    ModelRef.parse(name)
    if "@" in name:
        raise InvalidInput(f"model name {name!r} must not contain '@'", param="register_as")
    existing_kind = session.scalars(
        select(ModelVersion.kind).where(ModelVersion.name == name, visible(tenant_id)).limit(1)
    ).first()
    if existing_kind is not None and existing_kind != kind:
        raise Conflict(f"model {name!r} is a {existing_kind.value} model, not {kind.value}; "
                       "register this one under another name")


def register(
    session: Session,
    *,
    name: str,
    kind: TaskKind,
    source: str,
    tenant_id: str | None = None,
    revision: str | None = None,
    sha256: str | None = None,
    base_version_id: int | None = None,
    training_run_id: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """The next version of `name`, owned by `tenant_id` (None: shared, the operator's only).

    A tenant's versions are numbered after those it can see (its own and the shared ones), so
    `name@vN` names one row to it and the numbers never tell it that another tenant uses the
    name. A shared version goes after every owner's, so it collides with no tenant's numbers.
    Jobs pin and workers cache by the row's id, never by the number."""
    check_name(session, name, kind, tenant_id=tenant_id)
    same_name = select(func.max(ModelVersion.version)).where(ModelVersion.name == name)
    last = session.scalar(same_name if tenant_id is None else same_name.where(visible(tenant_id)))
    version = ModelVersion(
        tenant_id=tenant_id,
        name=name,
        version=(last or 0) + 1,
        kind=kind,
        source=source,
        revision=revision,
        sha256=sha256,
        base_version_id=base_version_id,
        training_run_id=training_run_id,
        metrics=metrics or {},
    )
    session.add(version)
    session.flush()
    return version


def check_alias(alias: str) -> str:
    """An alias a user may set: a name, never `latest` or a version (`v3`)."""
    if _VERSION.match(alias) or alias == LATEST or not _NAME.match(alias):
        raise InvalidInput(f"alias {alias!r} is reserved or malformed; use a word like 'prod'",
                           param="promote_to")
    return alias


def set_alias(session: Session, version: ModelVersion, alias: str, *,
              tenant_id: str | None = None) -> ModelAlias:
    """Point `tenant_id`'s alias (None: the shared one) at `version`.

    A tenant may point its own aliases at its own or shared versions; a shared alias only at a
    shared version, or it would hand every tenant a model they may not see."""
    check_alias(alias)
    if version.tenant_id is not None and version.tenant_id != tenant_id:
        raise InvalidInput(f"{version.ref} is not a shared model: only its owner can point an "
                           "alias at it")
    owned = (ModelAlias.tenant_id.is_(None) if tenant_id is None
             else ModelAlias.tenant_id == tenant_id)
    row = session.scalars(
        select(ModelAlias)
        .where(ModelAlias.name == version.name, ModelAlias.alias == alias, owned)
        .with_for_update()
    ).first()
    if row is None:
        row = ModelAlias(name=version.name, alias=alias, version_id=version.id,
                         tenant_id=tenant_id)
        session.add(row)
    else:
        row.version_id = version.id
        row.updated_at = utcnow()
    session.flush()
    return row


def alias_holder(session: Session, name: str, alias: str, *, tenant_id: str | None = None
                 ) -> ModelVersion | None:
    """The version `name@alias` means to this tenant (its own alias, else the shared one)."""
    viewer = tenant_id if tenant_id is not None else _operator(session)
    row = _alias_row(session, name, alias, viewer)
    return session.get(ModelVersion, row.version_id) if row is not None else None


def aliases_by_version(session: Session, *, tenant_id: str | None = None) -> dict[int, list[str]]:
    """Alias names by version id as this tenant sees them: its own, and the shared ones it has
    not shadowed. The operator's view (None) lists every alias, owners' ones marked."""
    rows = list(session.scalars(select(ModelAlias).order_by(ModelAlias.alias)))
    out: dict[int, list[str]] = {}
    if tenant_id is None:
        for a in rows:
            out.setdefault(a.version_id, []).append(a.alias)
        return out
    own = {(a.name, a.alias) for a in rows if a.tenant_id == tenant_id}
    for a in rows:
        if a.tenant_id == tenant_id or (a.tenant_id is None and (a.name, a.alias) not in own):
            out.setdefault(a.version_id, []).append(a.alias)
    return out


def list_versions(session: Session, name: str | None = None, *,
                  tenant_id: str | None = None) -> list[ModelVersion]:
    stmt = (select(ModelVersion).where(visible(tenant_id))
            .order_by(ModelVersion.name, ModelVersion.version))
    if name is not None:
        stmt = stmt.where(ModelVersion.name == name)
    return list(session.scalars(stmt))
