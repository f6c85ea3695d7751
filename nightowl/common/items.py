"""What became of one item: the one shape from the engine to the result commit.

Torch-free and SQL-free, so the worker's engine builds these rows and the core commits them as
they are (nightowl.jobs.chunks.complete). The row of an item stopped before it ran is defined here
once, for a worker that saw the stop and for the chunks nobody had claimed yet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nightowl.common.enums import ErrorCode, ItemStatus

# How a job can stop its items before they run: the item status and its error.
STOPS: dict[ItemStatus, tuple[ErrorCode, str]] = {
    ItemStatus.CANCELLED: (ErrorCode.CANCELLED, "job cancelled before this item ran"),
    ItemStatus.EXPIRED: (ErrorCode.EXPIRED, "job deadline passed before this item ran"),
}


@dataclass
class ItemOutcome:
    key: int
    status: ItemStatus
    output: dict[str, Any] | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def succeeded(cls, key: int, output: dict[str, Any], tokens_in: int, tokens_out: int, *,
                  started_at: datetime | None = None, finished_at: datetime | None = None
                  ) -> ItemOutcome:
        return cls(key, ItemStatus.SUCCEEDED, output=output, tokens_in=tokens_in,
                   tokens_out=tokens_out, started_at=started_at, finished_at=finished_at)

    @classmethod
    def failed(cls, key: int, code: ErrorCode, message: str, *, tokens_in: int = 0,
               started_at: datetime | None = None, finished_at: datetime | None = None
               ) -> ItemOutcome:
        return cls(key, ItemStatus.FAILED, error_code=code, error_message=message,
                   tokens_in=tokens_in, tokens_out=0, started_at=started_at,
                   finished_at=finished_at)

    @classmethod
    def stopped(cls, key: int, status: ItemStatus) -> ItemOutcome:
        """The row of an item a cancel or a passed deadline stopped before it ran."""
        code, message = STOPS[status]
        return cls(key, status, error_code=code, error_message=message)


def utcnow() -> datetime:
    return datetime.now(UTC)


# An item's input may hold several texts under this key instead of one under its kind's
# input field (an embeddings batch line whose `input` is a list): the worker runs each text and
# the item's output lists one result per text, in order (`embeddings` for the embed kind).
TEXTS = "texts"


def item_texts(data: dict[str, Any], field: str) -> list[str]:
    """The texts an item's input holds: its `texts`, or its one text under `field` ([] if it
    holds none, as a line refused at submit does)."""
    several = data.get(TEXTS)
    if isinstance(several, list):
        return [t for t in several if isinstance(t, str)]
    one = data.get(field)
    return [one] if isinstance(one, str) else []
