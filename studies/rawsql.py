"""Hand-written SQL for the participant endpoints every trial calls (its page, video, watch reports, answer).

Those few statements run hundreds of times a second when a batch of HITs goes live, and the ORM compiles
each query anew (about a millisecond of Python per query on a small server, more than PostgreSQL takes to
run it). Here they are written once, for PostgreSQL and SQLite alike; services.py and selectors.py own what
they mean. Table and column names come from the models, so a rename cannot leave a statement behind.
"""
from __future__ import annotations

import datetime as dt
import uuid

from django.db import connection
from django.utils import timezone

from . import models


class Tables:
    """Quoted table names, read from the models once."""

    def __getattr__(self, name: str) -> str:
        model = getattr(models, name)
        quoted = connection.ops.quote_name(model._meta.db_table)
        setattr(self, name, quoted)
        return quoted


T = Tables()


def fetch_one(sql: str, params=()) -> tuple | None:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def fetch_all(sql: str, params=()) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def execute(sql: str, params=()) -> int:
    """Run a write; the number of rows it touched."""
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.rowcount


def uuid_param(value: uuid.UUID | str):
    """A UUID as this database stores it (PostgreSQL's uuid type; SQLite's 32 hex digits)."""
    value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    return value if connection.vendor == "postgresql" else value.hex


def uuid_value(raw) -> uuid.UUID | None:
    if raw is None or isinstance(raw, uuid.UUID):
        return raw
    return uuid.UUID(str(raw))


def time_param(value: dt.datetime):
    """An aware datetime as this database takes it (SQLite keeps UTC text, as the ORM writes it)."""
    return connection.ops.adapt_datetimefield_value(value)


def time_value(raw) -> dt.datetime | None:
    """A datetime column read back, always aware (SQLite hands back naive UTC, or text)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = dt.datetime.fromisoformat(raw)
    return raw if timezone.is_aware(raw) else raw.replace(tzinfo=dt.timezone.utc)


def greatest(a: str, b: str) -> str:
    """SQL for the larger of two values (GREATEST in PostgreSQL, the two-argument MAX in SQLite)."""
    return f"{'GREATEST' if connection.vendor == 'postgresql' else 'MAX'}({a}, {b})"
