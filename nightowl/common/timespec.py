"""Points in time as people type them: ISO, "12h" ago, "yesterday 18:00", "today", "now"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, tzinfo

from nightowl.common.errors import InvalidInput

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DAY_WORD = re.compile(r"^(today|yesterday)(?:[ T](\d{1,2}):(\d{2}))?$")
FOREVER_WORDS = ("", "forever", "never", "none")
SPAN_HELP = "a span such as 3600, 90s, 30m, 12h, 30d, 1w, or 'forever'"
HELP = ("an ISO time (2025-01-31T18:00, 2025-01-31), a span ago (90s, 30m, 12h, 2d, 1w), "
        "'now', 'today', 'yesterday', or 'yesterday 18:00'")


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
        return (current - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])).astimezone(UTC)
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


def parse_span(text: str | int | float, *, what: str) -> int | None:
    """Whole seconds from "3600", "90s", "30m", "12h", "30d" or "1w"; None for "forever".
    `what` names the setting or option in the error."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spec = str(text).strip().lower()
        if spec in FOREVER_WORDS:
            return None
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?", spec)
        if m is None:
            raise InvalidInput(f"{what} {text!r} is not understood; use {SPAN_HELP}")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 1:
        raise InvalidInput(f"{what} {text!r} must be at least one second, or 'forever'")
    return int(seconds)
