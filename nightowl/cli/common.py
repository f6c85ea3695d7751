"""Helpers shared by the command modules: settings, sessions, parsing of k=v and durations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nightowl.common.config import Settings, get_settings
from nightowl.common.errors import NightowlError
from nightowl.common.values import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN
from nightowl.platform import migrate
from nightowl.platform.db import session_scope


def settings() -> Settings:
    return get_settings()


@contextmanager
def db_session() -> Iterator[Session]:
    s = get_settings()
    try:
        migrate.ensure_schema(s)
        with session_scope(s) as session:
            yield session
    except NightowlError as e:
        raise click.ClickException(str(e)) from e
    except OperationalError as e:
        raise click.ClickException(
            f"cannot reach the database at {make_url(s.sqlalchemy_url).render_as_string()}: "
            f"{e.orig}; check NIGHTOWL_DATABASE_URL and that the server runs"
        ) from e


# `--priority` of jobs and fine-tunes. Its range is checked where every door's is (the request
# specs, nightowl.common.specs), so the CLI says what HTTP and a schedule say.
priority_option = click.option(
    "--priority", type=int, default=PRIORITY_DEFAULT, show_default=True,
    help=f"{PRIORITY_MIN} to {PRIORITY_MAX}; higher runs first, ahead of fair share between "
         "tenants and age.")


def parse_duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    from nightowl.common.timespec import parse_span

    try:
        return parse_span(text)
    except NightowlError as e:
        raise click.BadParameter(str(e)) from None


def parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, Any]:
    """k=v pairs; values are read as JSON when they parse (numbers, booleans), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{what} {pair!r} must look like key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


