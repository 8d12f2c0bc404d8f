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

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from scheduler.db import Database
from scheduler.models import CapacityDay, CapacityPool

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 8
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def days_touched(intervals: Iterable[tuple[datetime, datetime]]) -> list[date]:
    days: set[date] = set()
    for start, end in intervals:
        day, last = start.date(), (end - timedelta(microseconds=1)).date()
        while day <= last:
            days.add(day)
            day += timedelta(days=1)
    return sorted(days)


# The usual case in one statement: every day row exists, the pool row is taken shared and
# the days exclusively, in day order (rows are locked as the sorted result is produced).
_LOCK_DAYS = text("""
SELECT d.day FROM capacity_pool AS p JOIN capacity_days AS d ON d.day = ANY(:days)
WHERE p.id = 1 ORDER BY d.day FOR SHARE OF p FOR UPDATE OF d
""")


def lock_for_decision(session: Session, days: list[date], *, exclusive_pool: bool = False) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite: the write session already holds the only writer lock
    connection = session.connection()
    if days and not exclusive_pool \
            and len(connection.execute(_LOCK_DAYS, {"days": days}).all()) == len(days):
        return
    pool = select(CapacityPool.id).where(CapacityPool.id == 1)
    pool = pool.with_for_update() if exclusive_pool else pool.with_for_update(read=True)
    if connection.execute(pool).first() is None:
        connection.execute(pg_insert(CapacityPool).values(id=1, version=0)
                           .on_conflict_do_nothing(index_elements=["id"]))
        connection.execute(pool)
    if not days:
        return
    rows = select(CapacityDay.day).where(CapacityDay.day.in_(days)) \
        .order_by(CapacityDay.day).with_for_update()
    # A new day is inserted first (a concurrent insert of the same day waits, then does
    # nothing), then every day is locked.
    connection.execute(pg_insert(CapacityDay).values([{"day": day} for day in days])
                       .on_conflict_do_nothing(index_elements=["day"]))
    connection.execute(rows)


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
