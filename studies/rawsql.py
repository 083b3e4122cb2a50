"""Hand-written SQL for the participant endpoints every trial calls (its page, video, watch reports, answer).

Those few statements run hundreds of times a second when a batch of HITs goes live, and the ORM compiles
each query anew (about a millisecond of Python per query on a small server, more than PostgreSQL takes to
run it). Here they are written once, for PostgreSQL and SQLite alike; services.py and selectors.py own what
they mean. Table and column names come from the models, so a rename cannot leave a statement behind.

On PostgreSQL they bind their parameters server-side, so that psycopg prepares each of them once per
connection (settings.py: `prepare_threshold`) and PostgreSQL neither parses nor plans them again; through
Django's cursor wrapper all the same, so errors are Django's. Where queries are logged (DEBUG, a test that
counts them) they run on Django's own cursor instead, whose log shows each statement's text (psycopg keeps
no text for a prepared one).
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


def _cursor():
    """A cursor for one of these statements: Django's, or on PostgreSQL with prepared statements on (the
    connection has a `prepare_threshold`) and no query log, Django's wrapper around a server-side binding one."""
    options = connection.settings_dict.get("OPTIONS", {})
    if connection.vendor != "postgresql" or options.get("prepare_threshold") is None or connection.queries_logged:
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        return connection.make_cursor(ServerBindingCursor(connection.connection))


def fetch_one(sql: str, params=()) -> tuple | None:
    with _cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def fetch_all(sql: str, params=()) -> list[tuple]:
    with _cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def execute(sql: str, params=()) -> int:
    """Run a write; the number of rows it touched."""
    with _cursor() as cur:
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
