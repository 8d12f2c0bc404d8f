"""The capacity rules: pool, guaranteed quotas, borrowing, the IZS reserve, displacement.

Plain functions over plain objects, so that every rule can be tested without a database
(tests/scheduler/test_capacity.py); scheduler/booking/bookings.py feeds them rows read inside the
transaction that then writes the decision.

The model (docs/scheduler.md explains it for people):

- The *pool* is the capacity of every enabled worker, in units (scheduler/booking/units.py).
- *IZS reserve*: ``izs_reserve_units`` of the pool that only IZS bookings may use. An
  ordinary booking must leave the unused part of the reserve free.
- *Quotas*: a holder (an organisation, or the group an organisation falls under) owns a
  guaranteed share. An ordinary booking must leave the unused part of every *other*
  holder's share free, except when it is *borrowing*: its occurrence starts within
  ``borrow_lead`` of now, or its class is ``priority``. Borrowed capacity is given back
  when the occurrence ends or is cancelled; it never extends a share beyond that.
  A holder's bookings made at least ``borrow_lead`` ahead therefore always find its
  own share free.
- *Emergency* bookings may use all of the pool, ignoring shares and the reserve; when
  even that is short, routine occurrences are displaced (:func:`choose_displacements`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import NamedTuple

PRIORITY_CLASSES: tuple[str, ...] = ("routine", "priority", "emergency")


@dataclass(frozen=True)
class CapacityPolicy:
    pool_units: int
    izs_reserve_units: int
    quotas: Mapping[int, int] = field(default_factory=dict)  # holder id -> guaranteed units
    borrow_lead: timedelta = timedelta(hours=48)


class Allocation(NamedTuple):
    """Capacity held by one occurrence of a booking over [start, end).

    A named tuple, not a dataclass: a week's availability builds thousands of them.
    """

    start: datetime
    end: datetime
    units: int
    holder: int | None = None  # quota holder the units are charged to
    izs: bool = False
    priority: str = "routine"
    ref: int | None = None  # the occurrence's id, for displacement


@dataclass(frozen=True)
class Request:
    """Capacity asked for by one occurrence of a new or changed booking."""

    start: datetime
    end: datetime
    units: int
    holder: int | None = None
    izs: bool = False
    priority: str = "routine"


class Segment(NamedTuple):
    """Load over [start, end), constant inside it.

    A named tuple: a week's availability builds thousands of them.
    """

    start: datetime
    end: datetime
    used: int  # units held by every allocation
    izs_used: int  # units held by IZS allocations
    protected: int  # unused guaranteed units of holders other than the asking one
    own_used: int = 0  # units the asking holder itself holds


@dataclass(frozen=True)
class Shortfall:
    """Why a request does not fit: where, how much was free, which rule bound."""

    at: datetime
    needed: int
    available: int
    reason: str  # "pool_full", "izs_reserve" or "quota"


def borrowing(request: Request, policy: CapacityPolicy, now: datetime) -> bool:
    """May this request use other holders' unused shares?"""
    if request.priority in ("priority", "emergency"):
        return True
    return request.start - now <= policy.borrow_lead


def room_left(segment: Segment, policy: CapacityPolicy, *, izs: bool, borrow: bool) -> int:
    """Units left in ``segment`` for an IZS or ordinary request, borrowing or not."""
    free = policy.pool_units - segment.used
    if not izs:
        free -= max(0, policy.izs_reserve_units - segment.izs_used)
    if not borrow:
        free -= segment.protected
    return free


def available(segment: Segment, request: Request, policy: CapacityPolicy,
              now: datetime) -> tuple[int, str]:
    """Units this request may take inside ``segment``, and the rule that bounds them."""
    free = policy.pool_units - segment.used
    if request.priority == "emergency":
        return free, "pool_full"
    limits = [(free, "pool_full")]
    if not request.izs:
        free -= max(0, policy.izs_reserve_units - segment.izs_used)
        limits.append((free, "izs_reserve"))
    if not borrowing(request, policy, now):
        free -= segment.protected
        limits.append((free, "quota"))
    # The first rule that leaves too little is the one to name.
    for units, reason in limits:
        if units < request.units:
            return units, reason
    return free, limits[-1][1]


def timeline(allocations: Iterable[Allocation], policy: CapacityPolicy, holder: int | None,
             start: datetime, end: datetime) -> list[Segment]:
    """The load over [start, end) as consecutive segments, seen by ``holder``.

    A sweep over allocation boundaries: O(n log n) for n allocations. The unused shares
    of other holders are kept up to date per change rather than summed over every holder
    at every boundary (a week holds thousands of boundaries); the loop is written out
    flat because it is the hot path of every decision and availability query.
    """
    quotas = policy.quotas
    used = izs_used = own = 0
    protected = sum(quotas.values()) - quotas.get(holder, 0)  # type: ignore[arg-type]
    used_by: dict[int | None, int] = {}
    # (instant, units it adds, IZS or not, holder): plain tuples, read without lookups.
    events: list[tuple[datetime, int, bool, int | None]] = []
    add = events.append
    for a_start, a_end, units, owner, izs, _, _ in allocations:
        if a_end <= start or a_start >= end:
            continue
        add((a_start if a_start > start else start, units, izs, owner))
        if a_end < end:
            add((a_end, -units, izs, owner))
    events.sort(key=itemgetter(0))

    segments: list[Segment] = []
    make = Segment._make
    cursor = start
    for at, units, izs, owner in events:
        if at > cursor:
            segments.append(make((cursor, at, used, izs_used, protected, own)))
            cursor = at
        used += units
        if izs:
            izs_used += units
        if owner is not None and owner == holder:
            own += units
            continue
        before = used_by.get(owner, 0)
        used_by[owner] = after = before + units
        quota = quotas.get(owner)  # type: ignore[arg-type]
        if quota is not None:  # max(0, quota - after) - max(0, quota - before), inlined
            if after < quota:
                protected += quota - after
            if before < quota:
                protected -= quota - before
    if cursor < end:
        segments.append(make((cursor, end, used, izs_used, protected, own)))
    return segments


class Profile:
    """The load over [start, end) as every holder sees it at once.

    :func:`timeline` sweeps every allocation again for each question. A profile is swept
    once (for a day, scheduler/booking/occupancy.py) and keeps, per segment, the units used, the
    IZS units used, the ``spare`` (every share's unused part) and the units each holder
    holds. Any holder's view is then a lookup: the ``protected`` it sees is the spare
    less what is left of its own share (docs/scheduler.md). A booking admitted is
    counted in place (:meth:`add`), not swept again.

    Segment i is [times[i], times[i + 1]); the last one ends at ``end``.
    """

    __slots__ = ("_owned", "end", "held", "izs_used", "spare", "times", "used")

    def __init__(self, times: list[datetime], end: datetime, used: list[int],
                 izs_used: list[int], spare: list[int], held: dict[int, list[int]]) -> None:
        self.times, self.end = times, end
        self.used, self.izs_used, self.spare = used, izs_used, spare
        self.held = held  # holder -> units it holds in each segment
        # The lists of ``held`` this profile may change: a copy shares the others until
        # it changes them (a batch changes a holder or two of a day's dozen).
        self._owned: set[int] = set(held)

    @classmethod
    def of(cls, allocations: Iterable[Allocation], policy: CapacityPolicy, start: datetime,
           end: datetime) -> Profile:
        """The profile of ``allocations`` over [start, end), for ``policy``'s shares."""
        allocations = list(allocations)
        # As seen by nobody (holder None), a segment's ``protected`` is every share's
        # unused part: the spare.
        segments = timeline(allocations, policy, None, start, end)
        times = [s.start for s in segments]
        held: dict[int, list[int]] = {}
        for a_start, a_end, units, holder, *_ in allocations:
            if holder is None or a_end <= start or a_start >= end:
                continue
            counts = held.get(holder)
            if counts is None:
                counts = held[holder] = [0] * len(times)
            for index in range(max(0, bisect.bisect_right(times, a_start) - 1),
                               bisect.bisect_left(times, a_end)):
                counts[index] += units
        return cls(times, end, [s.used for s in segments], [s.izs_used for s in segments],
                   [s.protected for s in segments], held)

    def copy(self) -> Profile:
        """A copy to change; it shares the holders' counts until it changes them."""
        copied = Profile(list(self.times), self.end, list(self.used), list(self.izs_used),
                         list(self.spare), dict(self.held))
        copied._owned = set()
        self._owned = set()  # nor may this one change them in place any more
        return copied

    def _held_by(self, holder: int) -> list[int]:
        """The holder's counts, this profile's own to change."""
        counts = self.held.get(holder)
        if counts is None:
            counts = self.held[holder] = [0] * len(self.times)
        elif holder not in self._owned:
            counts = self.held[holder] = list(counts)
        self._owned.add(holder)
        return counts

    def segments(self, quota: int | None, holder: int | None, start: datetime,
                 end: datetime) -> list[Segment]:
        """The load over [start, end) (inside the profile) as :func:`timeline` gives it
        for ``holder`` (None: nobody), whose share is ``quota`` (None: it has none)."""
        times, used, izs_used, spare = self.times, self.used, self.izs_used, self.spare
        first = bisect.bisect_right(times, start) - 1
        last = bisect.bisect_left(times, end)
        mine = self.held.get(holder) if holder is not None else None  # type: ignore[arg-type]
        make = Segment._make
        segments = []
        seg_start = start
        for index in range(first, last):
            seg_end = times[index + 1] if index + 1 < last else end
            protected = spare[index]
            own_used = mine[index] if mine is not None else 0
            if quota is not None and own_used < quota:  # the holder's own unused share
                protected -= quota - own_used
            segments.append(make((seg_start, seg_end, used[index], izs_used[index],
                                  protected, own_used)))
            seg_start = seg_end
        return segments

    def add(self, allocation: Allocation, quota: int | None) -> None:
        """Count ``allocation`` in; ``quota`` is its holder's share (None: it has none)."""
        start, end = max(allocation.start, self.times[0]), min(allocation.end, self.end)
        if start >= end:
            return
        first, last = self._split(start), self._split(end)
        units = allocation.units
        used, izs_used, spare = self.used, self.izs_used, self.spare
        for index in range(first, last):
            used[index] += units
        if allocation.izs:
            for index in range(first, last):
                izs_used[index] += units
        if allocation.holder is None:
            return
        counts = self._held_by(allocation.holder)
        for index in range(first, last):
            before = counts[index]
            counts[index] = before + units
            if quota is not None:  # max(0, quota - after) - max(0, quota - before)
                spare[index] += max(0, quota - before - units) - max(0, quota - before)

    def _split(self, at: datetime) -> int:
        """The index of the segment starting at ``at``, splitting one if needed."""
        times = self.times
        if at >= self.end:
            return len(times)
        index = bisect.bisect_left(times, at)
        if index < len(times) and times[index] == at:
            return index
        times.insert(index, at)
        for values in (self.used, self.izs_used, self.spare):
            values.insert(index, values[index - 1])
        for holder in list(self.held):
            counts = self._held_by(holder)
            counts.insert(index, counts[index - 1])
        return index


def check(request: Request, segments: Iterable[Segment], policy: CapacityPolicy,
          now: datetime) -> Shortfall | None:
    """None when the request fits everywhere in its interval, else the worst shortfall.

    ``segments``: the load over the request's interval as its holder sees it
    (:func:`timeline`, or :meth:`Profile.segments`).
    """
    worst: Shortfall | None = None
    # Only a segment where the request does not fit needs available()'s reason.
    emergency = request.priority == "emergency"
    izs, borrow = request.izs or emergency, emergency or borrowing(request, policy, now)
    for segment in segments:
        if room_left(segment, policy, izs=izs, borrow=borrow) >= request.units:
            continue
        units, reason = available(segment, request, policy, now)
        if units < request.units and (worst is None or units < worst.available):
            worst = Shortfall(at=segment.start, needed=request.units, available=units,
                              reason=reason)
    return worst


def choose_displacements(request: Request, allocations: Sequence[Allocation],
                         policy: CapacityPolicy, now: datetime) -> list[Allocation] | None:
    """The routine allocations an emergency request displaces, or None if it cannot fit.

    Only ``routine`` occurrences are displaced, never priority or emergency ones.
    Occurrences that have not started go first; running ones only when those are not
    enough, because an emergency is never refused while routine use holds the capacity.
    Within each group the largest go first, so that as few meetings as possible are
    disturbed. Returns [] when the request fits as it is.
    """
    overlapping = [a for a in allocations if a.start < request.end and a.end > request.start]
    candidates = sorted((a for a in overlapping if a.priority == "routine"),
                        key=lambda a: (a.start <= now, -a.units, -(a.ref or 0)))
    chosen: list[Allocation] = []
    chosen_ids: set[int] = set()
    for segment in timeline(overlapping, policy, request.holder, request.start, request.end):
        deficit = request.units - (policy.pool_units - segment.used)
        deficit -= sum(a.units for a in chosen if a.start < segment.end and a.end > segment.start)
        for candidate in candidates:
            if deficit <= 0:
                break
            if id(candidate) in chosen_ids:
                continue
            if candidate.start < segment.end and candidate.end > segment.start:
                chosen.append(candidate)
                chosen_ids.add(id(candidate))
                deficit -= candidate.units
        if deficit > 0:
            return None
    return chosen


def nearest_slots(request: Request, segments: Sequence[Segment], policy: CapacityPolicy,
                  now: datetime, *, count: int = 3, step: timedelta = timedelta(minutes=15),
                  search: timedelta = timedelta(days=7)) -> list[datetime]:
    """Start times nearest to the request's (before or after) at which it would fit.

    ``segments``: the load over [request.start - search, request.end + search] as the
    request's holder sees it (:func:`timeline`, or :meth:`Profile.segments`).
    """
    duration = request.end - request.start
    window_end = request.end + search
    emergency = request.priority == "emergency"
    izs = request.izs or emergency

    # Where the request does not fit, as runs of consecutive segments (starts, ends),
    # lending allowed or not: the only thing a candidate start changes is whether it
    # falls within the borrowing lead. Each is made when first needed (a refusal far
    # ahead never borrows).
    blocked: dict[bool, tuple[list[datetime], list[datetime]]] = {}

    def blocked_runs(borrow: bool) -> tuple[list[datetime], list[datetime]]:
        if emergency or request.priority == "priority":
            borrow = True
        runs = blocked.get(borrow)
        if runs is None:
            run_starts: list[datetime] = []
            run_ends: list[datetime] = []
            for segment in segments:
                if room_left(segment, policy, izs=izs, borrow=borrow) >= request.units:
                    continue
                if run_ends and run_ends[-1] == segment.start:
                    run_ends[-1] = segment.end
                else:
                    run_starts.append(segment.start)
                    run_ends.append(segment.end)
            runs = blocked[borrow] = (run_starts, run_ends)
        return runs

    lead_ends = now + policy.borrow_lead

    def fits(start: datetime) -> bool:
        run_starts, run_ends = blocked_runs(start <= lead_ends)  # borrowing(): in the lead
        first = bisect.bisect_right(run_ends, start)  # the first run that ends after it
        return first == len(run_ends) or run_starts[first] >= start + duration

    found: list[datetime] = []
    steps = int(search / step)
    for k in range(1, steps + 1):
        for candidate in (request.start + k * step, request.start - k * step):
            if candidate >= now and candidate + duration <= window_end and fits(candidate):
                found.append(candidate)
                if len(found) == count:
                    return sorted(found)
    return sorted(found)
