"""Per-tenant quotas, set by the operator: items and input tokens not yet finished, and jobs
not yet finished.

A submit over a limit stores nothing and says which limit, by how much and when to retry
(HTTP 429 with Retry-After). It is checked three times, each as early as it can be: before any
input is read (already at the limit), while the input streams (this job would go over), and
just before the commit, under a lock on the tenant's quota row, so that two submits racing
cannot both slip under the limit.

Tokens are counted with the job's model's own tokenizer, only for a tenant that has a token
limit; a job's queued tokens shrink in proportion to its unfinished items.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import JobStatus, RunStatus, TaskKind
from nightowl.common.errors import InvalidInput, NotFound, QuotaExceeded
from nightowl.common.items import item_texts
from nightowl.common.tokens import batch_counter
from nightowl.jobs.inputs import ParsedLine
from nightowl.platform.orm import Job, ModelVersion, Tenant, TenantQuota, TrainingRun
from nightowl.storage import usage as storage_usage
from nightowl.storage.cache import local_dir

# Work of this much is usually done within this many seconds; a hint, not a promise.
RETRY_AFTER_S = 30
UNFINISHED = (JobStatus.VALIDATING, JobStatus.QUEUED, JobStatus.IN_PROGRESS,
              JobStatus.FINALIZING, JobStatus.CANCELLING)
# A fine-tune holds a worker (a GPU) longer than most jobs: it counts as running work too.
UNFINISHED_RUNS = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING)
LIMITS = ("max_queued_items", "max_queued_tokens", "max_running_jobs", "max_stored_bytes")


@dataclass
class Usage:
    running_jobs: int  # unfinished jobs and fine-tunes: what max_running_jobs limits
    queued_items: int
    queued_tokens: int = 0
    stored_bytes: int = 0


@dataclass
class Admission:
    """What one submit may still add; None means no limit."""

    tenant_id: str | None
    items_left: int | None = None
    tokens_left: int | None = None


def usage(session: Session, tenant_id: str, *, exclude_job: str | None = None) -> Usage:
    left = (Job.total_items - Job.succeeded_items - Job.failed_items - Job.cancelled_items
            - Job.expired_items)
    # total_tokens counts the lines that passed submit; the ones refused there are failed
    # items from the start. (A line that fails in a worker later shrinks both sides, so the
    # estimate then runs a little high, never low.)
    tokens_left = Job.total_tokens * left / func.nullif(Job.total_items - Job.failed_items, 0)
    stmt = select(func.count(), func.coalesce(func.sum(left), 0),
                  func.coalesce(func.sum(tokens_left), 0)).where(
        Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED))
    if exclude_job is not None:
        stmt = stmt.where(Job.id != exclude_job)
    jobs, items, tokens = session.execute(stmt).one()
    runs = session.scalar(select(func.count()).select_from(TrainingRun).where(
        TrainingRun.tenant_id == tenant_id, TrainingRun.status.in_(UNFINISHED_RUNS))) or 0
    return Usage(running_jobs=int(jobs) + int(runs), queued_items=int(items),
                 queued_tokens=int(tokens or 0))


def admit(session: Session, tenant_id: str | None, *,
          exclude_job: str | None = None, unrecorded: int = 0) -> Admission:
    """Before any input is read: refuse a tenant already at a limit. `exclude_job` is the
    job being filled (a batch validated in the background), not counted against itself;
    `unrecorded` counts the tenant's direct requests running on the serving lane, which SQL
    only records once they are answered (each one job of one item)."""
    if tenant_id is None:  # the operator has no quota
        return Admission(None)
    quota = session.get(TenantQuota, tenant_id)
    if quota is None:
        return Admission(tenant_id)
    used = usage(session, tenant_id, exclude_job=exclude_job)
    used.running_jobs += unrecorded
    used.queued_items += unrecorded
    _check(session, quota, used, new_items=1, new_tokens=0)
    items_left = (None if quota.max_queued_items is None
                  else quota.max_queued_items - used.queued_items)
    tokens_left = (None if quota.max_queued_tokens is None
                   else quota.max_queued_tokens - used.queued_tokens)
    return Admission(tenant_id, items_left, tokens_left)


def rate_headers(session: Session, tenant_id: str | None) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for a tenant under a quota (none without one): queued
    items as its requests, queued input tokens as its tokens. A reset is when queued work
    usually drains (RETRY_AFTER_S), a hint as Retry-After is."""
    if tenant_id is None or not has_quota(session, tenant_id):
        return {}
    quota = session.get(TenantQuota, tenant_id)
    if quota is None or (quota.max_queued_items is None and quota.max_queued_tokens is None):
        return {}
    used = usage(session, tenant_id)
    out = {}
    for name, limit, queued in (("requests", quota.max_queued_items, used.queued_items),
                                ("tokens", quota.max_queued_tokens, used.queued_tokens)):
        if limit is not None:
            out[f"x-ratelimit-limit-{name}"] = str(limit)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - queued))
            out[f"x-ratelimit-reset-{name}"] = f"{RETRY_AFTER_S}s" if queued else "0s"
    return out


# tenant -> (when it was looked up, whether it has a quota row), for has_quota.
_has_quota: dict[str, tuple[float, bool]] = {}
QUOTA_KNOWN_S = 2.0


def has_quota(session: Session, tenant_id: str) -> bool:
    """Whether the tenant has a quota row, without reading SQL for one known (within
    QUOTA_KNOWN_S) to have none: most tenants, on every direct request. A quota the operator
    sets applies to direct requests within that time."""
    known = _has_quota.get(tenant_id)
    now = time.monotonic()
    if known is not None and now - known[0] < QUOTA_KNOWN_S and not known[1]:
        return False
    has = session.get(TenantQuota, tenant_id) is not None
    if len(_has_quota) > 100_000:
        _has_quota.clear()
    _has_quota[tenant_id] = (now, has)
    return has


def admit_direct(session: Session, tenant_id: str | None, *, unrecorded: int) -> None:
    """`admit` for a direct request on the serving lane, for a tenant that has a quota."""
    if tenant_id is not None and has_quota(session, tenant_id):
        admit(session, tenant_id, unrecorded=unrecorded)


def check_streaming(session: Session, admission: Admission, items_so_far: int, *,
                    more_may_follow: bool, tokens_so_far: int = 0) -> None:
    """While the input streams: stop reading as soon as this job cannot fit."""
    over_items = admission.items_left is not None and items_so_far > admission.items_left
    over_tokens = admission.tokens_left is not None and tokens_so_far > admission.tokens_left
    if not (over_items or over_tokens):
        return
    assert admission.tenant_id is not None
    quota = session.get(TenantQuota, admission.tenant_id)
    if quota is None:
        return
    if over_items and quota.max_queued_items is not None and admission.items_left is not None:
        already = quota.max_queued_items - admission.items_left
        raise _over_items(session, quota, already, items_so_far, at_least=more_may_follow)
    if quota.max_queued_tokens is not None and admission.tokens_left is not None:
        already = quota.max_queued_tokens - admission.tokens_left
        raise _over_tokens(session, quota, already, tokens_so_far, at_least=more_may_follow)


def confirm(session: Session, tenant_id: str | None, *, job_id: str, items: int,
            tokens: int = 0) -> None:
    """Just before the commit: the job fits, counting what other submits committed meanwhile."""
    if tenant_id is None:
        return
    # Two submits of one tenant queue here (PostgreSQL row lock; SQLite has one writer anyway).
    quota = session.scalars(
        select(TenantQuota).where(TenantQuota.tenant_id == tenant_id).with_for_update()
    ).first()
    if quota is not None:
        _check(session, quota, usage(session, tenant_id, exclude_job=job_id), new_items=items,
               new_tokens=tokens)


def admit_run(session: Session, tenant_id: str | None, *, data_bytes: int) -> None:
    """A fine-tune about to be stored: one more running piece of work, and its data's bytes.
    Under the quota row's lock, like confirm(), so racing submits cannot both slip under."""
    if tenant_id is None:
        return
    quota = session.scalars(
        select(TenantQuota).where(TenantQuota.tenant_id == tenant_id).with_for_update()
    ).first()
    if quota is None:
        return
    _check_running(session, quota, usage(session, tenant_id))
    storage_usage.check(session, tenant_id, data_bytes)


def _check_running(session: Session, quota: TenantQuota, used: Usage) -> None:
    if quota.max_running_jobs is not None and used.running_jobs + 1 > quota.max_running_jobs:
        name = _tenant_name(session, quota.tenant_id)
        raise QuotaExceeded(
            f"tenant {name} has {used.running_jobs} unfinished jobs and fine-tunes and its "
            f"max_running_jobs "
            f"quota is {quota.max_running_jobs}: one more would be over by "
            f"{used.running_jobs + 1 - quota.max_running_jobs}. Nothing was stored; retry when "
            f"one finishes, or ask the operator to raise it "
            f"(`nightowl quota set {name} --max-running-jobs N`)",
            limit="max_running_jobs", allowed=quota.max_running_jobs,
            would_be=used.running_jobs + 1, retry_after=RETRY_AFTER_S,
        )


def _check(session: Session, quota: TenantQuota, used: Usage, *, new_items: int,
           new_tokens: int) -> None:
    _check_running(session, quota, used)
    if quota.max_queued_items is not None and (
        used.queued_items + new_items > quota.max_queued_items
    ):
        raise _over_items(session, quota, used.queued_items, new_items, at_least=False)
    if quota.max_queued_tokens is not None and (
        used.queued_tokens + new_tokens > quota.max_queued_tokens
        # At the limit already, nothing more may queue, not even a job of no counted tokens.
        or used.queued_tokens >= quota.max_queued_tokens
    ):
        raise _over_tokens(session, quota, used.queued_tokens, max(new_tokens, 1),
                           at_least=new_tokens == 0)


def _over_items(session: Session, quota: TenantQuota, already: int, new: int, *,
                at_least: bool) -> QuotaExceeded:
    assert quota.max_queued_items is not None
    return _over(session, quota, "max_queued_items", quota.max_queued_items, "items", already,
                 new, at_least=at_least)


def _over_tokens(session: Session, quota: TenantQuota, already: int, new: int, *,
                 at_least: bool) -> QuotaExceeded:
    assert quota.max_queued_tokens is not None
    return _over(session, quota, "max_queued_tokens", quota.max_queued_tokens, "input tokens",
                 already, new, at_least=at_least)


def _over(session: Session, quota: TenantQuota, limit_name: str, limit: int, unit: str,
          already: int, new: int, *, at_least: bool) -> QuotaExceeded:
    name = _tenant_name(session, quota.tenant_id)
    this = f"at least {new:,}" if at_least else f"{new:,}"
    advice = (f"split it into jobs of at most {limit:,} {unit}" if new > limit
              else "retry when queued work has finished")
    return QuotaExceeded(
        f"tenant {name} has {already:,} {unit} queued and this job adds {this}: over its "
        f"{limit_name} quota of {limit:,} by {'at least ' if at_least else ''}"
        f"{already + new - limit:,}. Nothing was stored; {advice}, or ask the operator to "
        f"raise it (`nightowl quota set {name} --{limit_name.replace('_', '-')} N`)",
        limit=limit_name, allowed=limit, would_be=already + new, retry_after=RETRY_AFTER_S,
    )


def token_counter(version: ModelVersion, kind: TaskKind, settings: Settings
                  ) -> Callable[[Sequence[ParsedLine]], int]:
    """Counts the input tokens of a batch's valid lines with the model's own tokenizer (for a
    tenant with a token quota; fetched as a worker would when the model is in the store)."""
    count = batch_counter(local_dir(version.source, version.sha256, settings))
    if count is None:
        raise InvalidInput(
            f"model {version.ref} has no tokenizer.json, so its input tokens cannot be counted "
            "against this tenant's max_queued_tokens quota; use a model with a fast tokenizer, "
            "or ask the operator to lift the token limit (`nightowl quota set TENANT "
            "--max-queued-tokens none`)", param="model")
    field = kind.input_field

    def lines_tokens(lines: Sequence[ParsedLine]) -> int:
        return count([text for line in lines if line.error is None
                      for text in item_texts(line.input, field)])

    return lines_tokens


def _tenant_name(session: Session, tenant_id: str) -> str:
    return session.scalar(select(Tenant.name).where(Tenant.id == tenant_id)) or tenant_id


def find_tenant(session: Session, ref: str) -> Tenant:
    tenant = session.scalars(
        select(Tenant).where(or_(Tenant.name == ref, Tenant.id == ref))
    ).first()
    if tenant is None:
        raise NotFound(f"no tenant {ref!r}; tenants are created with `nightowl keys create "
                       "TENANT`, list them with `nightowl keys list`")
    return tenant


# A value for set_quota: a limit, None to leave it as it is, or UNLIMITED to remove it.
UNLIMITED = -1


def set_quota(session: Session, tenant_ref: str, *, max_queued_items: int | None = None,
              max_queued_tokens: int | None = None, max_running_jobs: int | None = None,
              max_stored_bytes: int | None = None,
              retention_seconds: int | None = None) -> TenantQuota:
    """Set the given limits; None leaves one as it is, UNLIMITED removes it. A retention of
    UNLIMITED follows the operator's NIGHTOWL_RETENTION again, retention.KEEP keeps results
    and files until deleted."""
    tenant = find_tenant(session, tenant_ref)
    quota = session.get(TenantQuota, tenant.id) or TenantQuota(tenant_id=tenant.id)
    for name, value in (("max_queued_items", max_queued_items),
                        ("max_queued_tokens", max_queued_tokens),
                        ("max_running_jobs", max_running_jobs),
                        ("max_stored_bytes", max_stored_bytes)):
        if value is None:
            continue
        if value != UNLIMITED and value < 1:
            raise InvalidInput(f"--{name.replace('_', '-')} must be at least 1, or 'none' to "
                               f"remove the limit; got {value}", param=name)
        setattr(quota, name, None if value == UNLIMITED else value)
    if retention_seconds is not None:
        if retention_seconds < UNLIMITED:
            raise InvalidInput(f"--retention must be a span, 'forever' or 'default'; got "
                               f"{retention_seconds}", param="retention")
        quota.retention_seconds = None if retention_seconds == UNLIMITED else retention_seconds
    session.add(quota)
    session.flush()
    return quota


def list_quotas(session: Session, tenant_ref: str | None = None
                ) -> list[tuple[Tenant, TenantQuota | None, Usage]]:
    """Tenants with their quota and usage: one tenant, or every tenant that has a quota."""
    if tenant_ref is not None:
        tenant = find_tenant(session, tenant_ref)
        pairs = [(tenant, session.get(TenantQuota, tenant.id))]
    else:
        pairs = [(t, q) for t, q in session.execute(
            select(Tenant, TenantQuota).join(TenantQuota, TenantQuota.tenant_id == Tenant.id)
            .order_by(Tenant.name)).tuples()]
    out = []
    for t, q in pairs:
        # Stored bytes are three sums: read for this listing, not at every admission (the
        # stored-bytes limit is checked by nightowl.storage.usage where bytes are added).
        used = usage(session, t.id)
        used.stored_bytes = storage_usage.stored_bytes(session, t.id)
        out.append((t, q, used))
    return out
