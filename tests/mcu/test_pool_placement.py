"""The front's placement of participants on its workers (mcu/pool.py): units reserved
per participant, and a mixed room's composite once on each worker that mixes it."""

from __future__ import annotations

from mcu.pool import WorkerPool


async def test_a_rooms_composite_is_reserved_once_on_each_worker_that_mixes_it() -> None:
    pool = WorkerPool(2, {}, capacity_units=[500, 500], on_event=lambda *args: None,
                      on_lost=lambda index: None, mixed_room_units=400)
    worker = pool.place([], 4, mixed_room="porada")
    assert worker == 0
    pool.reserve(worker, "unit-1", 4, mixed_room="porada")
    assert pool.states[0].used_units == 404
    # The room's next mixed participant costs its own units: the composite is paid.
    assert pool.place([0], 4, mixed_room="porada") == 0
    pool.reserve(0, "unit-2", 4, mixed_room="porada")
    assert pool.states[0].used_units == 408
    # Another room's first mixed participant needs a composite of its own: not on 0.
    assert pool.place([], 4, mixed_room="briefing") == 1
    assert pool.place([0], 4, mixed_room="briefing") == 1  # its own room's worker is full for it
    assert pool.place([0], 11) == 0  # a forwarded participant fits beside the composite
    # No longer mixed (set_mixed alone): the composite stays while someone is mixed, and
    # goes with the last.
    pool.set_mixed(0, "unit-2", None)
    assert pool.states[0].used_units == 408
    pool.release(0, "unit-1")
    assert pool.states[0].used_units == 4
    pool.set_mixed(0, "unit-2", "porada")  # mixed again: the composite again
    assert pool.states[0].used_units == 404
    pool.release(0, "unit-2")
    assert pool.states[0].used_units == 0 and not pool.states[0].mixed
    # With nothing to place for mixing, nothing changes for anyone else.
    assert WorkerPool(1, {}, capacity_units=[10], on_event=lambda *args: None,
                      on_lost=lambda index: None).place([], 11) is None


async def test_a_change_of_mode_is_charged_and_refused_past_capacity_unless_it_frees_or_is_izs() -> None:
    pool = WorkerPool(1, {}, capacity_units=[30], on_event=lambda *args: None,
                      on_lost=lambda index: None, mixed_room_units=16)
    pool.reserve(0, "host", 11)
    assert pool.change(0, "host", 4, "sal")  # mixed: 4 and the composite, 20 of 30
    assert pool.placement(0, "host") == (4, "sal") and pool.states[0].used_units == 20
    pool.reserve(0, "unit", 4, "sal")
    # Forwarded, the unit would take 11 instead of 4: 31. Refused, and nothing changed.
    assert not pool.change(0, "unit", 11, None)
    assert pool.placement(0, "unit") == (4, "sal") and pool.states[0].used_units == 24
    assert pool.change(0, "unit", 11, None, priority=True)  # IZS: never refused for load
    assert pool.states[0].used_units == 31
    # A change that frees units always goes, even on a worker past its capacity.
    assert pool.change(0, "unit", 4, "sal") and pool.states[0].used_units == 24
    pool.release(0, "unit")
    assert pool.change(0, "host", 11, None)
    assert pool.placement(0, "host") == (11, None) and pool.states[0].used_units == 11
    assert not pool.states[0].mixed  # the composite went with the last mixed participant


def _ready_pool(capacities: list[int]) -> WorkerPool:
    pool = WorkerPool(len(capacities), {}, capacity_units=capacities,
                      on_event=lambda *args: None, on_lost=lambda index: None)
    for state in pool.states:
        state.ready = True
    return pool


async def test_a_worker_restarting_after_a_crash_is_passed_over_while_another_runs() -> None:
    pool = _ready_pool([100, 100])
    pool.states[0].ready = False  # crashed: its process is being started again
    # The scheduler's choice for the room is the restarting worker: the rejoin goes to
    # the running one instead of waiting for the restart.
    assert pool.place([], 11, preferred=0) == 1
    # The room still lists its dead worker (its participants are being let go): a
    # participant of the room goes to a running worker, and the room spans it.
    assert pool.place([0], 11) == 1
    assert pool.place([0, 1], 11, preferred=0) == 1
    # IZS, every running worker full: still never to the restarting one.
    pool.reserve(1, "full", 100)
    assert pool.place([0], 11, priority=True) == 1
    assert pool.place([], 11, preferred=0, priority=True) == 1
    assert pool.place([0], 11) is None
    # With every worker restarting, the room's own worker still takes it (the join
    # waits for its restart rather than being refused).
    pool.states[1].ready = False
    pool.release(1, "full")
    assert pool.place([1], 11, preferred=0) == 1
    assert pool.place([], 11, preferred=1) == 1
