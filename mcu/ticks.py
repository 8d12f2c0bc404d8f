"""Periodic work of a media worker on one clock: the mixers' audio and video ticks and the
worker's control tick.

Each :class:`Ticker` calls a plain function on absolute deadlines, ``n * interval`` on the
event loop's clock: sleeping ``interval`` after each call would accumulate the call's own
time and the loop's lateness as drift. Deadlines are multiples of the interval, not
offsets from when a ticker started, so that tickers of the same interval (every mixed
room's 20 ms audio tick) and of intervals that divide each other (the worker's 100 ms
tick) fall due at the same instants and one wake-up of the process serves them all.
A wake-up from a timer is what an idle tick mostly costs: on the 2-vCPU machine of
docs/benchmarks.md a process's timer wake-up costs about 80 µs of CPU, and an asyncio
task per tick (a future, a handle and a task step each time) as much again; a chain of
``call_at`` handles has no task.

When the loop stalls (a blocking call, a garbage collection) a late tick or two run back
to back to catch up, but a longer stall skips the missed ticks instead of bursting them
out: downstream jitter buffers would drop a burst anyway. The index passed to the
function counts skipped ticks too, so RTP timestamps derived from it stay on the clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Ticker:
    """Calls ``fn(index)`` every ``interval`` seconds, from :meth:`start` until :meth:`stop`.

    ``fn`` may call :meth:`stop` (the ticker then ends after it). An exception from ``fn``
    is logged and the ticks go on: one bad tick must not silence a room for good.
    ``max_catch_up``: how many intervals late a tick may run before the missed ones are
    skipped; ``on_skip(count)`` is told how many a stall cost.
    """

    def __init__(self, interval: float, fn: Callable[[int], object], *, max_catch_up: int = 2,
                 on_skip: Callable[[int], object] | None = None, name: str = "") -> None:
        if interval <= 0:
            raise ValueError("a ticker's interval must be positive")
        self.interval = interval
        self.name = name or getattr(fn, "__qualname__", "ticker")
        self._fn = fn
        self._max_catch_up = max_catch_up
        self._on_skip = on_skip
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._grid = 0  # the deadline of tick 0 is self._grid * interval
        self._index = 0
        self._running = False
        self.errors = 0

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start ticking at the next deadline on the grid (again after a stop: anew)."""
        if self._running:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._grid = math.ceil(loop.time() / self.interval)
        self._index = 0
        self._running = True
        self._schedule()

    def stop(self) -> None:
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _deadline(self, index: int) -> float:
        # Multiplied, not summed: every ticker of an interval computes the same instants.
        return (self._grid + index) * self.interval

    def _schedule(self) -> None:
        assert self._loop is not None
        self._handle = self._loop.call_at(self._deadline(self._index), self._fire)

    def _fire(self) -> None:
        self._handle = None
        try:
            self._fn(self._index)
        except Exception:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:  # a bug repeating every tick: no flood
                logger.exception("%s: tick %d failed (%d failures so far)",
                                 self.name, self._index, self.errors)
        if not self._running:  # stopped by fn
            return
        self._index += 1
        assert self._loop is not None
        behind = self._loop.time() - self._deadline(self._index)
        if behind > self._max_catch_up * self.interval:
            skipped = int(behind // self.interval)
            self._index += skipped
            if skipped and self._on_skip is not None:
                self._on_skip(skipped)
        # A deadline already past runs at the loop's next iteration, after its I/O: one
        # slow room cannot starve the loop while it catches up.
        self._schedule()
