"""The tick pacer: absolute deadlines, and skipping (not bursting) after a stall."""

from __future__ import annotations

import asyncio
import time

from mcu.mixer.pacer import run_ticks


async def test_ticks_are_numbered_and_stop_on_the_event() -> None:
    stop = asyncio.Event()
    seen: list[int] = []

    async def tick(index: int) -> None:
        seen.append(index)
        if len(seen) == 5:
            stop.set()

    await asyncio.wait_for(run_ticks(0.002, tick, stop=stop), timeout=30)
    assert len(seen) == 5
    assert seen == sorted(seen) and seen[0] == 0


async def test_a_long_stall_skips_ticks_instead_of_bursting_them() -> None:
    stop = asyncio.Event()
    seen: list[int] = []
    skipped: list[int] = []

    def tick(index: int) -> None:
        seen.append(index)
        if len(seen) == 3:
            time.sleep(0.1)  # the loop is blocked for ten ticks
        if len(seen) == 8:
            stop.set()

    await asyncio.wait_for(run_ticks(0.01, tick, stop=stop, on_skip=skipped.append), timeout=30)
    # The indices jump over the stall (so timestamps stay on the clock), and the
    # calls after it did not replay the missed ticks one by one.
    assert seen[3] - seen[2] >= 5
    assert sum(skipped) >= 5
    assert len(seen) == 8


async def test_a_failing_tick_does_not_stop_the_ticks() -> None:
    stop = asyncio.Event()
    seen: list[int] = []

    def tick(index: int) -> None:
        seen.append(index)
        if len(seen) == 6:
            stop.set()
        if len(seen) == 2:
            raise RuntimeError("one bad tick")

    await asyncio.wait_for(run_ticks(0.002, tick, stop=stop), timeout=30)
    assert len(seen) == 6
