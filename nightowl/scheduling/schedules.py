"""Schedules as data: cron + timezone + a job or fine-tune template, fired exactly once per slot.

Beat (tasks/scheduler.py), `nightowl schedule run-now` and the API all fire through `fire`.
A firing is a `schedule_runs` row unique on (schedule_id, scheduled_for): the INSERT is the
lock, so when two beats see the same due slot the second gets an IntegrityError and skips.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nightowl.common.config import Settings
from nightowl.common.enums import Catchup, FiringStatus, ScheduleTarget
from nightowl.common.errors import Conflict, InvalidInput, NightowlError, NotFound
from nightowl.platform.orm import Job, Schedule, ScheduleRun, Tenant, TrainingRun, utcnow
from nightowl.scheduling import templates as schedule_specs
from nightowl.scheduling.cron import check_cron, check_min_interval, check_timezone, iter_slots
from nightowl.scheduling.views import FiringView, ScheduleView

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# catchup=none still fires a slot this late (beat polls every few seconds), not older ones.
MISFIRE_GRACE = timedelta(seconds=60)
# Missed slots are counted up to this many: a per-second cron left for a year is not walked.
MAX_COUNTED = 10_000
def next_fire(schedule: Schedule, after: datetime) -> datetime:
    return next(iter_slots(schedule.cron, check_timezone(schedule.timezone), after))


def latest_slot(schedule: Schedule, now: datetime) -> datetime:
    """The latest slot at or before `now` (slots fall on whole seconds)."""
    start = now.replace(microsecond=0) + timedelta(seconds=1)
    return next(iter_slots(schedule.cron, check_timezone(schedule.timezone), start,
                      backwards=True))


@dataclass
class Due:
    slots: list[datetime]
    missed: int = 0  # slots folded into this firing by catchup=once, or dropped by none
    advance_to: datetime | None = None  # move the anchor without firing (catchup=none)


def anchor(schedule: Schedule) -> datetime:
    """Slots after this instant are due; it moves on each firing, edit and resume."""
    return schedule.last_fired_for or schedule.created_at


def due_firings(schedule: Schedule, now: datetime, *, max_catchup: int = 10) -> Due:
    """The slots to fire now. catchup=all fires every missed slot, but at most `max_catchup`
    (the latest; settings.schedule_max_catchup): older ones are dropped and counted missed."""
    after = anchor(schedule)
    if not schedule.enabled or after >= now:
        return Due([])
    tz = check_timezone(schedule.timezone)
    if schedule.catchup == Catchup.ALL:
        recent: list[datetime] = []
        start = now.replace(microsecond=0) + timedelta(seconds=1)
        for slot in iter_slots(schedule.cron, tz, start, backwards=True):
            if slot <= after or len(recent) > max_catchup:
                break
            recent.append(slot)
        if len(recent) <= max_catchup:
            return Due(sorted(recent))
        keep = sorted(recent[:max_catchup])
        return Due(keep, missed=_slots_between(schedule.cron, tz, after, keep[0]))
    latest = latest_slot(schedule, now)
    if latest <= after:
        return Due([])
    missed = _slots_between(schedule.cron, tz, after, latest)
    if schedule.catchup == Catchup.NONE and now - latest > MISFIRE_GRACE:
        return Due([], missed=missed + 1, advance_to=latest)
    return Due([latest], missed=missed)


def _slots_between(cron: str, tz: ZoneInfo, after: datetime, until: datetime) -> int:
    """Slots after `after` and before `until`, counted up to MAX_COUNTED (a count, not a walk
    of years of per-second slots)."""
    count = 0
    for slot in iter_slots(cron, tz, after):
        if slot >= until or count >= MAX_COUNTED:
            break
        count += 1
    return count


# --- editing ----------------------------------------------------------------------------------

def get_schedule(session: Session, name: str, *, tenant_id: str | None = None) -> Schedule:
    """A tenant's schedule by name (names are per tenant). The operator (None) names any
    tenant's, as `TENANT/NAME` where two tenants use one name."""
    stmt = select(Schedule).where(Schedule.name == name)
    if tenant_id is not None:
        stmt = stmt.where(Schedule.tenant_id == tenant_id)
    rows = list(session.scalars(stmt.limit(2)))
    if tenant_id is None and not rows and "/" in name:
        owner, _, short = name.partition("/")
        rows = list(session.scalars(
            select(Schedule).join(Tenant, Tenant.id == Schedule.tenant_id)
            .where(Schedule.name == short, Tenant.name == owner)))
    if len(rows) > 1:
        raise InvalidInput(f"several tenants have a schedule named {name!r}; "
                           "name it as TENANT/NAME (see `nightowl schedule list`)")
    # Another tenant's schedule answers exactly like a missing one.
    if not rows:
        raise NotFound(f"no schedule {name!r}; see `nightowl schedule list`")
    return rows[0]


def list_schedules(session: Session, *, tenant_id: str | None = None) -> list[Schedule]:
    stmt = select(Schedule).order_by(Schedule.name)
    if tenant_id is not None:
        stmt = stmt.where(Schedule.tenant_id == tenant_id)
    return list(session.scalars(stmt))


def _check_catchup(catchup: str) -> str:
    try:
        return Catchup(catchup).value
    except ValueError:
        raise InvalidInput(f"catchup {catchup!r} must be one of "
                           f"{', '.join(c.value for c in Catchup)}", param="catchup") from None


def add_schedule(*, session: Session, settings: Settings, name: str, cron: str,
                 timezone: str = "UTC", target: str, spec: object,
                 catchup: str = Catchup.ONCE.value, enabled: bool = True,
                 tenant_id: str | None = None, allow_paths: bool = True) -> Schedule:
    if not _NAME.match(name):
        raise InvalidInput(f"schedule name {name!r} must be letters, digits and . _ - "
                           "(at most 200)", param="name")
    cron = check_cron(cron)
    check_min_interval(cron, check_timezone(timezone), settings.schedule_min_interval_seconds)
    clean = schedule_specs.validate(session, settings, target=target, spec=spec,
                                    tenant_id=tenant_id, allow_paths=allow_paths)
    taken = select(Schedule.id).where(
        Schedule.name == name,
        Schedule.tenant_id.is_(None) if tenant_id is None else Schedule.tenant_id == tenant_id)
    if session.scalars(taken).first() is not None:
        raise Conflict(f"a schedule named {name!r} exists; edit it or choose another name")
    now = utcnow()
    row = Schedule(name=name, cron=cron, timezone=timezone, target=target, spec=clean,
                   catchup=_check_catchup(catchup), enabled=enabled, tenant_id=tenant_id,
                   created_at=now, updated_at=now)
    session.add(row)
    try:
        session.commit()
    except IntegrityError as e:  # a concurrent add of the same name
        session.rollback()
        raise Conflict(f"a schedule named {name!r} exists") from e
    return row


def update_schedule(*, session: Session, settings: Settings, name: str,
                    tenant_id: str | None = None, cron: str | None = None,
                    timezone: str | None = None, target: str | None = None,
                    spec: object | None = None, catchup: str | None = None,
                    allow_paths: bool = True) -> Schedule:
    """Edit in place; beat sees it at its next poll. New timing counts from now, not before."""
    row = get_schedule(session, name, tenant_id=tenant_id)
    if cron is not None or timezone is not None:
        row.cron = check_cron(cron) if cron is not None else row.cron
        if timezone is not None:
            check_timezone(timezone)
            row.timezone = timezone
        check_min_interval(row.cron, check_timezone(row.timezone),
                           settings.schedule_min_interval_seconds)
        # Otherwise slots of the new cron between the last firing and now would look missed.
        row.last_fired_for = utcnow()
    if spec is not None or target is not None:
        row.spec = schedule_specs.validate(
            session, settings, target=target or row.target,
            spec=spec if spec is not None else row.spec, tenant_id=row.tenant_id,
            allow_paths=allow_paths)
        row.target = target or row.target
    if catchup is not None:
        row.catchup = _check_catchup(catchup)
    row.updated_at = utcnow()
    session.commit()
    return row


def set_enabled(session: Session, name: str, enabled: bool, *,
                tenant_id: str | None = None) -> Schedule:
    row = get_schedule(session, name, tenant_id=tenant_id)
    if enabled and not row.enabled:
        # A pause is a decision not to run: resuming does not fire what fell inside it.
        row.last_fired_for = utcnow()
    row.enabled = enabled
    row.updated_at = utcnow()
    session.commit()
    return row


def remove_schedule(session: Session, name: str, *, tenant_id: str | None = None) -> None:
    row = get_schedule(session, name, tenant_id=tenant_id)
    # The firings go with the schedule; their runs stay but let go of the ids, which SQLite
    # may hand out again (a late-finishing run must not write into a stranger's firing).
    session.execute(
        update(TrainingRun)
        .where(TrainingRun.schedule_run_id.in_(
            select(ScheduleRun.id).where(ScheduleRun.schedule_id == row.id)))
        .values(schedule_run_id=None)
        .execution_options(synchronize_session=False))
    session.delete(row)
    session.commit()


# --- firing -----------------------------------------------------------------------------------

def fire(*, session: Session, settings: Settings, schedule_id: int, scheduled_for: datetime,
         fired_by: str, missed: int = 0, advance: bool = True) -> ScheduleRun | None:
    """Claim the slot and submit the schedule's work; None when another process has the slot.

    With `advance` (beat) the claim also moves the schedule's anchor, in the same transaction,
    and only while the schedule is still enabled: a pause committed a moment ago wins.
    """
    firing = ScheduleRun(schedule_id=schedule_id, scheduled_for=scheduled_for,
                         fired_at=utcnow(), fired_by=fired_by, status=FiringStatus.FIRING.value,
                         outcome={"catchup": {"missed": missed}} if missed else {})
    session.add(firing)
    try:
        session.flush()
        if advance:
            moved = session.execute(
                update(Schedule)
                .where(Schedule.id == schedule_id, Schedule.enabled.is_(True),
                       or_(Schedule.last_fired_for.is_(None),
                           Schedule.last_fired_for < scheduled_for))
                .values(last_fired_for=scheduled_for, updated_at=Schedule.updated_at)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return None
        session.commit()
    except IntegrityError:
        session.rollback()
        log.info("slot %s of schedule %s was fired by another process; skipped",
                 scheduled_for.isoformat(), schedule_id)
        return None
    schedule = session.get(Schedule, schedule_id)
    assert schedule is not None
    session.refresh(schedule)
    try:
        done = schedule_specs.submit(session, settings, schedule, firing)
    except Exception as e:
        # Whatever failed, nothing half-written stays; the row says why for `schedule history`.
        session.rollback()
        if not isinstance(e, NightowlError):
            log.exception("schedule %s: firing %s failed", schedule.name, firing.id)
        _finish_firing(session, firing.id, FiringStatus.FAILED, {"error": str(e)[:4000]})
        return session.get(ScheduleRun, firing.id)
    _finish_firing(session, firing.id, done.status, done.outcome, job_id=done.job_id,
                   run_id=done.run_id)
    log.info("schedule %s fired for %s: %s %s", schedule.name, scheduled_for.isoformat(),
             done.status.value, done.run_id or done.job_id or "")
    return session.get(ScheduleRun, firing.id)


def _finish_firing(session: Session, firing_id: int, status: FiringStatus,
                   outcome: dict[str, Any], *, job_id: str | None = None,
                   run_id: str | None = None) -> None:
    firing = session.get(ScheduleRun, firing_id)
    assert firing is not None
    session.refresh(firing)
    firing.job_id, firing.training_run_id = job_id, run_id
    firing.outcome = {**(firing.outcome or {}), **outcome}
    # A fine-tune that failed within milliseconds may already have written its end state.
    if firing.status == FiringStatus.FIRING:
        firing.status = status.value
    session.commit()


def fire_due(*, session: Session, settings: Settings, now: datetime, fired_by: str
             ) -> list[ScheduleRun]:
    """One beat poll: fire every enabled schedule's due slots. One bad schedule skips alone."""
    fired: list[ScheduleRun] = []
    rows = list(session.scalars(select(Schedule).where(Schedule.enabled.is_(True))))
    session.commit()
    for schedule in rows:
        try:
            due = due_firings(schedule, now, max_catchup=settings.schedule_max_catchup)
            if due.advance_to is not None:
                session.execute(update(Schedule).where(
                    Schedule.id == schedule.id, Schedule.last_fired_for.is_(None)
                    | (Schedule.last_fired_for < due.advance_to))
                    .values(last_fired_for=due.advance_to, updated_at=Schedule.updated_at))
                session.commit()
                log.warning("schedule %s: %d missed slot(s) dropped (catchup=none)",
                            schedule.name, due.missed)
            for slot in due.slots:
                row = fire(session=session, settings=settings, schedule_id=schedule.id,
                           scheduled_for=slot, fired_by=fired_by, missed=due.missed)
                if row is not None:
                    fired.append(row)
        except Exception:
            session.rollback()
            log.exception("schedule %s could not be fired", schedule.name)
    return fired


def run_now(*, session: Session, settings: Settings, name: str, fired_by: str,
            tenant_id: str | None = None) -> ScheduleRun:
    schedule = get_schedule(session, name, tenant_id=tenant_id)
    # Microseconds keep a manual firing off the cron grid, so it never takes a real slot.
    row = fire(session=session, settings=settings, schedule_id=schedule.id,
               scheduled_for=utcnow(), fired_by=fired_by, advance=False)
    if row is None:
        raise Conflict(f"schedule {name!r} was fired this very instant; try again")
    return row


def next_wakeup(session: Session, now: datetime) -> datetime | None:
    """The earliest future slot of any enabled schedule (beat sleeps until then at most)."""
    soonest: datetime | None = None
    for schedule in session.scalars(select(Schedule).where(Schedule.enabled.is_(True))):
        try:
            slot = next_fire(schedule, now)
        except Exception:  # a row edited by hand into nonsense must not stop the others
            continue
        soonest = slot if soonest is None or slot < soonest else soonest
    return soonest


# --- reading ----------------------------------------------------------------------------------

def history(session: Session, name: str, *, tenant_id: str | None = None,
            limit: int = 50) -> list[FiringView]:
    """Each firing, newest first, with what it created, how that ended and the gate's verdict."""
    schedule = get_schedule(session, name, tenant_id=tenant_id)
    rows = session.execute(
        select(ScheduleRun, Job, TrainingRun)
        .outerjoin(Job, Job.id == ScheduleRun.job_id)
        .outerjoin(TrainingRun, TrainingRun.id == ScheduleRun.training_run_id)
        .where(ScheduleRun.schedule_id == schedule.id)
        .order_by(ScheduleRun.scheduled_for.desc(), ScheduleRun.id.desc())
        .limit(limit)
    ).tuples().all()
    return [firing_view(f, job, run) for f, job, run in rows]


def firing_view(firing: ScheduleRun, job: Job | None = None,
                run: TrainingRun | None = None) -> FiringView:
    outcome = firing.outcome or {}
    view = FiringView(
        id=firing.id, scheduled_for=firing.scheduled_for.isoformat(),
        fired_at=firing.fired_at.isoformat(), fired_by=firing.fired_by,
        status=FiringStatus(firing.status), job_id=firing.job_id,
        training_run_id=firing.training_run_id, outcome=outcome,
        run_status=None, promotion=None, version=outcome.get("version"),
    )
    if job is not None:
        view.run_status = job.status.value
        view.outcome = {**outcome, "succeeded_items": job.succeeded_items,
                        "failed_items": job.failed_items}
    if run is not None:
        view.run_status = run.status.value
        view.promotion = run.promotion
    return view


def last_firing(session: Session, schedule_id: int) -> ScheduleRun | None:
    return session.scalars(
        select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id)
        .order_by(ScheduleRun.fired_at.desc()).limit(1)).first()


def describe(session: Session, schedule: Schedule, now: datetime) -> ScheduleView:
    last = last_firing(session, schedule.id)
    return ScheduleView(
        name=schedule.name, cron=schedule.cron, timezone=schedule.timezone,
        target=ScheduleTarget(schedule.target), spec=schedule.spec, enabled=schedule.enabled,
        catchup=Catchup(schedule.catchup),
        next_fire=next_fire(schedule, now).isoformat() if schedule.enabled else None,
        # The slot of the last real firing; the anchor below also moves on edit and resume,
        # so reporting it as a firing would name a time nothing fired for.
        last_fired_for=last.scheduled_for.isoformat() if last else None,
        slots_due_after=anchor(schedule).isoformat(),
        last_firing=firing_view(last) if last else None,
        created_at=schedule.created_at.isoformat(),
        updated_at=schedule.updated_at.isoformat(),
    )
