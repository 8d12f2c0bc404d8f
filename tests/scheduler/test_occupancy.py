"""The per-day occurrence cache and the trigger it trusts, on SQLite and PostgreSQL.

A cached day is used only while its version is unchanged; every write to a scheduled
occurrence changes the versions of the days it touches, whoever writes it. So a write
that does not go through this process's decisions (another process, a data fix) is
still seen by the next decision: nothing is handed out twice.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from scheduler.booking import occupancy
from scheduler.booking.availability import availability
from scheduler.booking.bookings import BookingInput, admit_batch, prepare_booking
from scheduler.booking.capacity import Allocation, CapacityPolicy, timeline
from scheduler.booking.occupancy import (
    ONE_DAY,
    Day,
    DayCache,
    by_day,
    day_cache,
    day_start,
    load_allocations,
    read_versions,
)
from scheduler.booking.transactions import lock_for_decision
from scheduler.booking.units import ParticipantMix
from scheduler.db import Database
from scheduler.errors import CapacityRefused
from scheduler.models import Booking, BookingOccurrence
from scheduler.organisations import org_info
from tests.scheduler.conftest import NOW, World, join_link
from tests.scheduler.test_bookings import book, schedule

D1, D2, D3 = date(2026, 12, 14), date(2026, 12, 15), date(2026, 12, 16)


def versions(db: Database) -> dict[date, int]:
    with db.session() as session:
        return read_versions(session, [D1, D2, D3])


def foreign_occurrence(db_url: str, start: datetime, end: datetime, units: int,
                       state: str = "scheduled") -> int:
    """Write an occurrence the way another process would: its own engine, no decision."""
    other = Database(db_url)
    try:
        with other.session() as session:
            booking = Booking(uid=f"foreign-{start.isoformat()}-{state}", organisation_id=1,
                              title="Foreign", zone="Europe/Prague",
                              local_start=start.replace(tzinfo=None),
                              local_end=end.replace(tzinfo=None), units=units,
                              room_name=f"foreign-{start:%d%H%M}-{state}")
            session.add(booking)
            session.flush()
            occurrence = BookingOccurrence(booking_id=booking.id, start_utc=start, end_utc=end,
                                           units=units, state=state)
            session.add(occurrence)
            session.flush()
            return occurrence.id
    finally:
        other.dispose()


def test_a_write_to_a_scheduled_occurrence_changes_the_versions_of_its_days(
        world: World) -> None:
    db = world.db
    with db.write_session() as session:
        lock_for_decision(session, [D1, D2, D3])
    before = versions(db)

    # Across midnight: both days change, the third does not.
    occurrence = foreign_occurrence(db.url, datetime(2026, 12, 14, 23, tzinfo=UTC),
                                    datetime(2026, 12, 15, 1, tzinfo=UTC), 10)
    after_insert = versions(db)
    assert after_insert[D1] != before[D1] and after_insert[D2] != before[D2]
    assert after_insert[D3] == before[D3]

    # What does not move capacity leaves them: opening the room, an occurrence that
    # holds nothing.
    with db.session() as session:
        session.execute(update(BookingOccurrence).where(BookingOccurrence.id == occurrence)
                        .values(opened_at=datetime(2026, 12, 14, 23, tzinfo=UTC)))
    foreign_occurrence(db.url, datetime(2026, 12, 16, 9, tzinfo=UTC),
                       datetime(2026, 12, 16, 10, tzinfo=UTC), 10, state="displaced")
    assert versions(db) == after_insert

    # Cancelling it, or deleting a scheduled one, gives back capacity: they change.
    with db.session() as session:
        session.execute(update(BookingOccurrence).where(BookingOccurrence.id == occurrence)
                        .values(state="cancelled"))
    after_cancel = versions(db)
    assert after_cancel[D1] != after_insert[D1] and after_cancel[D2] != after_insert[D2]
    moved = foreign_occurrence(db.url, datetime(2026, 12, 16, 9, tzinfo=UTC),
                               datetime(2026, 12, 16, 10, tzinfo=UTC), 10)
    after_third = versions(db)
    assert after_third[D3] != after_cancel[D3]
    with db.session() as session:
        session.execute(delete(BookingOccurrence).where(BookingOccurrence.id == moved))
    assert versions(db)[D3] != after_third[D3]


def test_a_write_from_elsewhere_is_seen_by_the_next_decision(world: World) -> None:
    # Region A may take 600 of the 1000 units far ahead (200 are region B's share, 200
    # the IZS reserve). The first booking puts the day in this process's cache.
    when = schedule("2026-12-15T10:00", "2026-12-15T11:00")
    book(world, "admin_a", world.region_a, when, hd=10)  # 110 units
    with world.db.session() as session:
        cache = day_cache(session)
    assert cache.held(D2) is not None
    # Another process takes 400 units at the same hour (09:00-10:00 UTC), unseen by
    # this process's decisions. 220 more units for region A would have fitted before;
    # now only 90 are left.
    foreign_occurrence(world.db.url, datetime(2026, 12, 15, 9, tzinfo=UTC),
                       datetime(2026, 12, 15, 10, tzinfo=UTC), 400)
    misses = cache.misses
    with pytest.raises(CapacityRefused) as refused:
        book(world, "admin_a", world.region_a, when, hd=20)
    assert refused.value.details["conflicts"][0]["available_units"] == 90
    assert cache.misses > misses, "the day was read again"


def test_decisions_reuse_a_day_and_hold_it_under_the_version_they_leave(
        world: World) -> None:
    first = schedule("2026-12-15T10:00", "2026-12-15T11:00")
    book(world, "admin_a", world.region_a, first, hd=5)
    with world.db.session() as session:
        cache = day_cache(session)
    hits, misses = cache.hits, cache.misses
    # A batch of three at noon that day: read from the cache, not the database; what it
    # leaves is held under the versions the database then has (predicted on
    # PostgreSQL from the transaction's id, read back on SQLite).
    batch = [prepare_booking(world.config, world.principal("admin_a"),
                             _input(world, "2026-12-15T12:00", "2026-12-15T12:30"),
                             datetime(2026, 11, 30, 8, tzinfo=UTC), join_link)
             for _ in range(3)]
    outcomes = admit_batch(world.db, batch)
    assert all(not isinstance(outcome, BaseException) for outcome in outcomes)
    assert (cache.hits, cache.misses) == (hits + 1, misses)
    assert cache.held(D2) == versions(world.db)[D2]
    # And the next decision finds them there: 3 x 11 of region A's 600 units are taken.
    with pytest.raises(CapacityRefused) as refused:
        book(world, "admin_a", world.region_a, schedule("2026-12-15T12:00",
                                                        "2026-12-15T12:30"), hd=52)
    assert refused.value.details["conflicts"][0]["available_units"] == 600 - 33
    assert cache.misses == misses


def _input(world: World, start: str, end: str) -> BookingInput:
    return BookingInput(organisation_id=world.region_a, title="Porada",
                        schedule=schedule(start, end), participants=ParticipantMix(hd=1))


def test_the_cache_forgets_the_days_used_least_recently() -> None:
    cache = DayCache(max_days=2)
    empty = Day.of(D1, [])
    cache.store({D1: (1, empty), D2: (1, empty)})
    cache.store({D3: (1, empty)})
    assert (cache.held(D1), cache.held(D2), cache.held(D3)) == (None, 1, 1)
    cache.store({D2: (0, empty)})  # an older version never replaces a newer one
    assert cache.held(D2) == 1


def test_a_days_load_is_the_sweep_of_its_occurrences_as_batches_add_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Day.segments(), on a day made from some occurrences and then given the rest one by
    one (as batches admit them, each on a copy of the day the one before left), equals
    the sweep of all of them, for every holder; occurrences that cross midnight count on
    both days; the cached day is not changed."""
    monkeypatch.setattr(occupancy, "FOLD_AFTER", 3)  # the added ones join the others often
    policy = CapacityPolicy(pool_units=1000, izs_reserve_units=100, quotas={1: 300, 2: 200})
    day = D2
    midnight = datetime.combine(day, time(), UTC)
    rng = random.Random(5)
    for _ in range(200):
        allocations = []
        for ref in range(rng.randint(0, 30)):
            start = midnight + rng.randint(-12, 100) * timedelta(minutes=15)
            allocations.append(Allocation(start, start + rng.randint(1, 24) * timedelta(
                minutes=15), rng.randint(5, 200), rng.choice([None, 1, 2, 3]),
                rng.random() < 0.2, "routine", ref))
        allocations.sort(key=lambda a: a.start)
        touching = [a for a in allocations if a.end > midnight and a.start < midnight + ONE_DAY]
        cut = rng.randint(0, len(touching))
        cached = Day.of(day, touching[:cut])
        cached.segments(policy, 1, midnight, midnight + ONE_DAY)  # its profile is made
        changed = cached.copy()
        for allocation in touching[cut:]:
            if rng.random() < 0.3:  # the next batch
                changed = changed.copy()
            changed.add(allocation, policy)
        for holder in (None, 1, 2, 3):
            start = midnight + rng.randint(-4, 96) * timedelta(minutes=15)
            end = start + rng.randint(1, 30) * timedelta(minutes=15)
            clipped = (max(start, midnight), min(end, midnight + ONE_DAY))
            assert changed.segments(policy, holder, start, end) == \
                timeline(touching, policy, holder, *clipped)
            assert cached.segments(policy, holder, start, end) == \
                timeline(touching[:cut], policy, holder, *clipped)
            assert set(changed.near(start, end)) == {
                a for a in touching if a.start < end and a.end > start}
            assert set(changed.near(start, end, from_day_start=True)) == {
                a for a in touching if midnight <= a.start < end and a.end > start}
        assert set(changed.allocations) == set(touching)
        gone = {a.ref for a in touching[::3]}
        assert set(changed.without(gone).allocations) == {
            a for a in touching if a.ref not in gone}


def _availability_read_afresh(world: World, org_id: int | None, start: datetime,
                              end: datetime) -> dict[str, object]:
    """availability() with every day read from the database, none from the cache (the
    profile a day gives is checked against the sweep above)."""
    from scheduler.booking import availability as module

    def from_database(session: Session, days: list[date], max_duration: timedelta,
                      ) -> dict[date, Day]:
        rows = load_allocations(session, [(day_start(day), day_start(day) + ONE_DAY)
                                          for day in days], max_duration)
        return {day: Day.of(day, found) for day, found in by_day(rows, days).items()}

    with world.db.session() as session:
        org = org_info(session, org_id) if org_id else None
        cache = day_cache(session)
        real = cache.days
        cache.days = from_database  # type: ignore[method-assign]
        try:
            return module.availability(session, world.config, org, start, end, NOW)
        finally:
            cache.days = real  # type: ignore[method-assign]


def test_availability_from_the_cache_is_what_the_database_gives(world: World) -> None:
    # Meetings over three days, one across midnight (UTC), and a write from elsewhere
    # after the cache holds the days.
    for start, end, hd, who, org in (
            ("2026-12-14T09:00", "2026-12-14T11:00", 10, "admin_a", world.region_a),
            ("2026-12-14T10:00", "2026-12-14T12:30", 5, "admin_orp_a", world.orp_a),
            ("2026-12-15T23:30", "2026-12-16T02:00", 8, "admin_orp_b", world.orp_b),
            ("2026-12-16T08:00", "2026-12-16T09:00", 3, "izs", world.izs)):
        book(world, who, org, schedule(start, end), hd=hd)
    start, end = datetime(2026, 12, 13, 20, tzinfo=UTC), datetime(2026, 12, 17, 6, tzinfo=UTC)
    with world.db.session() as session:
        availability(session, world.config, None, start, end, NOW)  # the cache holds them
    foreign_occurrence(world.db.url, datetime(2026, 12, 15, 9, tzinfo=UTC),
                       datetime(2026, 12, 15, 10, tzinfo=UTC), 300)
    for org_id in (None, world.region_a, world.orp_a, world.orp_b, world.izs):
        with world.db.session() as session:
            org = org_info(session, org_id) if org_id else None
            cached = availability(session, world.config, org, start, end, NOW)
        assert cached == _availability_read_afresh(world, org_id, start, end)
        assert any(s["used_units"] >= 300 for s in cached["segments"])  # type: ignore[attr-defined]
