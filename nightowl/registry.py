"""The model registry: versions, aliases, and references like `name`, `name@prod`, `name@v3`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.enums import TaskKind
from nightowl.errors import Conflict, InvalidInput, NotFound
from nightowl.models import ModelAlias, ModelVersion, utcnow

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


def resolve(session: Session, ref: str) -> ModelVersion:
    """Pin a reference to one version now, so later alias moves do not change queued work."""
    parsed = ModelRef.parse(ref)
    if parsed.selector is None or parsed.selector == LATEST:
        version = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == parsed.name)
            .order_by(ModelVersion.version.desc())
            .limit(1)
        ).first()
    elif m := _VERSION.match(parsed.selector):
        version = session.scalars(
            select(ModelVersion).where(
                ModelVersion.name == parsed.name, ModelVersion.version == int(m.group(1))
            )
        ).first()
    else:
        version = session.scalars(
            select(ModelVersion)
            .join(ModelAlias, ModelAlias.version_id == ModelVersion.id)
            .where(ModelAlias.name == parsed.name, ModelAlias.alias == parsed.selector)
        ).first()
    if version is None:
        raise NotFound(_missing(session, parsed, ref))
    return version


def _missing(session: Session, parsed: ModelRef, ref: str) -> str:
    """Say which part of the reference is wrong: the model, its version, or its alias."""
    versions = session.scalars(select(ModelVersion.version).where(
        ModelVersion.name == parsed.name).order_by(ModelVersion.version)).all()
    if not versions:
        known = ", ".join(list_names(session))
        if not known:
            return (f"unknown model {ref!r}: no models are registered yet; run `nightowl "
                    "models bootstrap` for the tiny offline ones, or `nightowl models add`")
        return (f"unknown model {ref!r} (known models: {known}); see `nightowl models "
                "list`, or register one with `nightowl models add`")
    if parsed.selector and _VERSION.match(parsed.selector):
        return (f"{parsed.name} has no version {parsed.selector} (it has "
                f"{', '.join(f'v{v}' for v in versions)}); see `nightowl models show "
                f"{parsed.name}`")
    aliases = session.scalars(select(ModelAlias.alias).where(
        ModelAlias.name == parsed.name).order_by(ModelAlias.alias)).all()
    have = ", ".join(f"@{a}" for a in aliases) or "none"
    return (f"{parsed.name} has no alias @{parsed.selector} (its aliases: {have}); use one of "
            f"those, a version like {parsed.name}@v{versions[-1]}, or set it with `nightowl "
            f"models promote {parsed.name}@v{versions[-1]} {parsed.selector}`")


def list_names(session: Session) -> list[str]:
    return list(session.scalars(select(ModelVersion.name).distinct().order_by(ModelVersion.name)))


def register(
    session: Session,
    *,
    name: str,
    kind: TaskKind,
    source: str,
    revision: str | None = None,
    sha256: str | None = None,
    base_version_id: int | None = None,
    training_run_id: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    ModelRef.parse(name)
    if "@" in name:
        raise InvalidInput(f"model name {name!r} must not contain '@'")
    existing_kind = session.scalars(
        select(ModelVersion.kind).where(ModelVersion.name == name).limit(1)
    ).first()
    if existing_kind is not None and existing_kind != kind:
        raise Conflict(f"model {name!r} is a {existing_kind.value} model, not {kind.value}")
    last = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
    version = ModelVersion(
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


def set_alias(session: Session, version: ModelVersion, alias: str) -> ModelAlias:
    if _VERSION.match(alias) or alias == LATEST or not _NAME.match(alias):
        raise InvalidInput(f"alias {alias!r} is reserved or malformed; use a word like 'prod'")
    row = session.scalars(
        select(ModelAlias)
        .where(ModelAlias.name == version.name, ModelAlias.alias == alias)
        .with_for_update()
    ).first()
    if row is None:
        row = ModelAlias(name=version.name, alias=alias, version_id=version.id)
        session.add(row)
    else:
        row.version_id = version.id
        row.updated_at = utcnow()
    session.flush()
    return row


def alias_holder(session: Session, name: str, alias: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion)
        .join(ModelAlias, ModelAlias.version_id == ModelVersion.id)
        .where(ModelAlias.name == name, ModelAlias.alias == alias)
    ).first()


def aliases_by_version(session: Session) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias in session.scalars(select(ModelAlias).order_by(ModelAlias.alias)):
        out.setdefault(alias.version_id, []).append(alias.alias)
    return out


def list_versions(session: Session, name: str | None = None) -> list[ModelVersion]:
    stmt = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
    if name is not None:
        stmt = stmt.where(ModelVersion.name == name)
    return list(session.scalars(stmt))
