"""Two media nodes sharing one PostgreSQL database, as real `multipoint serve --node`
processes on loopback (tests/media/test_nodes.py, tests/browser/test_node_failover.py).

Each node runs in a process group of its own, so that the whole node (front and
workers) can be killed or paused at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bench.scale import izs_bridge  # noqa: F401  (the tests' IZS bridge is the bench's)
from mcu import aiortc_adapter
from tests.conftest import free_port
from tests.scheduler.conftest import scratch_schema

SECRET = "test-secret-" + "n" * 30
LEASE_S = 2


@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def front(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """The whole node at once, front and workers, as a machine failure would."""
        os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def shared_database_url() -> Iterator[str]:
    """A PostgreSQL schema of its own for the nodes of one test."""
    with scratch_schema() as url:
        yield url


async def start_node(tmp_path: Path, url: str, name: str, labels: str = "",
                     extra_env: dict[str, str] | None = None) -> Node:
    port = free_port()
    env = dict(os.environ, MULTIPOINT_DATABASE_URL=url, MULTIPOINT_DATA_DIR=str(tmp_path / name),
               MULTIPOINT_MEDIA_ADDRESSES="127.0.0.1", MULTIPOINT_SECRET_KEY=SECRET,
               MULTIPOINT_PUBLIC_URL=f"http://127.0.0.1:{port}", MULTIPOINT_WORKERS="1",
               MULTIPOINT_NODE_LABELS=labels, MULTIPOINT_NODE_LEASE_SECONDS=str(LEASE_S),
               MULTIPOINT_SCHEDULER_JOBS="false",
               # What the tests see of rooms closed elsewhere comes by PostgreSQL's
               # notices, not by the periodic re-read that backs them up.
               MULTIPOINT_ROOM_RESYNC_SECONDS="3600")
    env.update(extra_env or {})
    log = (tmp_path / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "multipoint", "serve", "--node", name, "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    node = Node(name, port, process)
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"{name}.log").read_text()[-2000:]
            try:
                async with http.get(node.front + "/healthz") as response:
                    if (await response.json()).get("workers") == int(env["MULTIPOINT_WORKERS"]):
                        return node
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"node {name} did not start: " + (tmp_path / f"{name}.log").read_text()[-2000:])


@pytest.fixture
async def nodes(tmp_path: Path, shared_database_url: str) -> AsyncIterator[tuple[Node, Node, str]]:
    """Node A (general) and node B (labelled izs); yields them and the database URL."""
    database_url = shared_database_url
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    started: list[Node] = []
    try:
        # One after the other: the first one creates the schema.
        started.append(await start_node(tmp_path, database_url, "node-a"))
        started.append(await start_node(tmp_path, database_url, "node-b", labels="izs"))
        yield started[0], started[1], database_url
    finally:
        for node in started:
            if node.process.poll() is None:
                node.kill()
            node.process.wait(10)


@pytest.fixture
async def spreading_nodes(tmp_path: Path, shared_database_url: str,
                          ) -> AsyncIterator[tuple[Node, Node, str]]:
    """Two general nodes that take part of a room living on the other one whenever a
    participant joins through their front (MULTIPOINT_SPREAD_ROOMS=always)."""
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    spread = {"MULTIPOINT_SPREAD_ROOMS": "always", "MULTIPOINT_PIPE_HOST": "127.0.0.1"}
    started: list[Node] = []
    try:
        started.append(await start_node(tmp_path, shared_database_url, "node-a", extra_env=spread))
        started.append(await start_node(tmp_path, shared_database_url, "node-b", extra_env=spread))
        yield started[0], started[1], shared_database_url
    finally:
        for node in started:
            if node.process.poll() is None:
                node.kill()
            node.process.wait(10)
