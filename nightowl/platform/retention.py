"""Retention policy: how long a finished job's results and an uploaded file are kept.

Three sources, the first given wins: what the request asked for (OpenAI's `expires_after` on a
file, `output_expires_after` on a batch), the tenant's own setting (tenant_quotas), the
operator's NIGHTOWL_RETENTION. The answer is fixed on the row when it is made, so a later
change of policy never takes away what a user was promised. The purge itself is
nightowl.fleet.retention.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.errors import InvalidInput
from nightowl.platform.orm import TenantQuota

# OpenAI's bounds on expires_after / output_expires_after seconds (1 hour to 30 days).
MIN_EXPIRES_AFTER = 3600
MAX_EXPIRES_AFTER = 30 * 86400
ANCHOR = "created_at"
# A tenant's retention_seconds of 0: keep until deleted, whatever the operator's default.
KEEP = 0


def policy_seconds(session: Session, settings: Settings, tenant_id: str | None) -> int | None:
    """The retention in force for this tenant now, in seconds; None keeps forever."""
    if tenant_id is not None:
        own = session.get(TenantQuota, tenant_id)
        if own is not None and own.retention_seconds is not None:
            return None if own.retention_seconds == KEEP else own.retention_seconds
    return settings.retention


def resolve(session: Session, settings: Settings, tenant_id: str | None,
            asked: int | None) -> int | None:
    """What a new job or file keeps: the request's own expiry, else the policy."""
    return asked if asked is not None else policy_seconds(session, settings, tenant_id)


def expiry(anchor: datetime, seconds: int | None) -> datetime | None:
    return None if seconds is None else anchor + timedelta(seconds=seconds)


def expires_after_seconds(value: Any, *, param: str) -> int | None:
    """The seconds of an OpenAI `{"anchor": "created_at", "seconds": N}`, checked; None if
    absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{param} must be an object {{\"anchor\": \"created_at\", "
                           "\"seconds\": N}", param=param)
    unknown = sorted(set(value) - {"anchor", "seconds"})
    if unknown:
        raise InvalidInput(f"{param} has unknown field(s) {', '.join(unknown)}; it takes anchor "
                           "and seconds", param=param)
    if value.get("anchor") != ANCHOR:
        raise InvalidInput(f"{param}.anchor must be 'created_at' (the only anchor), not "
                           f"{value.get('anchor')!r}", param=f"{param}.anchor")
    seconds = value.get("seconds")
    if isinstance(seconds, str) and seconds.strip().isdigit():
        seconds = int(seconds)  # multipart forms carry every field as text
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not (
            MIN_EXPIRES_AFTER <= seconds <= MAX_EXPIRES_AFTER):
        raise InvalidInput(f"{param}.seconds must be a whole number from {MIN_EXPIRES_AFTER} "
                           f"(1 hour) to {MAX_EXPIRES_AFTER} (30 days), not {seconds!r}",
                           param=f"{param}.seconds")
    return seconds
