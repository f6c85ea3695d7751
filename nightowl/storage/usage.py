"""A tenant's stored bytes, and its operator-set limit on them (tenant_quotas.max_stored_bytes).

What counts is what the platform keeps for the tenant: its files (uploads, batch output and
error files), the training and eval data each fine-tune wrote at submit, and the model
versions its runs registered. A write that would pass the limit is refused before it stores
anything, with the numbers (HTTP 429)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nightowl.common.errors import QuotaExceeded
from nightowl.platform.orm import File, ModelVersion, Tenant, TenantQuota, TrainingRun

# Deleting files frees room at once; a hint for a client's back-off, not a promise.
RETRY_AFTER_S = 60


def stored_bytes(session: Session, tenant_id: str) -> int:
    files = select(func.coalesce(func.sum(File.bytes), 0)).where(
        File.tenant_id == tenant_id, File.deleted_at.is_(None))
    runs = select(func.coalesce(func.sum(TrainingRun.data_bytes), 0)).where(
        TrainingRun.tenant_id == tenant_id)
    versions = select(func.coalesce(func.sum(ModelVersion.bytes), 0)).where(
        ModelVersion.tenant_id == tenant_id)
    return sum(int(session.scalar(q) or 0) for q in (files, runs, versions))


def _limited(session: Session, tenant_id: str | None) -> tuple[TenantQuota, int, int] | None:
    """(quota, limit, bytes stored) for a tenant under a stored-bytes limit; None without."""
    if tenant_id is None:
        return None
    quota = session.get(TenantQuota, tenant_id)
    if quota is None or quota.max_stored_bytes is None:
        return None
    return quota, quota.max_stored_bytes, stored_bytes(session, tenant_id)


def room(session: Session, tenant_id: str | None) -> int | None:
    """Bytes the tenant may still store (None: no limit); refuses one already at its limit."""
    if (limited := _limited(session, tenant_id)) is None:
        return None
    quota, limit, used = limited
    if used >= limit:
        raise over(session, quota, used, 1, at_least=True)
    return limit - used


def check(session: Session, tenant_id: str | None, adding: int) -> None:
    """Refuse `adding` more bytes for this tenant if they would pass its limit."""
    if (limited := _limited(session, tenant_id)) is None:
        return
    quota, limit, used = limited
    if used + adding > limit:
        raise over(session, quota, used, adding, at_least=False)


def over(session: Session, quota: TenantQuota, used: int, adding: int, *,
         at_least: bool) -> QuotaExceeded:
    assert quota.max_stored_bytes is not None
    limit = quota.max_stored_bytes
    name = session.scalar(select(Tenant.name).where(Tenant.id == quota.tenant_id)) \
        or quota.tenant_id
    this = f"at least {adding:,}" if at_least else f"{adding:,}"
    return QuotaExceeded(
        f"tenant {name} stores {used:,} bytes and this adds {this}: over its max_stored_bytes "
        f"quota of {limit:,} by {'at least ' if at_least else ''}{used + adding - limit:,}. "
        "Nothing was stored; delete files you no longer need (DELETE /v1/files/ID), or ask the "
        f"operator to raise it (`nightowl quota set {name} --max-stored-bytes N`)",
        limit="max_stored_bytes", allowed=limit, would_be=used + adding,
        retry_after=RETRY_AFTER_S)
