"""The one transaction in which a capacity decision is read, checked and written.

PostgreSQL: the decision takes the pool row FOR SHARE (capacity changes take it FOR
UPDATE) and every UTC day its occurrences touch FOR UPDATE, in day order. Two bookings
can only compete if they overlap in time, and then they share a day, so exactly the
competing decisions are serialised while others run in parallel. Deadlocks and
serialisation failures are retried.

SQLite: BEGIN IMMEDIATE (Database.write_session) makes the decision the only writer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from scheduler.booking.pool_version import POOL_VERSION
from scheduler.db import Database
from scheduler.models import CapacityDay, CapacityPool

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 8
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


_INSTANT = timedelta(microseconds=1)


def days_of(start: datetime, end: datetime) -> range:
    """The UTC days [start, end) touches, as ordinals (date.fromordinal gives the day).

    The one definition of it: the days a decision locks, the days the trigger gives a new
    version (scheduler/booking/day_versions.py, in SQL) and the days the cache files an
    occurrence under must all agree.
    """
    return range(start.date().toordinal(), (end - _INSTANT).date().toordinal() + 1)


def days_touched(intervals: Iterable[tuple[datetime, datetime]]) -> list[date]:
    """The UTC days any of ``intervals`` touches, in order."""
    ordinals = {ordinal for start, end in intervals for ordinal in days_of(start, end)}
    return [date.fromordinal(ordinal) for ordinal in sorted(ordinals)]


# The usual case in one statement: every day row exists, the pool row is taken shared and
# the days exclusively, in day order (rows are locked as the sorted result is produced).
_LOCK_DAYS = text("""
SELECT d.day, d.version, txid_current(), p.version FROM capacity_pool AS p
JOIN capacity_days AS d ON d.day = ANY(:days)
WHERE p.id = 1 ORDER BY d.day FOR SHARE OF p FOR UPDATE OF d
""")

# session.info keys: {day: version} of the days this transaction holds (see locked_days),
# and on PostgreSQL the transaction's id, the version its writes give a day. (And the
# pool's version: scheduler/booking/pool_version.py.)
LOCKED_DAYS = "capacity_day_versions"
TRANSACTION_ID = "transaction_id"


def lock_for_decision(session: Session, days: list[date], *,
                      exclusive_pool: bool = False) -> dict[date, int]:
    """Lock the pool and ``days`` (creating missing day rows) for a capacity decision.

    Returns the days' versions as locked, which also stay in the session (locked_days),
    as does the pool's version (pool_version.locked_version): nobody can change them until
    the transaction ends.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        versions, session.info[TRANSACTION_ID], pool = _lock_postgresql(connection, days,
                                                                        exclusive_pool)
    else:
        versions, pool = _lock_sqlite(connection, days)
    session.info[LOCKED_DAYS] = versions
    session.info[POOL_VERSION] = pool
    return versions


def locked_days(session: Session) -> dict[date, int]:
    """The versions of the days this session's transaction has locked (empty if none)."""
    return session.info.get(LOCKED_DAYS, {})


def transaction_id(session: Session) -> int | None:
    """PostgreSQL: the id of this session's locking transaction (the version its writes
    give a day, scheduler/booking/day_versions.py); None on SQLite or before locking days."""
    return session.info.get(TRANSACTION_ID)


def _lock_postgresql(connection: Connection, days: list[date], exclusive_pool: bool,
                     ) -> tuple[dict[date, int], int | None, int]:
    """The days' versions, the transaction's id, the pool's version."""
    if days and not exclusive_pool:
        rows = connection.execute(_LOCK_DAYS, {"days": days}).all()
        if len(rows) == len(days):
            return {day: version for day, version, _, _ in rows}, rows[0][2], rows[0][3]
    pool = select(CapacityPool.version).where(CapacityPool.id == 1)
    pool = pool.with_for_update() if exclusive_pool else pool.with_for_update(read=True)
    pool_version = connection.execute(pool).scalar()
    if pool_version is None:
        connection.execute(pg_insert(CapacityPool).values(id=1, version=0)
                           .on_conflict_do_nothing(index_elements=["id"]))
        pool_version = connection.execute(pool).scalar_one()
    if not days:
        return {}, None, pool_version
    # A new day is inserted first (a concurrent insert of the same day waits, then does
    # nothing), then every day is locked.
    create_days(connection, days)
    rows = connection.execute(select(CapacityDay.day, CapacityDay.version)
                              .where(CapacityDay.day.in_(days))
                              .order_by(CapacityDay.day).with_for_update()).all()
    return {day: version for day, version in rows}, \
        connection.execute(text("SELECT txid_current()")).scalar_one(), pool_version


def create_days(connection: Connection, days: list[date]) -> None:
    """Give each of ``days`` its row (version 0) if it has none yet."""
    if not days:
        return
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(insert(CapacityDay).values([{"day": day} for day in days])
                       .on_conflict_do_nothing(index_elements=["day"]))


def _lock_sqlite(connection: Connection, days: list[date]) -> tuple[dict[date, int], int]:
    """The days' versions and the pool's. The write session already holds the only
    writer lock; the rows give the versions."""
    connection.execute(sqlite_insert(CapacityPool).values(id=1, version=0)
                       .on_conflict_do_nothing(index_elements=["id"]))
    pool_version = connection.execute(select(CapacityPool.version)
                                      .where(CapacityPool.id == 1)).scalar_one()
    if not days:
        return {}, pool_version
    create_days(connection, days)
    rows = connection.execute(select(CapacityDay.day, CapacityDay.version)
                              .where(CapacityDay.day.in_(days))).all()
    return {day: version for day, version in rows}, pool_version


def _retryable(exc: DBAPIError) -> bool:
    state = getattr(exc.orig, "sqlstate", None)
    if state in RETRY_SQLSTATES:
        return True
    # SQLite: "database is locked" after busy_timeout; rare with BEGIN IMMEDIATE.
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig)


def run_decision(db: Database, days: list[date], decide: Callable[[Session], T], *,
                 exclusive_pool: bool = False) -> T:
    """Run ``decide`` in a locked write transaction, retrying on deadlock/serialisation."""
    for attempt in range(RETRIES):
        try:
            with db.write_session() as session:
                lock_for_decision(session, days, exclusive_pool=exclusive_pool)
                return decide(session)
        except DBAPIError as exc:
            if not _retryable(exc) or attempt == RETRIES - 1:
                raise
            log.info("capacity decision retried after %s", type(exc.orig).__name__)
            time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
    raise AssertionError("unreachable")
