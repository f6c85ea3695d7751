"""Spans and points in time as people type them: "90s", "1w"; ISO, "12h" ago,
"yesterday 18:00", "today", "now". One grammar for every span nightowl reads."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, tzinfo

from nightowl.common.errors import InvalidInput

_SPAN = r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)"
_DURATION = re.compile(rf"^{_SPAN}$")
_AGO = re.compile(rf"^{_SPAN}(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SPAN_HELP = "90s, 30m, 12h, 2d or 1w"
_DAY_WORD = re.compile(r"^(today|yesterday)(?:[ T](\d{1,2}):(\d{2}))?$")
FOREVER_WORDS = ("", "forever", "never", "none")
KEEP_HELP = f"seconds or a span ({SPAN_HELP}), or 'forever'"
HELP = ("an ISO time (2025-01-31T18:00, 2025-01-31), a span ago (90s, 30m, 12h, 2d, 1w), "
        "'now', 'today', 'yesterday', or 'yesterday 18:00'")


def _span(number: str, unit: str, text: str) -> timedelta:
    try:
        return timedelta(seconds=float(number) * _UNITS[unit])
    except OverflowError:
        raise InvalidInput(f"{text!r} is longer than any duration nightowl takes") from None


def parse_span(text: str) -> timedelta:
    """A length of time: a number and a unit (s, m or min, h, d, w)."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise InvalidInput(f"{text!r} is not a duration like {SPAN_HELP}")
    return _span(m.group(1), m.group(2), text)


def local_tz() -> tzinfo:
    tz = datetime.now().astimezone().tzinfo
    return tz if tz is not None else UTC


def parse_when(text: str, *, now: datetime | None = None, tz: tzinfo | None = None) -> datetime:
    """An aware UTC datetime. Times without an offset, and the day words, are read in `tz`
    (the CLI passes the user's local zone; the API, whose caller may be anywhere, passes UTC)."""
    zone = tz or UTC
    current = (now or datetime.now(UTC)).astimezone(zone)
    spec = text.strip().lower()
    if spec == "now":
        return current.astimezone(UTC)
    if m := _AGO.match(spec):
        return (current - _span(m.group(1), m.group(2), text)).astimezone(UTC)
    if m := _DAY_WORD.match(spec):
        day = current.date() - timedelta(days=1 if m.group(1) == "yesterday" else 0)
        hour, minute = int(m.group(2) or 0), int(m.group(3) or 0)
        if hour > 23 or minute > 59:
            raise InvalidInput(f"time {text!r}: {hour:02d}:{minute:02d} is not a time of day")
        return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"time {text!r} is not understood; use {HELP}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def parse_keep(text: str | int | float, *, what: str) -> int | None:
    """How long to keep something, in whole seconds: a span in the one grammar above or bare
    seconds ("3600"); None for "forever". `what` names the setting or option in the error."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spec = str(text).strip().lower()
        if spec in FOREVER_WORDS:
            return None
        if re.fullmatch(r"\d+(?:\.\d+)?", spec):
            seconds = float(spec)
        elif _DURATION.match(spec):
            seconds = parse_span(spec).total_seconds()
        else:
            raise InvalidInput(f"{what} {text!r} is not understood; use {KEEP_HELP}")
    if seconds < 1:
        raise InvalidInput(f"{what} {text!r} must be at least one second, or 'forever'")
    return int(seconds)
