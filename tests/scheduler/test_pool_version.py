"""The pool version and what decisions keep under it, on SQLite and PostgreSQL.

Decisions keep the capacity policy and the organisation tree for as long as the pool
version is unchanged; triggers change it on every write that matters, whoever writes,
so a change made by another process or by hand is used by the very next decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select, update

from scheduler.db import Database, upgrade
from scheduler.errors import CapacityRefused
from scheduler.models import (
    BookingOccurrence,
    CapacityPool,
    MediaNode,
    MediaWorker,
    Organisation,
    Quota,
)
from tests.scheduler.conftest import World
from tests.scheduler.test_bookings import book, schedule


def pool_version(db: Database) -> int | None:
    with db.session() as session:
        return session.scalar(select(CapacityPool.version).where(CapacityPool.id == 1))


@contextmanager
def elsewhere(db: Database) -> Iterator[Database]:
    """Another process's connection to the same database."""
    other = Database(db.url)
    try:
        yield other
    finally:
        other.dispose()


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements ``db`` runs inside the block."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_shares_and_the_pool_changed_elsewhere_are_used_by_the_next_decision(
        world: World) -> None:
    # Far ahead, region A may take 600 of the 1000 units (200 are region B's share, 200
    # the IZS reserve).
    ten = schedule("2026-12-15T10:00", "2026-12-15T11:00")
    book(world, "admin_a", world.region_a, ten, hd=10)  # 110 units; policy now kept
    with pytest.raises(CapacityRefused):
        book(world, "admin_a", world.region_a, ten, hd=60)  # 110 + 660 > 600

    # Another process gives region B's share up: 800 are region A's to take.
    with elsewhere(world.db) as other, other.session() as session:
        session.execute(update(Quota).where(Quota.organisation_id == world.region_b)
                        .values(share_bp=0))
    book(world, "admin_a", world.region_a, ten, hd=60)

    # And switches one worker off: the pool is 500, the reserve 100.
    with elsewhere(world.db) as other, other.session() as session:
        worker = session.scalars(select(MediaWorker).order_by(MediaWorker.id)).first()
        assert worker is not None
        worker.enabled = False
    with pytest.raises(CapacityRefused) as refused:
        book(world, "admin_a", world.region_a,
             schedule("2026-12-15T14:00", "2026-12-15T15:00"), hd=40)  # 440 units
    assert refused.value.details["conflicts"][0]["available_units"] == 400


def test_an_organisation_moved_elsewhere_books_on_its_new_parents_share(
        world: World) -> None:
    when = schedule("2026-12-16T10:00", "2026-12-16T11:00")
    book(world, "admin_orp_a", world.orp_a, when, hd=1)
    with elsewhere(world.db) as other, other.session() as session:
        session.execute(update(Organisation).where(Organisation.id == world.orp_a)
                        .values(parent_id=world.region_b))
    book(world, "admin_orp_a", world.orp_a, when, hd=1)
    with world.db.session() as session:
        holders = session.scalars(select(BookingOccurrence.holder_id)
                                  .order_by(BookingOccurrence.id)).all()
    assert holders == [world.region_a, world.region_b]


def test_decisions_read_the_policy_and_organisations_once_per_version(
        world: World) -> None:
    book(world, "admin_a", world.region_a, schedule("2026-12-15T10:00", "2026-12-15T11:00"),
         hd=1)
    with statements(world.db) as seen:
        book(world, "admin_a", world.region_a,
             schedule("2026-12-15T12:00", "2026-12-15T13:00"), hd=1)
    assert not [s for s in seen if "quotas" in s or "FROM organisations" in s]

    with world.db.session() as session:
        session.execute(update(Quota).where(Quota.organisation_id == world.region_b)
                        .values(share_bp=1000))
    with statements(world.db) as seen:
        book(world, "admin_a", world.region_a,
             schedule("2026-12-15T14:00", "2026-12-15T15:00"), hd=1)
    assert [s for s in seen if "quotas" in s] and [s for s in seen if "FROM organisations" in s]


def test_only_writes_that_matter_change_the_version(world: World) -> None:
    db = world.db
    book(world, "admin_a", world.region_a, schedule("2026-12-15T10:00", "2026-12-15T11:00"),
         hd=1)
    before = pool_version(db)
    with db.session() as session:  # a heartbeat, a new e-mail address: nothing
        session.execute(update(MediaNode).values(heartbeat_at=datetime(2026, 12, 1, tzinfo=UTC)))
        session.execute(update(Organisation).where(Organisation.id == world.region_a)
                        .values(email="kraj@example.cz"))
    assert pool_version(db) == before
    changes = [
        update(MediaNode).values(enabled=False),
        update(MediaWorker).values(capacity_units=400),
        update(Quota).values(share_bp=1500),
        update(Organisation).where(Organisation.id == world.orp_a).values(name="ORP A2"),
    ]
    for change in changes:
        with db.session() as session:
            session.execute(change)
        after = pool_version(db)
        assert after is not None and before is not None and after > before, change
        before = after


def test_the_migration_makes_the_triggers(db_url: str) -> None:
    upgrade(db_url)
    db = Database(db_url)
    try:
        assert pool_version(db) is None  # no pool row yet: the first change makes it
        with db.session() as session:
            session.add(Organisation(name="Kraj", kind="region", code="t:kraj"))
        first = pool_version(db)
        with db.session() as session:
            region = session.scalars(select(Organisation.id)).one()
            session.add(Quota(organisation_id=region, share_bp=500))
        assert first is not None and pool_version(db) == first + 1
    finally:
        db.dispose()
