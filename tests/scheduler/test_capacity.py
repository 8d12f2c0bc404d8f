"""The capacity rules on plain objects: pool, reserve, shares, borrowing, displacement."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from scheduler.booking.capacity import (
    Allocation,
    CapacityPolicy,
    Profile,
    Request,
    Shortfall,
    available,
    check,
    choose_displacements,
    nearest_slots,
    timeline,
)

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
T = NOW + timedelta(days=7)  # far beyond the borrowing lead
H = timedelta(hours=1)
POLICY = CapacityPolicy(pool_units=1000, izs_reserve_units=200, quotas={1: 300, 2: 300},
                        borrow_lead=timedelta(hours=48))


def check_against(request: Request, allocations: list[Allocation], policy: CapacityPolicy,
                  now: datetime) -> Shortfall | None:
    """check() with the load swept from ``allocations``."""
    return check(request, timeline(allocations, policy, request.holder, request.start,
                                   request.end), policy, now)


def slots_among(request: Request, allocations: list[Allocation], policy: CapacityPolicy,
                now: datetime, *, count: int = 3,
                search: timedelta = timedelta(days=7)) -> list[datetime]:
    """nearest_slots() with the load over its window swept from ``allocations``."""
    load = timeline(allocations, policy, request.holder, request.start - search,
                    request.end + search)
    return nearest_slots(request, load, policy, now, count=count, search=search)


def alloc(start: datetime, hours: float, units: int, holder: int | None = 1, izs: bool = False,
          priority: str = "routine", ref: int | None = None) -> Allocation:
    return Allocation(start, start + hours * H, units, holder, izs, priority, ref)


def test_fits_in_own_share() -> None:
    assert check_against(Request(T, T + H, 300, holder=1), [], POLICY, NOW) is None


def test_others_unused_share_is_protected_far_ahead() -> None:
    # Free: 1000 - 200 reserve - 300 of holder 2 = 500 for holder 1.
    assert check_against(Request(T, T + H, 500, holder=1), [], POLICY, NOW) is None
    shortfall = check_against(Request(T, T + H, 501, holder=1), [], POLICY, NOW)
    assert shortfall is not None
    assert (shortfall.reason, shortfall.available) == ("quota", 500)


def test_borrowing_within_lead_time_takes_unused_shares_but_never_the_reserve() -> None:
    soon = NOW + timedelta(hours=3)
    assert check_against(Request(soon, soon + H, 800, holder=1), [], POLICY, NOW) is None
    shortfall = check_against(Request(soon, soon + H, 801, holder=1), [], POLICY, NOW)
    assert shortfall is not None and shortfall.reason == "izs_reserve"


def test_priority_class_may_borrow_any_time() -> None:
    assert check_against(Request(T, T + H, 800, holder=1, priority="priority"), [], POLICY, NOW) is None


def test_share_in_use_by_its_owner_is_not_protected_twice() -> None:
    # Holder 2 uses 200 of its 300: only 100 stays protected, so holder 1 may take
    # 1000 - 200 used - 200 reserve - 100 = 500 (not 300).
    existing = [alloc(T, 1, 200, holder=2)]
    assert check_against(Request(T, T + H, 500, holder=1), existing, POLICY, NOW) is None
    assert check_against(Request(T, T + H, 501, holder=1), existing, POLICY, NOW) is not None


def test_holder_over_its_share_borrows_the_unassigned_rest() -> None:
    existing = [alloc(T, 1, 450, holder=1)]
    # Free for holder 1: 1000 - 450 - 200 reserve - 300 protected of holder 2 = 50.
    assert check_against(Request(T, T + H, 50, holder=1), existing, POLICY, NOW) is None
    assert check_against(Request(T, T + H, 51, holder=1), existing, POLICY, NOW) is not None


def test_izs_may_use_the_reserve_ordinary_bookings_may_not() -> None:
    existing = [alloc(T, 1, 500, holder=None)]
    shortfall = check_against(Request(T, T + H, 1, holder=None), existing, POLICY, NOW)
    assert shortfall is not None and shortfall.reason == "quota"
    assert check_against(Request(T, T + H, 200, holder=None, izs=True),
                 [alloc(T, 1, 200, holder=1), alloc(T, 1, 300, holder=2)], POLICY, NOW) is None


def test_reserve_already_used_by_izs_is_not_held_again() -> None:
    existing = [alloc(T, 1, 200, holder=None, izs=True)]
    # 1000 - 200 used by IZS - 0 more reserve - 300 protected = 500 for holder 1.
    assert check_against(Request(T, T + H, 500, holder=1), existing, POLICY, NOW) is None


def test_pool_full_is_named_and_at_the_worst_instant() -> None:
    existing = [alloc(T, 1, 300, holder=1), alloc(T + H / 2, 1, 300, holder=2)]
    shortfall = check_against(Request(T, T + 2 * H, 300, holder=1, priority="priority"), existing,
                      POLICY, NOW)
    assert shortfall is not None
    assert shortfall.at == T + H / 2
    assert shortfall.available == 200


def test_adjacent_bookings_do_not_overlap() -> None:
    existing = [alloc(T, 1, 800, holder=None, priority="emergency")]
    assert check_against(Request(T + H, T + 2 * H, 500, holder=1), existing, POLICY, NOW) is None
    assert check_against(Request(T - H, T, 500, holder=1), existing, POLICY, NOW) is None


def test_emergency_ignores_shares_and_reserve() -> None:
    request = Request(T, T + H, 1000, holder=9, izs=True, priority="emergency")
    assert check_against(request, [], POLICY, NOW) is None


def test_emergency_displaces_future_routine_largest_first_never_priority() -> None:
    existing = [
        alloc(T, 1, 300, holder=1, ref=1),
        alloc(T, 1, 100, holder=2, ref=2),
        alloc(T, 1, 400, holder=2, priority="priority", ref=3),
    ]
    request = Request(T, T + H, 400, holder=9, izs=True, priority="emergency")
    chosen = choose_displacements(request, existing, POLICY, NOW)
    assert chosen is not None
    # 200 free; 200 more needed; the 300 routine one is enough on its own.
    assert [a.ref for a in chosen] == [1]


def test_emergency_prefers_meetings_that_have_not_started() -> None:
    running = alloc(NOW - H, 3, 500, holder=1, ref=1)
    future = alloc(NOW + H, 1, 300, holder=2, ref=2)
    request = Request(NOW + H, NOW + 2 * H, 400, holder=9, izs=True, priority="emergency")
    chosen = choose_displacements(request, [running, future], POLICY, NOW)
    assert chosen is not None and [a.ref for a in chosen] == [2]


def test_emergency_that_cannot_fit_even_by_displacing_returns_none() -> None:
    existing = [alloc(T, 1, 900, holder=9, izs=True, priority="emergency", ref=1)]
    request = Request(T, T + H, 200, holder=9, izs=True, priority="emergency")
    assert choose_displacements(request, existing, POLICY, NOW) is None


def test_fitting_emergency_displaces_nothing() -> None:
    request = Request(T, T + H, 100, holder=9, izs=True, priority="emergency")
    assert choose_displacements(request, [alloc(T, 1, 300, ref=1)], POLICY, NOW) == []


def test_timeline_segments_follow_the_load() -> None:
    existing = [alloc(T, 2, 100, holder=1), alloc(T + H, 2, 50, holder=2)]
    segments = timeline(existing, POLICY, 1, T - H, T + 4 * H)
    assert [(s.start, s.used, s.protected, s.own_used) for s in segments] == [
        (T - H, 0, 300, 0),
        (T, 100, 300, 100),
        (T + H, 150, 250, 100),
        (T + 2 * H, 50, 250, 0),
        (T + 3 * H, 0, 300, 0),
    ]


def test_available_names_the_first_rule_that_binds() -> None:
    segments = timeline([], POLICY, 1, T, T + H)
    assert available(segments[0], Request(T, T + H, 900, holder=1), POLICY, NOW) == (
        800, "izs_reserve")


def test_nearest_slots_are_the_closest_free_starts() -> None:
    existing = [alloc(T, 2, 800, holder=None, izs=True, priority="emergency")]
    request = Request(T, T + H, 300, holder=1)
    # Before, the meeting must end by T (start T - 1 h); after, it starts at T + 2 h: the
    # three nearest starts are all before, at most 1.5 hours away.
    assert slots_among(request, existing, POLICY, NOW, count=3) == [
        T - 1.5 * H, T - 1.25 * H, T - H]


def test_nearest_slots_look_both_ways() -> None:
    existing = [alloc(T - 5 * H, 7, 800, holder=None, izs=True, priority="emergency")]
    request = Request(T, T + H, 300, holder=1)
    assert slots_among(request, existing, POLICY, NOW, count=2) == [T + 2 * H, T + 2.25 * H]


def test_nearest_slots_borrow_only_within_the_lead() -> None:
    # 501 units for holder 1 never fit without borrowing (500 is its limit far ahead), so
    # the only slots are those starting within 48 hours of now.
    start = NOW + timedelta(hours=72)
    request = Request(start, start + H, 501, holder=1)
    assert check_against(request, [], POLICY, NOW) is not None
    slots = slots_among(request, [], POLICY, NOW, count=3, search=timedelta(days=2))
    assert slots == [NOW + timedelta(hours=47.5), NOW + timedelta(hours=47.75),
                     NOW + timedelta(hours=48)]


# The sweep is written out flat for speed; these compare it, on random calendars, with
# the rules applied minute by minute from their definition (docs/scheduler.md).

def _reference_room(at: datetime, allocations: list[Allocation], policy: CapacityPolicy,
                    request: Request, now: datetime) -> tuple[int, str]:
    """available() at one instant, from the definitions, with no sweep."""
    here = [a for a in allocations if a.start <= at < a.end]
    used = sum(a.units for a in here)
    izs_used = sum(a.units for a in here if a.izs)
    protected = sum(max(0, quota - sum(a.units for a in here if a.holder == owner))
                    for owner, quota in policy.quotas.items() if owner != request.holder)
    free = policy.pool_units - used
    if request.priority == "emergency":
        return free, "pool_full"
    limits = [(free, "pool_full")]
    if not request.izs:
        free -= max(0, policy.izs_reserve_units - izs_used)
        limits.append((free, "izs_reserve"))
    if not (request.priority == "priority" or request.start - now <= policy.borrow_lead):
        free -= protected
        limits.append((free, "quota"))
    return next(((units, reason) for units, reason in limits if units < request.units),
                (free, limits[-1][1]))


def _random_calendar(rng: random.Random) -> list[Allocation]:
    allocations = []
    for ref in range(rng.randint(0, 40)):
        start = T - 6 * H + rng.randint(0, 48) * timedelta(minutes=15)
        allocations.append(Allocation(
            start, start + rng.randint(1, 16) * timedelta(minutes=15), rng.randint(10, 400),
            rng.choice([None, 1, 2, 3]), rng.random() < 0.15,
            rng.choice(["routine", "routine", "priority"]), ref))
    return sorted(allocations, key=lambda a: a.start)


def _random_request(rng: random.Random) -> Request:
    start = T - 3 * H + rng.randint(0, 24) * timedelta(minutes=15)
    return Request(start, start + rng.randint(1, 8) * timedelta(minutes=15),
                   rng.randint(10, 700), rng.choice([None, 1, 2, 3]), rng.random() < 0.2,
                   rng.choice(["routine", "routine", "priority", "emergency"]))


def test_check_agrees_with_the_rules_applied_minute_by_minute() -> None:
    rng = random.Random(7)
    for _ in range(400):
        allocations, request = _random_calendar(rng), _random_request(rng)
        now = NOW if rng.random() < 0.7 else T - 47 * H  # far ahead, or within the lead
        minutes = [request.start + timedelta(minutes=m)
                   for m in range(int((request.end - request.start) / timedelta(minutes=1)))]
        rooms = [_reference_room(at, allocations, POLICY, request, now) for at in minutes]
        short = [(units, reason) for units, reason in rooms if units < request.units]
        shortfall = check_against(request, allocations, POLICY, now)
        if not short:
            assert shortfall is None
        else:
            assert shortfall is not None
            assert (shortfall.available, shortfall.reason) == min(short, key=lambda r: r[0])


def test_nearest_slots_agree_with_checking_every_start() -> None:
    rng = random.Random(11)
    for _ in range(150):
        allocations, request = _random_calendar(rng), _random_request(rng)
        search = rng.choice([H, 2 * H, 3 * H])
        slots = slots_among(request, allocations, POLICY, NOW, search=search)
        duration = request.end - request.start
        step = timedelta(minutes=15)
        expected: list[datetime] = []
        for k in range(1, int(search / step) + 1):
            for start in (request.start + k * step, request.start - k * step):
                moved = Request(start, start + duration, request.units, request.holder,
                                request.izs, request.priority)
                if start >= NOW and moved.end <= request.end + search and len(expected) < 3 \
                        and check_against(moved, allocations, POLICY, NOW) is None:
                    expected.append(start)
        assert slots == sorted(expected)


# A day's profile answers for any holder what the sweep answers for that holder.

def test_profile_segments_are_the_sweep_seen_by_each_holder() -> None:
    rng = random.Random(13)
    span_start, span_end = T - 8 * H, T + 14 * H
    for _ in range(300):
        allocations = _random_calendar(rng)
        profile = Profile.of(allocations, POLICY, span_start, span_end)
        for holder in (None, 1, 2, 3):  # 3 holds no share
            start = span_start + rng.randint(0, 80) * timedelta(minutes=15)
            end = min(span_end, start + rng.randint(1, 40) * timedelta(minutes=15))
            segments = profile.segments(POLICY.quotas.get(holder) if holder else None,
                                        holder, start, end)
            assert segments == timeline(allocations, POLICY, holder, start, end)


def test_profile_counts_admitted_allocations_in_place() -> None:
    rng = random.Random(17)
    span_start, span_end = T - 8 * H, T + 14 * H
    for _ in range(300):
        allocations = _random_calendar(rng)
        cut = rng.randint(0, len(allocations))
        profile = Profile.of(allocations[:cut], POLICY, span_start, span_end)
        untouched = profile.copy()
        for index in range(cut, len(allocations)):
            added = allocations[index]
            quota = POLICY.quotas.get(added.holder) if added.holder is not None else None
            profile.add(added, quota)
        expected = Profile.of(allocations, POLICY, span_start, span_end)
        assert (profile.times, profile.used, profile.izs_used, profile.spare) == (
            expected.times, expected.used, expected.izs_used, expected.spare)
        assert {holder: counts for holder, counts in profile.held.items() if any(counts)} \
            == expected.held
        before = Profile.of(allocations[:cut], POLICY, span_start, span_end)
        assert (untouched.times, untouched.used, untouched.spare, untouched.held) == (
            before.times, before.used, before.spare, before.held)  # add() changes a copy
