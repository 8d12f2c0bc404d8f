"""bench.sfu's ServerProcess: what it reads of the server's processes from /proc."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from bench.sfu import ServerProcess

# A "server" of two processes that sleep 5 ms at a time, so each is woken about 200
# times a second; the child ends when its parent does. The parent sleeps in a thread of
# its own (its main thread waits once, for good), as a worker's helper threads would: a
# count of the main thread alone would miss it.
SLEEPERS = """
import subprocess, sys, threading, time
subprocess.Popen([sys.executable, "-c", "import os, time\\nparent = os.getppid()\\n"
                  "while os.getppid() == parent:\\n    time.sleep(0.005)"])
def sleep_forever():
    while True:
        time.sleep(0.005)
sleeper = threading.Thread(target=sleep_forever)
sleeper.start()
sleeper.join()
"""


async def test_wakeups_are_counted_for_each_process_of_the_server(tmp_path: Path) -> None:
    server = ServerProcess("sleepers", [sys.executable, "-c", SLEEPERS], dict(os.environ),
                           tmp_path / "server.log")
    await server.start()
    try:
        deadline = time.monotonic() + 10
        while len(server.pids()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first = server.wakeups()
        await asyncio.sleep(0.5)
        later = server.wakeups()
    finally:
        await server.stop()
    assert len(first) == 2 and set(later) == set(first)
    # About a hundred each in the half second; a tenth of that whatever the machine's load.
    assert all(later[pid] - first[pid] >= 10 for pid in first), (first, later)
