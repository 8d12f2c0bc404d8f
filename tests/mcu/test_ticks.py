"""The worker's ticks: absolute deadlines on one grid, skipping (not bursting) after a
stall, and going on after a failing tick."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import uvloop

from mcu.ticks import Ticker


async def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_ticks_are_numbered_and_come_on_their_deadlines() -> None:
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, float]] = []
    ticker = Ticker(0.01, lambda index: seen.append((index, loop.time())))
    started = loop.time()
    ticker.start()
    await _until(lambda: len(seen) >= 8)
    ticker.stop()
    assert [index for index, _ in seen[:8]] == list(range(8))
    first = math.ceil(started / 0.01)  # the first multiple of the interval from the start
    for index, at in seen:
        assert at >= (first + index) * 0.01 - 0.001  # never early
    # Absolute deadlines: eight ticks span seven intervals, not seven plus each tick's lateness.
    assert seen[7][1] - seen[0][1] < 7 * 0.01 + 0.05


def test_tickers_of_related_intervals_fall_due_together() -> None:
    """A 20 ms ticker and a 100 ms one started apart share instants, on uvloop (the
    worker's loop) as on asyncio's own: one wake-up serves both."""
    async def check() -> None:
        audio = Ticker(0.02, lambda index: None)
        audio.start()
        await asyncio.sleep(0.013)
        control = Ticker(0.1, lambda index: None)
        control.start()
        assert control._handle is not None
        due = control._handle.when()
        audio_deadlines = [audio._deadline(i) for i in range(12)]
        assert any(math.isclose(due, at, abs_tol=1e-9) for at in audio_deadlines)
        audio.stop()
        control.stop()
        assert audio._handle is None and control._handle is None

    uvloop.run(check())
    asyncio.run(check())


async def test_a_tick_may_stop_its_ticker_and_a_stopped_one_starts_anew() -> None:
    seen: list[int] = []

    def tick(index: int) -> None:
        seen.append(index)
        if len(seen) == 3:
            ticker.stop()

    ticker = Ticker(0.002, tick)
    ticker.start()
    await _until(lambda: not ticker.running)
    await asyncio.sleep(0.02)
    assert seen == [0, 1, 2]  # nothing after the stop
    ticker.start()
    await _until(lambda: len(seen) >= 5)
    ticker.stop()
    assert seen[3] == 0  # numbered from the new start


async def test_a_long_stall_skips_ticks_instead_of_bursting_them() -> None:
    seen: list[int] = []
    skipped: list[int] = []

    def tick(index: int) -> None:
        seen.append(index)
        if len(seen) == 3:
            time.sleep(0.1)  # the loop is blocked for ten ticks

    ticker = Ticker(0.01, tick, on_skip=skipped.append)
    ticker.start()
    await _until(lambda: len(seen) >= 8)
    ticker.stop()
    # The indices jump over the stall (so timestamps stay on the clock), and the calls
    # after it did not replay the missed ticks one by one.
    assert seen[3] - seen[2] >= 5
    assert sum(skipped) >= 5


async def test_without_catch_up_a_late_tick_runs_at_once_and_the_missed_are_dropped() -> None:
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, float]] = []

    def tick(index: int) -> None:
        seen.append((index, loop.time()))
        if len(seen) == 2:
            time.sleep(0.12)  # two ticks and a bit

    ticker = Ticker(0.05, tick, max_catch_up=0)
    ticker.start()
    await _until(lambda: len(seen) >= 4)
    ticker.stop()
    (stalled, stalled_at), (after, after_at), (then, then_at) = seen[1:4]
    # One tick right after the stall, numbered past the one it missed; the next one not
    # in a burst behind it but on its own deadline.
    assert after == stalled + 2
    assert after_at < stalled_at + 0.12 + 0.045
    assert then == after + 1
    assert then_at >= ticker._deadline(then) - 0.001


async def test_a_failing_tick_does_not_stop_the_ticks(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def tick(index: int) -> None:
        seen.append(index)
        if len(seen) == 2:
            raise RuntimeError("one bad tick")

    ticker = Ticker(0.002, tick, name="test ticker")
    ticker.start()
    await _until(lambda: len(seen) >= 6)
    ticker.stop()
    assert ticker.errors == 1
    assert "test ticker: tick 1 failed" in caplog.text


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Ticker(0, lambda index: None)
