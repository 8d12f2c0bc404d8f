"""What holds capacity when: the scheduled occurrences, read from the database or from
the per-day cache.

Every decision reads the occurrences near the ones it decides. Read from the database
each time, that was the largest part of a decision's cost (several hundred rows per
day, bench/booking.py). :class:`DayCache` keeps each UTC day's occurrences in memory
together with the day's version (scheduler/booking/day_versions.py: a trigger changes it on every
write that touches the day), and reads a day again only when its version has changed.

Why the cache can never hand out stale capacity: a day's version is always read before
its rows (under the decision's lock, or in an earlier statement), so what is stored is
at least as new as the version it is stored under; a later write changes the version,
and the next reader, seeing a different number, reads the day again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from operator import itemgetter
from typing import NamedTuple

from sqlalchemy import and_, or_, select, text
from sqlalchemy.orm import Session

from scheduler.booking.capacity import Allocation, CapacityPolicy, Profile, Segment
from scheduler.booking.transactions import create_days, days_of, locked_days, transaction_id
from scheduler.db import Database, PerEngine
from scheduler.models import BookingOccurrence, CapacityDay

ONE_DAY = timedelta(days=1)


def load_allocations(session: Session, intervals: Sequence[tuple[datetime, datetime]],
                     max_duration: timedelta, *, exclude_booking: int | None = None,
                     ) -> list[Allocation]:
    """Scheduled occurrences overlapping any interval, sorted by start.

    ``start_utc >= start - max_duration`` lets the (state, start_utc) index bound the scan:
    no occurrence is longer than ``max_duration``.
    """
    if not intervals:
        return []
    merged = _merge(intervals)
    if session.get_bind().dialect.name == "postgresql":
        rows = session.connection().execute(_PG_ALLOCATIONS, {
            "starts": [start.astimezone(UTC).replace(tzinfo=None) for start, _ in merged],
            "ends": [end.astimezone(UTC).replace(tzinfo=None) for _, end in merged],
            "max_duration": max_duration, "exclude": exclude_booking or 0}).all()
    else:
        o = BookingOccurrence
        windows = [and_(o.start_utc >= start - max_duration, o.start_utc < end,
                        o.end_utc > start) for start, end in merged]
        query = select(o.start_utc, o.end_utc, o.units, o.holder_id, o.izs, o.priority, o.id) \
            .where(o.state == "scheduled", or_(*windows))
        if exclude_booking is not None:
            query = query.where(o.booking_id != exclude_booking)
        # Through the session's connection, not the ORM: plain rows, a third cheaper.
        rows = session.connection().execute(query).all()
    # Columns in Allocation's field order: a week is thousands of rows, and building each
    # tuple straight from its row is several times cheaper than by keyword.
    make = Allocation._make
    allocations = [make(row) for row in rows]
    allocations.sort(key=lambda a: a.start)
    return allocations


# PostgreSQL: one statement text whatever the number of windows (so it is prepared once
# and planned as one index range scan per window), returning instants already aware.
_PG_ALLOCATIONS = text("""
SELECT DISTINCT ON (o.id)
       (o.start_utc AT TIME ZONE 'UTC') AS start_utc, (o.end_utc AT TIME ZONE 'UTC') AS end_utc,
       o.units, o.holder_id, o.izs, o.priority, o.id
FROM unnest(CAST(:starts AS timestamp[]), CAST(:ends AS timestamp[])) AS w(s, e)
JOIN booking_occurrences AS o
  ON o.state = 'scheduled' AND o.start_utc >= w.s - CAST(:max_duration AS interval)
     AND o.start_utc < w.e AND o.end_utc > w.s
WHERE o.booking_id <> :exclude
""")


def _merge(intervals: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def by_day(allocations: Iterable[Allocation], days: Iterable[date]) -> dict[date, list[Allocation]]:
    """``allocations`` (sorted by start) grouped by the given days they touch, in order."""
    wanted: dict[int, list[Allocation]] = {day.toordinal(): [] for day in days}
    for allocation in allocations:
        for ordinal in days_of(allocation.start, allocation.end):
            bucket = wanted.get(ordinal)
            if bucket is not None:
                bucket.append(allocation)
    return {date.fromordinal(ordinal): bucket for ordinal, bucket in wanted.items()}


# An occurrence as the cache holds it: Allocation's fields in a plain tuple. A tuple of
# plain values (instants, numbers, text) is left out of every later garbage collection
# once it has survived one; a named tuple never is, and the cache holds tens of
# thousands: as Allocation objects they made each full collection walk them all.
Row = tuple[datetime, datetime, int, "int | None", bool, str, "int | None"]

_first = itemgetter(0)

# A day's occurrences admitted since it was read are kept apart (the batch that admits
# one copies only those); past this many they join the others.
FOLD_AFTER = 256


class _Load(NamedTuple):
    quotas: Mapping[int, int]  # the shares the profile counts
    profile: Profile


class Day:
    """A UTC day's scheduled occurrences (every one that touches the day), and the
    longest one's duration: whatever overlaps an instant started at most that long
    before it.

    And, made when a decision first asks, the day's load profile (capacity.Profile): a
    check then reads a few segments rather than sweeping the day. Only an emergency's
    displacement, or a profile made anew, needs the occurrences themselves.

    A day in the cache is never changed but for that one lazy step, which any thread may
    take (each makes the same thing); a decision changes a :meth:`copy`, which shares the
    occurrences read from the database and copies only those added since.
    """

    __slots__ = ("_load", "added", "longest", "rows", "start")

    def __init__(self, start: datetime, rows: tuple[Row, ...], added: list[Row],
                 longest: timedelta, load: _Load | None = None) -> None:
        self.start = start
        self.rows, self.added, self.longest = rows, added, longest
        self._load = load

    @classmethod
    def of(cls, day: date, allocations: Iterable[Allocation]) -> Day:
        """The day from its occurrences."""
        rows: tuple[Row, ...] = tuple(tuple(a) for a in allocations)  # type: ignore[misc]
        return cls(day_start(day), rows, [],
                   max((end - start for start, end, *_ in rows), default=timedelta(0)))

    @property
    def allocations(self) -> list[Allocation]:
        """Every occurrence, sorted by start."""
        return sorted(map(Allocation._make, (*self.rows, *self.added)), key=_first)

    def near(self, start: datetime, end: datetime, *, from_day_start: bool = False,
             ) -> list[Allocation]:
        """The occurrences overlapping [start, end); with ``from_day_start``, only those
        that start on this day."""
        low = self.start if from_day_start else start - self.longest
        return [Allocation._make(row) for rows in (self.rows, self.added) for row in rows
                if low <= row[0] < end and row[1] > start]

    def copy(self) -> Day:
        rows, added = self.rows, list(self.added)
        if len(added) > FOLD_AFTER:
            rows, added = rows + tuple(added), []
        load = self._load
        if load is not None:
            load = _Load(load.quotas, load.profile.copy())
        return Day(self.start, rows, added, self.longest, load)

    def _made_for(self, policy: CapacityPolicy) -> Profile | None:
        """The day's profile, if it was made for ``policy``'s shares."""
        load = self._load
        if load is not None and (load.quotas is policy.quotas or load.quotas == policy.quotas):
            return load.profile
        return None

    def profile(self, policy: CapacityPolicy) -> Profile:
        """The day's profile for ``policy``'s shares, made if need be."""
        profile = self._made_for(policy)
        if profile is None:
            profile = Profile.of((*self.rows, *self.added), policy,  # type: ignore[arg-type]
                                 self.start, self.start + ONE_DAY)
            self._load = _Load(policy.quotas, profile)
        return profile

    def segments(self, policy: CapacityPolicy, holder: int | None, start: datetime,
                 end: datetime) -> list[Segment]:
        """The load over [start, end) clipped to this day, as ``holder`` sees it."""
        profile = self.profile(policy)
        start, end = max(start, self.start), min(end, self.start + ONE_DAY)
        if start >= end:
            return []
        return profile.segments(policy.quotas.get(holder) if holder is not None else None,
                                     holder, start, end)

    def add(self, allocation: Allocation, policy: CapacityPolicy) -> int:
        """Count an admitted occurrence in (only on a :meth:`copy`); its index, for
        :meth:`set_ref`."""
        self.added.append(tuple(allocation))  # type: ignore[arg-type]
        self.longest = max(self.longest, allocation.end - allocation.start)
        profile = self._made_for(policy)
        if profile is None:  # made from the occurrences when first asked for
            self._load = None
        else:
            holder = allocation.holder
            profile.add(allocation, policy.quotas.get(holder) if holder is not None else None)
        return len(self.added) - 1

    def set_ref(self, index: int, ref: int) -> None:
        """Give the occurrence :meth:`add` returned ``index`` for its id, once written."""
        self.added[index] = (*self.added[index][:6], ref)  # type: ignore[assignment]

    def without(self, refs: Collection[int]) -> Day:
        """The day less the occurrences with these ids (displaced), profile made anew."""
        kept = tuple(row for rows in (self.rows, self.added) for row in rows
                     if row[6] not in refs)
        # ``longest`` stays as it was: still a bound, if a loose one.
        return Day(self.start, kept, [], self.longest)


class DayCache:
    """Each cached UTC day: (version, :class:`Day`).

    Bounded: the days used least recently go first. Shared by the threads of a process
    (one per database engine, :func:`day_cache`); the entries are immutable.

    Each occurrence held is an object that every full garbage collection walks (a named
    tuple is never untracked): four months of a busy calendar, about 50,000 of them, add
    some 15 ms to a full collection, so that is the bound; a day further out is read
    from the database when a decision needs it.
    """

    def __init__(self, max_days: int = 120) -> None:
        self.max_days = max_days
        self._days: OrderedDict[date, tuple[int, Day]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0  # days found current, and days read again: for tests and the bench
        self.misses = 0

    def days(self, session: Session, days: Sequence[date],
             max_duration: timedelta) -> dict[date, Day]:
        """The scheduled occurrences touching each of ``days``, as committed now.

        Days the session's transaction has locked are checked against the versions read
        under the lock; other days against versions read here first.
        """
        versions = locked_days(session)
        unknown = [day for day in days if day not in versions]
        if unknown:
            versions = {**versions, **read_versions(session, unknown)}
        found: dict[date, Day] = {}
        stale: list[date] = []
        with self._lock:
            for day in days:
                entry = self._days.get(day)
                if entry is not None and entry[0] == versions.get(day):
                    found[day] = entry[1]
                    self._days.move_to_end(day)
                else:
                    stale.append(day)
            self.hits += len(found)
            self.misses += len(stale)
        if stale:
            rows = load_allocations(session, [(day_start(day), day_start(day) + ONE_DAY)
                                              for day in stale], max_duration)
            loaded = {day: Day.of(day, allocations)
                      for day, allocations in by_day(rows, stale).items()}
            found.update(loaded)
            # A day with no row has no version yet, and cannot be cached.
            self.store({day: (versions[day], occurrences) for day, occurrences in loaded.items()
                        if day in versions})
        return found

    def store(self, entries: Mapping[date, tuple[int, Day]]) -> None:
        """Remember days as of the given versions (a newer version already held stays)."""
        with self._lock:
            for day, (version, occurrences) in entries.items():
                held = self._days.get(day)
                if held is None or held[0] <= version:
                    self._days[day] = (version, occurrences)
                self._days.move_to_end(day)
            while len(self._days) > self.max_days:
                self._days.popitem(last=False)

    def held(self, day: date) -> int | None:
        """The version ``day`` is held under, if it is held."""
        with self._lock:
            entry = self._days.get(day)
            return None if entry is None else entry[0]


# One statement text whatever the number of days (an expanding IN is a new text, parsed
# again, for every count).
_PG_VERSIONS = text("SELECT day, version FROM capacity_days WHERE day = ANY(:days)")


def read_versions(session: Session, days: Sequence[date]) -> dict[date, int]:
    """The current versions of ``days`` that have a row (no lock taken)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        rows = connection.execute(_PG_VERSIONS, {"days": list(days)})
    else:
        rows = connection.execute(select(CapacityDay.day, CapacityDay.version)
                                  .where(CapacityDay.day.in_(days)))
    return {day: version for day, version in rows}


def versions_after(session: Session, written: Collection[date]) -> dict[date, int]:
    """The versions the days this transaction locked will have once it commits, given the
    days its own writes touched (scheduler/booking/day_versions.py).

    PostgreSQL: a written day gets the transaction's id, the others keep theirs (nobody
    else can write them while they are locked). Were ``written`` wrong, a day would be
    remembered under a version it never has, and read again: slower, never stale.
    SQLite: read back (in process, and the trigger only counts).
    """
    locked = locked_days(session)
    written_by = transaction_id(session)
    if written_by is None:
        return read_versions(session, list(locked))
    return {day: written_by if day in written else version for day, version in locked.items()}


# The process's cache for the database a session works on.
day_cache = PerEngine(DayCache)


# The coming quarter: where nearly every booking falls (bench/booking.py books up to twelve
# weeks ahead), inside the cache's bound.
WARM_DAYS = 92


def warm(db: Database, first: date, policy: Callable[[Session], CapacityPolicy],
         max_duration: timedelta, days: int = WARM_DAYS) -> int:
    """Read ``days`` days from ``first`` into the cache with their load profiles under
    the policy ``policy(session)`` gives (at start-up); how many days it holds.

    Otherwise the first decisions after a start read and sweep every day they touch, a
    few hundred milliseconds for the first batches of a busy service.
    """
    wanted = [first + timedelta(days=offset) for offset in range(days)]
    with db.write_session() as session:  # only a day with a version can be cached
        create_days(session.connection(), wanted)
    with db.session() as session:
        cache = day_cache(session)
        current = policy(session)
        for day in cache.days(session, wanted, max_duration).values():
            day.profile(current)
    return sum(cache.held(day) is not None for day in wanted)
