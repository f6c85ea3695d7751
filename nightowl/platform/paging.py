"""Keyset pages over rows ordered by (created_at, id): what every OpenAI-style list with
`after` and `has_more` reads. The id breaks ties between rows made in the same instant."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")


class Keyed(Protocol):
    """The row a page starts after (the last one of the previous page)."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> str: ...


def keyset_page(session: Session, stmt: Select[T], created: InstrumentedAttribute[datetime],
                ident: InstrumentedAttribute[str], anchor: Keyed | None, limit: int, *,
                ascending: bool = False) -> tuple[list[T], bool]:
    """Up to `limit` of stmt's rows after `anchor`, newest first unless `ascending`; returns
    (page, whether more follow)."""
    if ascending:
        stmt = stmt.order_by(created, ident)
        if anchor is not None:
            stmt = stmt.where(or_(created > anchor.created_at,
                                  and_(created == anchor.created_at, ident > anchor.id)))
    else:
        stmt = stmt.order_by(created.desc(), ident.desc())
        if anchor is not None:
            stmt = stmt.where(or_(created < anchor.created_at,
                                  and_(created == anchor.created_at, ident < anchor.id)))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
