"""The database every store shares: the embedded SQLite file (WAL mode) or PostgreSQL, one schema
(`Base`) and one Alembic history (`batchvision/migrations`), migrated at start-up."""

from __future__ import annotations

import datetime as dt
import errno
import sqlite3
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase

from batchvision.core.settings import Settings

_SQLITE_BUSY_TIMEOUT_MS = 10_000

# What "the database's storage is full" looks like from each backend: SQLite's SQLITE_FULL
# ("database or disk is full"), PostgreSQL's SQLSTATE 53100 (disk_full), and the OS's own errno.
_PG_DISK_FULL = "53100"
_FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class Base(DeclarativeBase):
    """Every table of every store; changes need a revision in `batchvision/migrations/versions`."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_PG_MIGRATION_LOCK = 0x6276_6D69_6772  # any fixed bigint; "bvmigr"


def storage_is_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says the database ran out of disk space
    (SQLAlchemy wraps the driver's error in `orig`, and callers may wrap it again)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_full(current):
            return True
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and _is_full(orig):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    if isinstance(exc, OSError):
        return exc.errno in _FULL_DISK_ERRNOS
    return getattr(exc, "sqlstate", None) == _PG_DISK_FULL or getattr(exc, "pgcode", None) == (
        _PG_DISK_FULL
    )


def make_engine(settings: Settings) -> Engine:
    url = make_url(settings.resolved_database_url())
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, pool_size=8)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_database(settings: Settings) -> Engine:
    """The engine every store shares, its schema migrated to the newest revision."""
    engine = make_engine(settings)
    migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database)."""
    config = Config()
    location = resources.files("batchvision").joinpath("migrations")
    config.set_main_option("script_location", str(location))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Servers starting together on one database would otherwise race to create the
            # tables (one fails on a duplicate key); the lock makes the others wait, then no-op.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        elif connection.dialect.name == "sqlite":
            # The same race on one SQLite file (a server and its `batchvision worker`s started
            # together): pysqlite runs DDL outside any transaction, so two processes both saw
            # no tables. The write lock first: the others wait (busy_timeout), then no-op.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
