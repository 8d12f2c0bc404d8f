"""A worker process that cannot be started (mcu/pool.py): the supervisor tries again,
so each failed attempt must give back what it took."""

from __future__ import annotations

import os
import resource

import pytest

from mcu.pool import WorkerProcess, WorkerState


def open_descriptors() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


async def test_a_worker_that_cannot_be_started_leaves_no_descriptor_open() -> None:
    worker = WorkerProcess(WorkerState(index=0, capacity_units=100), {},
                           on_event=lambda *args: None, on_lost=lambda index: None)
    before = open_descriptors()
    # Room for the channel's socket pair and nothing more: starting the process (its
    # /dev/null, its pipes) fails with EMFILE, as on a front out of descriptors.
    free = [fd for fd in range(max(before) + 3) if fd not in before][:2]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (free[1] + 1, hard))
    try:
        with pytest.raises(OSError) as failure:
            await worker._run_once()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert worker.process is None
    # Closed by the failed start itself, not left to the socket object's finalizer: the
    # failure is still held here (as by the supervisor's log record, or a handler that
    # keeps records), and with it the frame that made the socket pair.
    assert failure.value.errno is not None
    assert open_descriptors() - before == set(), "a failed start left the channel's socket open"
