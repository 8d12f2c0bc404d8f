"""Run a function on a fixed tick paced by absolute deadlines on the loop's clock.

Sleeping `interval` after each call accumulates the call's own time and the loop's
lateness as drift; deadlines `start + n * interval` do not. When the loop stalls
(GC, a blocking call) a late tick or two run back to back to catch up, but a longer
stall skips the missed ticks instead of bursting them out: downstream jitter
buffers would drop a burst anyway. The tick index passed to `fn` counts skipped
ticks too, so RTP timestamps derived from it stay on the wall clock.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_ticks(
    interval: float,
    fn: Callable[[int], Awaitable[object] | object],
    *,
    max_catch_up: int = 2,
    stop: asyncio.Event | None = None,
    on_skip: Callable[[int], object] | None = None,
) -> None:
    """Call `fn(tick_index)` every `interval` seconds until cancelled or `stop` is set.

    `fn` may be a plain function or a coroutine function. `on_skip(count)` is told
    how many ticks a stall cost. An exception from `fn` is logged and the ticks go
    on: one bad tick must not silence a room for good.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    index = 0
    errors = 0
    while stop is None or not stop.is_set():
        delay = start + index * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            result = fn(index)
            # Most tick functions are plain and return None: no isawaitable() each tick.
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            errors += 1
            if errors == 1 or errors % 1000 == 0:  # a bug repeating every tick: no flood
                log.exception("tick %d failed (%d failures so far)", index, errors)
        index += 1
        behind = loop.time() - (start + index * interval)
        if behind > max_catch_up * interval:
            skipped = int(behind // interval)
            index += skipped
            if on_skip is not None:
                on_skip(skipped)
        elif delay <= 0:
            # Catching up: still yield, so one slow room cannot starve the loop.
            await asyncio.sleep(0)
