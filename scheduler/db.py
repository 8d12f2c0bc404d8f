"""Database engine, sessions and schema migrations (Alembic).

SQLite (WAL, one writer) is the embedded default; PostgreSQL is the production database.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")
PING_AFTER_IDLE_S = 1.0  # see make_engine


class Base(DeclarativeBase):
    """Declarative base of every table; models live in scheduler/models.py."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            # pysqlite's own BEGIN handling is switched off so that "begin" below decides:
            # a write that checks capacity must start with BEGIN IMMEDIATE, taking the
            # single writer lock before it reads (see scheduler/booking/transactions.py).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection) -> None:  # type: ignore[no-untyped-def]
            mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    # Booking decisions hold a connection while they wait for a row lock: allow enough
    # connections that concurrent API requests queue on the lock, not on the pool.
    engine = create_engine(url, pool_size=10, max_overflow=40)

    # A connection that sat idle may have died (a database restart, a firewall's timeout):
    # it is pinged when checked out after PING_AFTER_IDLE_S and replaced if dead. Not on
    # every checkout as pool_pre_ping does: that is a round trip per transaction, a fifth
    # of a busy booking decision's time (bench/booking.py), to check a connection used a
    # moment ago.
    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get("checked_in_at", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("an idle connection is gone") from exc  # pool retries

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "connect")
    def _utc_session(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Instants read as timestamptz (scheduler/booking/bookings.py) come back in UTC.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()

    return engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(url), revision)


class Database:
    """One engine and its session factory, shared by the process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer; threads of this process queue here rather than in
        # SQLite's busy handler, which polls with growing sleeps (seconds of tail latency).
        self._sqlite_writer = threading.Lock()
        self._writing = threading.local()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        On SQLite it is a writer (see :meth:`write_session`) unless it is a
        :meth:`read_session`: a transaction that reads and then writes must hold the
        single writer lock from its start, or it fails with "database is locked" when
        another write commits in between (a sign-in that checks a password, then records
        the session, while the node's lease is renewed).
        """
        if self.engine.dialect.name == "sqlite":
            with self.write_session() as session:
                yield session
            return
        with self.sessionmaker() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A transaction that only reads; on SQLite it runs beside the writer (WAL) and
        a write in it fails ("attempt to write a readonly database")."""
        if self.engine.dialect.name != "sqlite":
            with self.session() as session:
                yield session
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA query_only=1")
            try:
                with Session(bind=connection, expire_on_commit=False) as session, \
                        session.begin():
                    yield session
            finally:
                connection.exec_driver_sql("PRAGMA query_only=0")

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session that writes: a read-check-write decision, or any change.

        SQLite: BEGIN IMMEDIATE takes the database's single writer lock up front. (A
        transaction that began as a reader and then writes fails with "database is
        locked" if another write committed in between, so every writer starts as one.)
        PostgreSQL: an ordinary transaction; the caller locks the rows it decides on
        (scheduler/booking/transactions.py).
        """
        if self.engine.dialect.name != "sqlite":
            with self.sessionmaker() as session, session.begin():
                yield session
            return
        if getattr(self._writing, "active", False):
            # The lock is not reentrant, and SQLite would make the inner writer wait on
            # the outer one for busy_timeout: a nested writer is a bug, said at once.
            raise RuntimeError("a database write session inside another on one thread")
        with self._sqlite_writer:
            self._writing.active = True
            try:
                with self.engine.connect().execution_options(sqlite_begin="IMMEDIATE") \
                        as connection, \
                        Session(bind=connection, expire_on_commit=False) as session, \
                        session.begin():
                    yield session
            finally:
                self._writing.active = False

    def dispose(self) -> None:
        self.engine.dispose()


class PerEngine(Generic[T]):
    """One ``make()`` per database engine, shared by the process's threads and made on
    first use; it goes with the engine (what a process keeps in memory of a database)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[Engine, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, session: Session) -> T:
        """The one for the database ``session`` works on."""
        # get_bind() is a Connection for SQLite's write session, else the Engine itself.
        engine = session.get_bind().engine
        with self._lock:
            made = self._made.get(engine)
            if made is None:
                made = self._made[engine] = self._make()
            return made
