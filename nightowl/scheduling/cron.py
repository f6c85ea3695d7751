"""Cron in a timezone: validation with clear messages, and slot iteration that survives DST.

Five fields, or six with seconds first (Quartz/Spring style), or @daily-style aliases. Slots are
computed on the wall clock of the schedule's zone and handed out as UTC instants.
"""

from __future__ import annotations

import difflib
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime

from croniter import CroniterError, croniter

from nightowl.common.errors import InvalidInput

CRON_HELP = ("5 fields 'minute hour day-of-month month day-of-week' (e.g. '0 2 * * *'), "
             "6 with seconds first ('*/10 * * * * *'), or @daily/@hourly")


def check_cron(expr: str) -> str:
    expr = " ".join(expr.split())
    fields = expr.split(" ")
    if not expr or (not expr.startswith("@") and len(fields) not in (5, 6)):
        raise InvalidInput(f"cron {expr!r} has {len(fields)} fields; use {CRON_HELP}",
                           param="cron")
    try:
        # get_next too: a cron like Feb 30 parses but never fires.
        croniter(expr, datetime.now(UTC), second_at_beginning=True).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as e:
        raise InvalidInput(f"cron {expr!r} is not valid ({e}); use {CRON_HELP}",
                           param="cron") from e
    return expr


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, zoneinfo.available_timezones(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidInput(f"unknown timezone {name!r}: use an IANA name such as "
                           f"Europe/Berlin or UTC{hint}", param="timezone") from None


def _fixed_hour(expr: str) -> bool:
    """Whether the cron names wall-clock hours (so a repeated DST hour must not fire twice)."""
    if expr.startswith("@"):
        return expr not in ("@hourly", "@reboot")
    fields = expr.split(" ")
    hour = fields[1] if len(fields) == 5 else fields[2]
    return not hour.startswith("*")


def iter_slots(expr: str, tz: zoneinfo.ZoneInfo, start: datetime, *, backwards: bool = False
          ) -> Iterator[datetime]:
    """Slots strictly after (or before) `start`, as UTC instants."""
    it = croniter(expr, start.astimezone(tz), second_at_beginning=True)
    fixed = _fixed_hour(expr)
    last = start
    while True:
        slot: datetime = it.get_prev(datetime) if backwards else it.get_next(datetime)
        if fixed:
            # When clocks go back 02:30 happens twice; a nightly job runs at the first one only,
            # so the wall time is pinned to its first occurrence (croniter's fold is unreliable).
            slot = slot.replace(tzinfo=None).replace(tzinfo=tz, fold=0)
        instant = slot.astimezone(UTC)
        if (instant >= last) if backwards else (instant <= last):
            continue
        last = instant
        yield instant


# Slots sampled to find a cron's shortest period: enough to see every gap of a daily pattern.
_GAP_SAMPLE = 200


def check_min_interval(expr: str, tz: zoneinfo.ZoneInfo, minimum: int) -> None:
    """Refuse a cron whose slots come closer than `minimum` seconds (the operator's floor)."""
    if minimum <= 0:
        return
    slots = iter_slots(expr, tz, datetime.now(UTC))
    previous = next(slots)
    for _, slot in zip(range(_GAP_SAMPLE), slots, strict=False):
        gap = (slot - previous).total_seconds()
        if gap < minimum:
            raise InvalidInput(
                f"cron {expr!r} fires {gap:g} s apart; schedules may fire at most every "
                f"{minimum} s (NIGHTOWL_SCHEDULE_MIN_INTERVAL_SECONDS, set by the operator)",
                param="cron")
        previous = slot
