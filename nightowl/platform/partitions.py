"""PostgreSQL: job_items partitioned by range of job_id, which is by time.

Job ids are `prefix_t<12 hex ms><random>` (orm.new_job_id), so within one prefix they sort by
creation time, and the result upsert's key (job_id, custom_id) holds the partition key as
PostgreSQL requires. Each prefix gets one partition per NIGHTOWL_PARTITION_SECONDS window,
made ahead of time by the maintenance pass; ids of the older all-hex form live in one legacy
partition per prefix (`prefix_` to `prefix_t`), anything else in the default partition.

A purge drops a window's partition once every job in the window has expired
(nightowl.fleet.retention): no million-row DELETE, no bloat. SQLite keeps one plain table.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from nightowl.common.enums import JobOrigin
from nightowl.platform.orm import TIME_MARK

TABLE = "job_items"
DEFAULT = "job_items_default"
# One run of windows per job id prefix (plain jobs, direct OpenAI requests, OpenAI batches).
PREFIXES = tuple(origin.id_prefix for origin in JobOrigin)
# Windows made ahead of now, so a job is never created before its partition.
AHEAD_WINDOWS = 2
# Any fixed 64-bit number: serialises partition DDL across processes (a transaction lock,
# which PgBouncer's transaction pooling keeps).
DDL_LOCK = 0x6E6F776C_70617274
_BOUND = re.compile(r"FROM \('([a-z]+)_" + TIME_MARK + r"([0-9a-f]{12})'\) TO \('\1_"
                    + TIME_MARK + r"([0-9a-f]{12})'\)")


@dataclass(frozen=True)
class Window:
    name: str
    prefix: str
    lo_ms: int
    hi_ms: int

    @property
    def lo(self) -> str:
        return bound(self.prefix, self.lo_ms)

    @property
    def hi(self) -> str:
        return bound(self.prefix, self.hi_ms)


def bound(prefix: str, ms: int) -> str:
    return f"{prefix}_{TIME_MARK}{ms:012x}"


def window_name(prefix: str, lo_ms: int) -> str:
    return f"{TABLE}_{prefix}_{lo_ms:012x}"


def now_ms() -> int:
    return int(time.time() * 1000)


def is_partitioned(session: Session) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return False
    return bool(session.scalar(text(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = :t AND c.relnamespace = to_regnamespace(current_schema())"),
        {"t": TABLE}))


def windows(session: Session) -> list[Window]:
    """The time-window partitions, oldest first."""
    rows = session.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass)"),
        {"t": TABLE}).all()
    out = []
    for name, spec in rows:
        m = _BOUND.search(spec or "")
        if m:
            out.append(Window(name, m.group(1), int(m.group(2), 16), int(m.group(3), 16)))
    return sorted(out, key=lambda w: (w.lo_ms, w.prefix))


def ensure(session: Session, *, window_seconds: int, at_ms: int | None = None) -> list[str]:
    """Make every window from now to AHEAD_WINDOWS ahead that is missing; their names. A new
    window ends at the next multiple of the window length or where an existing one begins, so a
    changed length, or a window some host made early, never overlaps."""
    if not is_partitioned(session):
        return []
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DDL_LOCK})
    step = window_seconds * 1000
    at = now_ms() if at_ms is None else at_ms
    horizon = at + AHEAD_WINDOWS * step
    existing = windows(session)
    made = []
    for prefix in PREFIXES:
        mine = [(w.lo_ms, w.hi_ms) for w in existing if w.prefix == prefix]
        cursor = at - at % step
        while cursor < horizon:
            covering = next((hi for lo, hi in mine if lo <= cursor < hi), None)
            if covering is not None:
                cursor = covering
                continue
            hi = min([cursor - cursor % step + step, *(lo for lo, _ in mine if lo > cursor)])
            made.append(_create(session, prefix, cursor, hi))
            cursor = hi
    session.commit()
    return made


def create_window(session: Session, prefix: str, lo_ms: int, hi_ms: int) -> str:
    """One window's partition, [lo_ms, hi_ms) of `prefix`'s ids; its name."""
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DDL_LOCK})
    return _create(session, prefix, lo_ms, hi_ms)


def _create(session: Session, prefix: str, lo_ms: int, hi_ms: int) -> str:
    name, lo, hi = window_name(prefix, lo_ms), bound(prefix, lo_ms), bound(prefix, hi_ms)
    strays = session.scalar(text(
        f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE job_id >= :lo AND job_id < :hi)"),
        {"lo": lo, "hi": hi})
    if not strays:
        session.execute(text(
            f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM ('{lo}') TO ('{hi}')"))
        return name
    # Items of jobs made while no window was ready (no maintenance pass ran for a while) went
    # to the default partition; they move into their window as it is made.
    session.execute(text(
        f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    session.execute(text(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE job_id >= :lo AND job_id < :hi "
        f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"), {"lo": lo, "hi": hi})
    session.execute(text(
        f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"))
    return name


def drop(session: Session, window: Window) -> None:
    """Drop one window's partition (the caller has checked that all its jobs expired)."""
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DDL_LOCK})
    # Dropping a partition locks job_items itself: while it waits, every claim and commit
    # queues behind it, so the wait is short and the next pass tries again.
    session.execute(text("SET LOCAL lock_timeout = '2s'"))
    session.execute(text(f"DROP TABLE IF EXISTS {window.name}"))


def table_bytes(session: Session) -> int:
    """Bytes job_items takes on disk, every partition and index included."""
    if session.get_bind().dialect.name != "postgresql":
        return 0
    return int(session.scalar(text(
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "WHERE c.oid = CAST(:t AS regclass) OR c.oid IN ("
        "  SELECT inhrelid FROM pg_inherits WHERE inhparent = CAST(:t AS regclass))"),
        {"t": TABLE}) or 0)


def not_a_partition(obj: object, name: str | None, type_: str, reflected: bool,
                    compare_to: object) -> bool:
    """Alembic's include_object: job_items' partitions are storage, not part of the model."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return not (reflected and compare_to is None and str(table).startswith(f"{TABLE}_"))
