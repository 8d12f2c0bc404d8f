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
    # Switched to forwarded, a participant keeps its units; the composite stays while
    # someone is mixed, and goes with the last.
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
