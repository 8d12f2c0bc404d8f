"""Two media nodes sharing one PostgreSQL database: routing between fronts, and a call
that survives `kill -9` of the node hosting it.

Each node is a real `multipoint serve --node NAME` process (a front and its worker
processes) on loopback, in a process group of its own so that the whole node can be
killed at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime

import aiohttp
import pytest
from sqlalchemy import select, text

from scheduler.db import Database
from scheduler.media.rooms import close_room
from scheduler.models import CallRecord, Room
from signaling.tokens import JoinGrant, issue_token
from tests.nodes import LEASE_S, SECRET, izs_bridge
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.scheduler.conftest import PG_URL
from tests.signal_client import SignalClient

pytestmark = [pytest.mark.media, pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL")]

class Caller:
    """An aiortc participant that follows redirects and, when its front goes away,
    joins again through the next live front, as the call page does."""

    def __init__(self, token: str, front: str) -> None:
        self.token, self.front = token, front
        self.fronts: list[str] = []
        self.client: SignalClient | None = None
        self.redirects = 0
        self.joins: list[str] = []  # the front of each successful join

    async def join(self) -> None:
        for _ in range(4):
            client = await SignalClient.connect(self.front.replace("http", "ws") + "/ws")
            await client.send({"type": "join", "v": 1, "token": self.token, "name": "HZS"})
            first = await client.next()
            if first["type"] == "redirect":
                self.redirects += 1
                self.front = first["front"]
                await client.close()
                continue
            assert first["type"] == "joined", first
            self.fronts = first["fronts"]
            client.peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
            offer = await client.next("offer")
            await client._answer(offer)
            client.auto_answer = True
            self.client = client
            self.joins.append(self.front)
            return
        raise AssertionError("too many redirects")

    async def rejoin_through_another_front(self) -> None:
        """Called when the socket died: try the live fronts in turn."""
        assert self.client is not None
        await self.client.close()
        self.client = None
        for attempt in range(60):
            self.front = self.fronts[(self.fronts.index(self.front) + 1) % len(self.fronts)] \
                if self.front in self.fronts else self.fronts[0]
            try:
                await self.join()
                return
            except (OSError, aiohttp.ClientError, AssertionError, TimeoutError):
                await asyncio.sleep(0.25 if attempt < 8 else 0.5)
        raise AssertionError("no front took the call back")

    def receiving(self, minimum: int = 5) -> bool:
        if self.client is None or self.client.peer is None:
            return False
        return sum(self.client.peer.frames("video").values()) >= minimum

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


async def test_a_call_is_routed_to_its_node_and_survives_the_node_being_killed(nodes) -> None:
    node_a, node_b, url = nodes
    room = izs_bridge(url)
    token = issue_token(SECRET, JoinGrant(room=room, role="guest", scheduled=True), 600)
    # Two callers: each joins a room with the other in it, so each has media to receive.
    first, second = Caller(token, node_a.front), Caller(token, node_a.front)
    try:
        await first.join()
        await second.join()
        # The IZS bridge is placed on the IZS node: front A sent both there.
        assert first.redirects == second.redirects == 1
        assert first.joins == second.joins == [node_b.front]
        assert first.fronts == [node_b.front, node_a.front]
        assert await wait_until(lambda: first.receiving() and second.receiving(), timeout=30)

        node_b.kill()
        assert await wait_until(lambda: first.client.ws.closed and second.client.ws.closed)
        await asyncio.gather(first.rejoin_through_another_front(),
                             second.rejoin_through_another_front())
        assert await wait_until(lambda: first.receiving() and second.receiving(), timeout=20)
        assert first.joins[-1] == second.joins[-1] == node_a.front
    finally:
        await first.close()
        await second.close()

    # The database: the room moved to node A's worker once, nothing doubled; the
    # interrupted call records were closed when the node was reaped.
    database = Database(url)
    try:
        with database.session() as session:
            placed = session.scalar(select(Room).where(Room.name == room))
            assert placed is not None and placed.state == "open"
            records = session.scalars(select(CallRecord).where(CallRecord.room_name == room)).all()
        assert len(records) == 4
        assert sum(r.left_at is not None for r in records) >= 2
    finally:
        database.dispose()


async def test_an_ad_hoc_room_joined_through_both_fronts_lives_on_one_node(nodes) -> None:
    node_a, node_b, url = nodes
    token = issue_token(SECRET, JoinGrant(room="porada-kraju", role="guest"), 600)
    # Node B is IZS-only: the room goes to node A, whichever front a caller comes through.
    first, second = Caller(token, node_a.front), Caller(token, node_b.front)
    database = Database(url)

    def room_state() -> tuple[str | None, str | None]:
        with database.session() as session:
            row = session.execute(text(
                "SELECT r.state, n.name FROM rooms r LEFT JOIN media_workers w "
                "ON w.id = r.worker_id LEFT JOIN media_nodes n ON n.id = w.node_id "
                "WHERE r.name = 'porada-kraju'")).first()
            return (row[0], row[1]) if row else (None, None)

    try:
        await first.join()
        await second.join()
        assert (first.redirects, second.redirects) == (0, 1)
        assert first.joins == second.joins == [node_a.front]
        assert room_state() == ("open", "node-a")
        assert await wait_until(lambda: first.receiving() and second.receiving(), timeout=30)
    finally:
        await first.close()
        await second.close()
    # Empty: its placement is let go; the next first join places it anew.
    assert await wait_until(lambda: room_state()[0] == "closed")
    database.dispose()


async def test_a_paused_node_whose_rooms_moved_does_not_keep_serving_them(nodes) -> None:
    """Fencing: a node that stopped answering (SIGSTOP) loses its lease, its room moves;
    when it resumes it must hand the room's participants over, not serve them on."""
    node_a, node_b, url = nodes
    room = izs_bridge(url)
    token = issue_token(SECRET, JoinGrant(room=room, role="guest", scheduled=True), 600)
    first, second = Caller(token, node_a.front), Caller(token, node_a.front)
    database = Database(url)

    def hosting_node() -> str | None:
        with database.session() as session:
            return session.scalar(text(
                "SELECT n.name FROM rooms r JOIN media_workers w ON w.id = r.worker_id "
                "JOIN media_nodes n ON n.id = w.node_id WHERE r.name = :room"), {"room": room})

    try:
        await first.join()
        await second.join()
        assert first.joins == second.joins == [node_b.front] and hosting_node() == "node-b"
        assert await wait_until(lambda: first.receiving() and second.receiving(), timeout=30)

        os.killpg(node_b.process.pid, signal.SIGSTOP)
        assert await wait_until(lambda: hosting_node() == "node-a", timeout=4 * LEASE_S + 5)
        os.killpg(node_b.process.pid, signal.SIGCONT)
        # Node B learns at its next renewal that the room moved: its participants are
        # told and disconnected, and join again, routed to node A.
        assert await wait_until(lambda: first.client.ws.closed and second.client.ws.closed,
                                timeout=4 * LEASE_S + 5)
        assert {m.get("reason") for m in first.client.all if m["type"] == "closed"} \
            == {"moved to another node"}
        await asyncio.gather(first.rejoin_through_another_front(),
                             second.rejoin_through_another_front())
        assert first.joins[-1] == second.joins[-1] == node_a.front
        assert await wait_until(lambda: first.receiving() and second.receiving(), timeout=20)
        async with aiohttp.ClientSession() as http, http.get(node_b.front + "/healthz") as response:
            assert (await response.json())["peers"] == 0  # node B serves nobody of it
    finally:
        if node_b.process.poll() is None:
            os.killpg(node_b.process.pid, signal.SIGCONT)
        await first.close()
        await second.close()
        database.dispose()


async def test_a_room_closed_by_another_node_ends_where_it_lives(nodes) -> None:
    """The control between nodes: a job on one node closes a room that lives on another
    (the booked time is over); the node serving it hears of it (PostgreSQL NOTIFY, the
    periodic re-read is an hour away here) and ends the call there."""
    node_a, node_b, url = nodes
    room = izs_bridge(url)
    token = issue_token(SECRET, JoinGrant(room=room, role="guest", scheduled=True), 600)
    callers = [Caller(token, node_a.front), Caller(token, node_a.front)]
    database = Database(url)
    try:
        for caller in callers:
            await caller.join()
            assert caller.joins == [node_b.front]
        assert await wait_until(lambda: all(c.receiving() for c in callers), timeout=30)
        with database.write_session() as session:  # as node A's closing job does
            assert close_room(session, room, datetime.now(UTC))
        assert await wait_until(lambda: all(c.client.ws.closed for c in callers), timeout=10)
        for caller in callers:
            assert [m["reason"] for m in caller.client.all if m["type"] == "closed"] \
                == ["the room was closed"]
        async with aiohttp.ClientSession() as http, http.get(node_b.front + "/healthz") as response:
            assert (await response.json())["peers"] == 0
    finally:
        for caller in callers:
            await caller.close()
        database.dispose()
