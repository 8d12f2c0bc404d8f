"""Two media nodes sharing one PostgreSQL database, as real `multipoint serve --node`
processes on loopback (tests/media/test_nodes.py, tests/browser/test_node_failover.py).

Each node runs in a process group of its own, so that the whole node (front and
workers) can be killed or paused at once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, select, text

from mcu import aiortc_adapter
from scheduler.bridges import create_bridge
from scheduler.config import SchedulerConfig
from scheduler.db import Database
from scheduler.models import Organisation
from scheduler.organisations import org_info
from scheduler.seed import seed
from scheduler.units import ParticipantMix
from tests.conftest import free_port
from tests.scheduler.conftest import PG_URL, pg_schema_url

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
    schema = "test_" + secrets.token_hex(6)
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_schema_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


async def start_node(tmp_path: Path, url: str, name: str, labels: str = "") -> Node:
    port = free_port()
    env = dict(os.environ, MULTIPOINT_DATABASE_URL=url, MULTIPOINT_DATA_DIR=str(tmp_path / name),
               MULTIPOINT_MEDIA_ADDRESSES="127.0.0.1", MULTIPOINT_SECRET_KEY=SECRET,
               MULTIPOINT_PUBLIC_URL=f"http://127.0.0.1:{port}", MULTIPOINT_WORKERS="1",
               MULTIPOINT_NODE_LABELS=labels, MULTIPOINT_NODE_LEASE_SECONDS=str(LEASE_S),
               MULTIPOINT_SCHEDULER_JOBS="false")
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
                    if (await response.json()).get("workers") == 1:
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



def izs_bridge(url: str) -> str:
    database = Database(url)
    try:
        with database.session() as session:
            seed(session, local_workers=0)
            izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
            return create_bridge(session, SchedulerConfig(), org_info(session, izs.id),
                                 "Povodně", ParticipantMix(hd=5)).room_name
    finally:
        database.dispose()
