"""Two media nodes sharing one PostgreSQL database: routing between fronts, and a call
that survives `kill -9` of the node hosting it.

Each node is a real `multipoint serve --node NAME` process (a front and its worker
processes) on loopback, in a process group of its own so that the whole node can be
killed at once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, text

from mcu import aiortc_adapter
from scheduler.access.users import create_local_user
from scheduler.booking.dial_in import bridge_number
from scheduler.db import Database
from scheduler.media.rooms import close_room
from scheduler.models import AuditEntry, CallRecord, Room, StandingBridge, User
from signaling.sip.message import SipMessage, parse, tag_of
from signaling.tokens import JoinGrant, issue_token
from tests.conftest import free_port
from tests.media.test_sip_units import OFFER, hears, sip_request
from tests.nodes import LEASE_S, SECRET, Node, izs_bridge, start_node
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.scheduler.conftest import PG_URL
from tests.signal_client import SignalClient
from tests.sip_unit import BARESIP, Baresip

pytestmark = [pytest.mark.media, pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL")]

OPERATOR_PASSWORD = "correct horse battery"

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


async def join_through(node_front: str, token: str, name: str) -> SignalClient:
    """An aiortc participant joining through this front; it must not be redirected."""
    client = await SignalClient.connect(node_front.replace("http", "ws") + "/ws")
    client.peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    await client.send({"type": "join", "v": 1, "token": token, "name": name})
    first = await client.next(timeout=20)
    assert first["type"] == "joined", first  # not a redirect: this node takes part
    await client._answer(await client.next("offer", timeout=20))
    client.auto_answer = True
    return client


async def test_a_room_joined_through_both_fronts_spreads_over_both_nodes(spreading_nodes) -> None:
    """Rooms across nodes: participants who joined through each node's front stay on that
    node's worker; the nodes' workers pipe each track to each other, the fronts exchange
    the rest through the database, and everyone receives everyone."""
    node_a, node_b, url = spreading_nodes
    room = "krizovy-stab"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    host = issue_token(SECRET, JoinGrant(room=room, role="host"), 600)
    database = Database(url)
    clients: list[SignalClient] = []

    def parts() -> dict[str, int]:
        with database.session() as session:
            return dict(session.execute(text(
                "SELECT n.name, json_array_length(p.participants) FROM room_parts p "
                "JOIN media_nodes n ON n.id = p.node_id WHERE p.room_name = :room"),
                {"room": room}).all())

    def listed(client: SignalClient) -> set[str]:
        lists = client.of_type("participants")
        return {p["id"] for p in lists[-1]["participants"]} if lists else set()

    try:
        for front, token, name in ((node_a.front, guest, "Praha"), (node_a.front, guest, "Brno"),
                                   (node_b.front, host, "Ostrava")):
            clients.append(await join_through(front, token, name))
        ids = [c.of_type("joined")[0]["participant"] for c in clients]
        praha, brno, ostrava = clients

        def everyone_receives_everyone() -> bool:
            for client, me in zip(clients, ids, strict=True):
                others = set(ids) - {me}
                for kind in ("video", "audio"):
                    frames = client.live_frames(kind)
                    if not all(frames.get(other, 0) >= 5 for other in others):
                        return False
            return True

        assert await wait_until(everyone_receives_everyone, timeout=45), \
            [(c.live_frames("video"), c.live_frames("audio")) for c in clients]
        # Each node holds its part: node A two participants, node B one.
        assert await wait_until(lambda: parts() == {"node-a": 2, "node-b": 1})
        # Each with its worker's pipe and pipe secret: what the other keys its SRTP with.
        with database.session() as session:
            workers = session.scalars(text("SELECT workers FROM room_parts WHERE room_name = :room"),
                                      {"room": room}).all()
        assert all(len(w) == 1 and len(w[0]) == 3 and len(w[0][2]) == 64 for w in workers)
        # One participant list, room-wide, on both fronts.
        assert await wait_until(lambda: all(listed(c) == set(ids) for c in clients))

        # Moderation and chat across nodes: the host on node B mutes a participant on
        # node A, locks the room (a guest joining through node A is refused), and its
        # chat reaches node A's participants.
        await ostrava.send({"type": "mute", "participant": ids[0]})
        assert (await praha.next("muted"))["by"] == "Ostrava"
        await ostrava.send({"type": "request_unmute", "participant": ids[0]})
        assert (await praha.next("unmute_requested"))["by"] == "Ostrava"
        await ostrava.send({"type": "chat", "text": "evakuace Zábrdovic"})
        assert (await brno.next("chat"))["text"] == "evakuace Zábrdovic"
        # One recording for the room, on node B's worker (every track reaches it):
        # node A's participants see it as the room's.
        await ostrava.send({"type": "record", "active": True})
        assert await wait_until(lambda: praha.of_type("participants")[-1]["recording"], timeout=20)
        await ostrava.send({"type": "record", "active": False})
        assert await wait_until(lambda: not praha.of_type("participants")[-1]["recording"],
                                timeout=20)
        await ostrava.send({"type": "lock", "locked": True})
        assert await wait_until(lambda: praha.of_type("participants")[-1]["locked"])

        async def refused(front: str) -> str:
            late = await SignalClient.connect(front.replace("http", "ws") + "/ws")
            try:
                await late.send({"type": "join", "v": 1, "token": guest, "name": "Pozdě"})
                return str((await late.next("error"))["code"])
            finally:
                await late.close()

        assert await refused(node_a.front) == "room_locked"

        # Node B's participant leaves: node A's stop forwarding it and see it gone.
        await ostrava.send({"type": "leave"})
        assert await wait_until(lambda: parts() == {"node-a": 2})
        assert await wait_until(lambda: listed(praha) == set(ids[:2]))
        assert await wait_until(lambda: set(praha.live_frames("video")) == {ids[1]})
        # Node B has nobody in the room now; the lock, room-wide, is in the database.
        assert await refused(node_b.front) == "room_locked"
    finally:
        for client in clients:
            await client.close()
    # Everyone gone: the ad-hoc room's placement is let go, no part is left.
    assert await wait_until(lambda: parts() == {})

    def state() -> str | None:
        with database.session() as session:
            return session.scalar(text("SELECT state FROM rooms WHERE name = :room"), {"room": room})

    # Its placement is released after the last part goes (the last front's leave).
    assert await wait_until(lambda: state() == "closed")
    database.dispose()


class Operator:
    """The operator signed in to one node's admin web (an aiohttp session, its CSRF)."""

    def __init__(self, front: str, http: aiohttp.ClientSession, csrf: str) -> None:
        self.front, self.http, self.csrf = front, http, csrf

    @classmethod
    async def sign_in(cls, front: str, database: Database) -> Operator:
        with database.session() as session:
            if session.scalar(select(User.id).where(User.name == "operator")) is None:
                create_local_user(session, "operator", "operator", OPERATOR_PASSWORD)
        # unsafe: the cookies of an IP host
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with http.get(f"{front}/admin/sign-in") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
        async with http.post(f"{front}/admin/sign-in", data={
                "csrf": csrf, "name": "operator", "password": OPERATOR_PASSWORD, "next": ""}) as signed:
            await signed.read()
        async with http.get(f"{front}/admin/operating") as page:
            assert page.status == 200, await page.text()
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text()).group(1)
        return cls(front, http, csrf)

    async def act(self, room: str, action: str, participant: str = "") -> str:
        """One of the page's buttons; the page's answer (``done=mute``, ``gone=mute``...)."""
        async with self.http.post(f"{self.front}/admin/operating/act", allow_redirects=False, data={
                "csrf": self.csrf, "room": room, "participant": participant,
                "action": action}) as response:
            assert response.status == 303, await response.text()
            return response.headers["Location"].partition("?")[2].partition("#")[0]

    async def live(self) -> str:
        async with self.http.get(f"{self.front}/admin/operating/live") as page:
            assert page.status == 200
            return await page.text()

    async def close(self) -> None:
        await self.http.close()


UNIT_HZ = 1000  # the unit's tone: not the pages' (tests.peers.ToneTrack)


@pytest.mark.skipif(BARESIP is None, reason="no baresip (scripts/test installs it)")
async def test_a_unit_calling_a_node_that_takes_part_of_a_room_joins_the_rooms_spread(
        tmp_path, shared_database_url: str) -> None:
    """A room unit calling node B, which takes part of a bridge whose page is on node A,
    is one of that room's participants: node B's part written, listed and heard on node A's page.
    It sat in a room of the same name on node B alone (RoomUnits._place ignored the
    admission's spread), seen and heard by nobody of node A's part."""
    url = shared_database_url
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    sip_port = free_port()
    spread = {"MULTIPOINT_SPREAD_ROOMS": "always", "MULTIPOINT_PIPE_HOST": "127.0.0.1"}
    started = [await start_node(tmp_path, url, "node-a", extra_env=spread)]
    started.append(await start_node(tmp_path, url, "node-b",
                                    extra_env={**spread, "MULTIPOINT_SIP_PORT": str(sip_port)}))
    node_a = started[0]
    room = izs_bridge(url)
    database = Database(url)
    unit = Baresip(tmp_path / "unit", tone_hz=UNIT_HZ)
    page: SignalClient | None = None

    def parts() -> dict[str, int]:
        with database.session() as session:
            return dict(session.execute(text(
                "SELECT n.name, json_array_length(p.participants) FROM room_parts p "
                "JOIN media_nodes n ON n.id = p.node_id WHERE p.room_name = :room"),
                {"room": room}).all())

    def listed() -> set[str]:
        assert page is not None
        lists = page.of_type("participants")
        return {p["name"] for p in lists[-1]["participants"]} if lists else set()

    try:
        token = issue_token(SECRET, JoinGrant(room=room, role="host", scheduled=True), 600)
        page = await join_through(node_a.front, token, "Praha")
        assert await wait_until(lambda: listed() == {"Praha"})  # node A's room alone: no part yet
        await unit.start()
        await unit.call(f"sip:{room}@127.0.0.1:{sip_port}")
        # Node B took part of the room, and node A's page lists the unit.
        assert await wait_until(lambda: parts() == {"node-a": 1, "node-b": 1}, timeout=15), parts()
        assert await wait_until(lambda: len(listed()) == 2 and "Praha" in listed(), timeout=15), listed()
        # And heard there: the unit's tone comes over the nodes' pipe to node A's page.
        assert await wait_until(lambda: hears(page, UNIT_HZ), timeout=20)
    finally:
        await unit.stop()
        if page is not None:
            await page.close()
        database.dispose()
        for node in started:
            if node.process.poll() is None:
                node.kill()
            node.process.wait(10)


async def sip_exchange(sock: socket.socket, port: int, request: bytes, wanted: Callable[[SipMessage], bool],
                       timeout: float = 15) -> SipMessage:
    """Send ``request`` over UDP to 127.0.0.1:``port`` (none: only wait); the first
    message that comes back and is ``wanted``."""
    loop = asyncio.get_running_loop()
    if request:
        sock.sendto(request, ("127.0.0.1", port))
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            message = parse(sock.recv(65536))
        except BlockingIOError:
            await asyncio.sleep(0.05)
            continue
        if wanted(message):
            return message
    raise AssertionError("nothing came back")


async def test_a_unit_calling_a_node_that_takes_part_of_a_room_locked_on_the_other_is_kept_out(
        tmp_path, shared_database_url: str) -> None:
    """A bridge lives on node A, where its host locks it; node B takes part of rooms
    (MULTIPOINT_SPREAD_ROOMS=always) and takes the units' calls. A unit calling node B for
    the room is refused 403, as a page joining through node B is (node B reads the lock
    from the database); and one that dialled the meeting's number before the lock and
    keys in its PIN after it is hung up with 403, not let in."""
    url = shared_database_url
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    sip_port = free_port()
    spread = {"MULTIPOINT_SPREAD_ROOMS": "always", "MULTIPOINT_PIPE_HOST": "127.0.0.1"}
    started = [await start_node(tmp_path, url, "node-a", extra_env=spread)]
    started.append(await start_node(tmp_path, url, "node-b",
                                    extra_env={**spread, "MULTIPOINT_SIP_PORT": str(sip_port)}))
    node_a, node_b = started
    room = izs_bridge(url)
    database = Database(url)
    with database.session() as session:
        made = session.scalar(select(StandingBridge).where(StandingBridge.room_name == room))
        number, pin = bridge_number(made.id), made.dial_in_pin
    unit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unit.bind(("127.0.0.1", 0))
    unit.setblocking(False)
    local = unit.getsockname()[1]
    page: SignalClient | None = None

    def request(method: str, uri: str, call_id: str, **details: Any) -> bytes:
        return sip_request(method, uri, transport="UDP", local_port=local, call_id=call_id, **details)

    def locked_in_database() -> bool:
        with database.session() as session:
            return bool(session.scalar(text("SELECT bool_or(locked) FROM room_parts WHERE room_name = :room"),
                                       {"room": room}))

    def parts() -> list[str]:
        with database.session() as session:
            return list(session.scalars(text(
                "SELECT n.name FROM room_parts p JOIN media_nodes n ON n.id = p.node_id "
                "WHERE p.room_name = :room ORDER BY n.name"), {"room": room}))

    def final(call_id: str) -> Callable[[SipMessage], bool]:
        return lambda m: not m.is_request and m.call_id == call_id and m.status >= 200

    async def lock(locked: bool) -> None:
        assert page is not None
        await page.send({"type": "lock", "locked": locked})
        assert await wait_until(lambda: page.of_type("participants")[-1]["locked"] == locked)
        assert await wait_until(lambda: locked_in_database() == locked, timeout=10)

    operator: Operator | None = None
    try:
        token = issue_token(SECRET, JoinGrant(room=room, role="host", scheduled=True), 600)
        page = await join_through(node_a.front, token, "Praha")
        await lock(True)
        # Node B has nothing of the room: the lock it reads from the database keeps the
        # unit out, as it keeps out a page joining through node B.
        refused = await sip_exchange(unit, sip_port, request("INVITE", f"sip:{room}@127.0.0.1", "late",
                                                             body=OFFER, branch="z9hG4bKlate"),
                                     final("late"))
        assert refused.status == 403, refused

        # Into node B's lobby by the meeting's number while the room is open; locked
        # while it keys in its PIN (node B's part of the room knows it: its operator's
        # page offers to unlock it).
        await lock(False)
        by_number = f"sip:{number}@127.0.0.1"
        ok = await sip_exchange(unit, sip_port, request("INVITE", by_number, "lobby", body=OFFER,
                                                        branch="z9hG4bKlobby"), final("lobby"))
        assert ok.status == 200, ok
        to_tag = tag_of(ok.get("To"))
        unit.sendto(request("ACK", by_number, "lobby", to_tag=to_tag, branch="z9hG4bKlobby"),
                    ("127.0.0.1", sip_port))
        await lock(True)
        operator = await Operator.sign_in(node_b.front, database)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while 'value="unlock"' not in await operator.live():
            assert loop.time() < deadline, "node B did not learn of the lock"
            await asyncio.sleep(0.2)
        for index, key in enumerate([*pin, "#"]):
            unit.sendto(request("INFO", by_number, "lobby", cseq=index + 2, to_tag=to_tag,
                                body=f"Signal={key}\r\n".encode(), branch=f"z9hG4bKpin{index}",
                                content_type="application/dtmf-relay"), ("127.0.0.1", sip_port))
        bye = await sip_exchange(unit, sip_port, b"", lambda m: m.is_request and m.method == "BYE")
        assert "cause=403" in bye.get("Reason"), bye.get("Reason")
        await asyncio.sleep(1)
        assert parts() == ["node-a"]  # node B has no part of the room: nobody of it got in
        assert {p["name"] for p in page.of_type("participants")[-1]["participants"]} == {"Praha"}

        # The same with the PIN keyed in just after the lock, before node B hears of it:
        # the lock in the database as node A writes it, its notice (what node B hears it
        # by) held back. Node B reads the lock from the database, as a new call's
        # admission does, and keeps the unit out; its own flag let it in.
        await lock(False)
        deadline = loop.time() + 10
        while 'value="unlock"' in await operator.live():
            assert loop.time() < deadline, "node B did not learn the room was opened"
            await asyncio.sleep(0.2)
        ok = await sip_exchange(unit, sip_port, request("INVITE", by_number, "lobby-2", body=OFFER,
                                                        branch="z9hG4bKlobby2"), final("lobby-2"))
        assert ok.status == 200, ok
        to_tag = tag_of(ok.get("To"))
        unit.sendto(request("ACK", by_number, "lobby-2", to_tag=to_tag, branch="z9hG4bKlobby2"),
                    ("127.0.0.1", sip_port))
        with database.session() as session:
            session.execute(text("UPDATE room_parts SET locked = true WHERE room_name = :room"),
                            {"room": room})
        assert 'value="unlock"' not in await operator.live()  # node B has not heard of it
        for index, key in enumerate([*pin, "#"]):
            unit.sendto(request("INFO", by_number, "lobby-2", cseq=index + 2, to_tag=to_tag,
                                body=f"Signal={key}\r\n".encode(), branch=f"z9hG4bKpin2{index}",
                                content_type="application/dtmf-relay"), ("127.0.0.1", sip_port))
        bye = await sip_exchange(unit, sip_port, b"", lambda m: m.is_request and m.method == "BYE"
                                 and m.call_id == "lobby-2")  # (not copies of the first's)
        assert "cause=403" in bye.get("Reason"), bye.get("Reason")
        await asyncio.sleep(1)
        assert parts() == ["node-a"]
        assert {p["name"] for p in page.of_type("participants")[-1]["participants"]} == {"Praha"}
    finally:
        unit.close()
        if operator is not None:
            await operator.close()
        if page is not None:
            await page.close()
        database.dispose()
        for node in started:
            if node.process.poll() is None:
                node.kill()
            node.process.wait(10)


async def test_a_unit_calling_a_node_for_a_locked_room_placed_on_the_other_is_not_let_in(
        tmp_path, shared_database_url: str) -> None:
    """A bridge placed on node B (labelled izs), locked there by its host; node A takes
    part of other nodes' rooms only when their worker is full (the default) and takes the
    units' calls: a unit calling node A for the room is not let in there (480, call the
    room's node), and node A writes no part of it."""
    url = shared_database_url
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    sip_port = free_port()
    started = [await start_node(tmp_path, url, "node-a", extra_env={"MULTIPOINT_SIP_PORT": str(sip_port)})]
    started.append(await start_node(tmp_path, url, "node-b", labels="izs",
                                    extra_env={"MULTIPOINT_SIP_ENABLED": "false"}))
    room = izs_bridge(url)
    database = Database(url)
    unit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unit.bind(("127.0.0.1", 0))
    unit.setblocking(False)
    page: SignalClient | None = None
    try:
        token = issue_token(SECRET, JoinGrant(room=room, role="host", scheduled=True), 600)
        page = await join_through(started[1].front, token, "Ostrava")
        await page.send({"type": "lock", "locked": True})
        assert await wait_until(lambda: page.of_type("participants")[-1]["locked"])
        invite = sip_request("INVITE", f"sip:{room}@127.0.0.1", transport="UDP",
                             local_port=unit.getsockname()[1], call_id="placed", body=OFFER)
        refused = await sip_exchange(unit, sip_port, invite,
                                     lambda m: not m.is_request and m.status >= 200)
        assert refused.status == 480 and "another node" in refused.reason, refused
        with database.session() as session:
            assert not session.scalar(text("SELECT count(*) FROM room_parts p JOIN media_nodes n "
                                           "ON n.id = p.node_id WHERE n.name = 'node-a'"))
        assert {p["name"] for p in page.of_type("participants")[-1]["participants"]} == {"Ostrava"}
    finally:
        unit.close()
        if page is not None:
            await page.close()
        database.dispose()
        for node in started:
            if node.process.poll() is None:
                node.kill()
            node.process.wait(10)


def audited(database: Database, room: str) -> list[tuple[str, str, dict]]:
    with database.session() as session:
        return [(a.actor, a.action, a.details) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.target == f"room:{room}").order_by(AuditEntry.id))]


def node_lease(database: Database, node: str) -> tuple[bool, bool]:
    """Whether ``node`` was reaped, and whether its lease runs now."""
    with database.session() as session:
        dead, running = session.execute(text(
            "SELECT dead_at IS NOT NULL, lease_expires_at > :now FROM media_nodes "
            "WHERE name = :node"), {"now": datetime.now(UTC), "node": node}).one()
        return bool(dead), bool(running)


async def praha_and_ostrava(node_a: Node, node_b: Node, token: str,
                            clients: list[SignalClient]) -> tuple[SignalClient, SignalClient, str]:
    """Praha joins through node A and Ostrava through node B (both added to ``clients``,
    to be closed), and node A has read node B's part: Ostrava is in the room's list there.
    Returns the two and Ostrava's participant id."""
    clients.append(await join_through(node_a.front, token, "Praha"))
    clients.append(await join_through(node_b.front, token, "Ostrava"))
    praha, ostrava = clients[-2:]
    ostrava_id = ostrava.of_type("joined")[0]["participant"]
    assert await wait_until(lambda: any(
        p["id"] == ostrava_id for m in praha.of_type("participants")[-1:]
        for p in m["participants"]), timeout=20)
    return praha, ostrava, ostrava_id


async def test_the_operator_mutes_and_removes_a_participant_on_another_nodes_part(
        spreading_nodes) -> None:
    """A spread room, its operator on node A's admin web: a participant on node B's part
    is listed there and muted and removed as a host elsewhere would (a command to node B),
    audited as the operator's. It used to be "no longer there": only node A's own
    connections were looked at."""
    node_a, node_b, url = spreading_nodes
    room = "povoden-opava"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    database = Database(url)
    clients: list[SignalClient] = []
    operator: Operator | None = None
    try:
        praha, ostrava, ostrava_id = await praha_and_ostrava(node_a, node_b, guest, clients)
        operator = await Operator.sign_in(node_a.front, database)
        assert f'data-participant="{ostrava_id}"' in await operator.live()

        assert await operator.act(room, "mute", ostrava_id) == "done=mute"
        assert (await ostrava.next("muted", timeout=20))["by"] == "operator"
        assert await wait_until(lambda: any(
            p["id"] == ostrava_id and p["audio_muted"] for p in
            praha.of_type("participants")[-1]["participants"]), timeout=20)
        assert await operator.act(room, "remove", ostrava_id) == "done=remove"
        assert (await ostrava.next("removed", timeout=20))["reason"] == "removed by operator"
        assert await wait_until(lambda: ostrava.ws.closed)
        assert audited(database, room) == [
            ("operator", "room.mute", {"participant": ostrava_id}),
            ("operator", "room.remove", {"participant": ostrava_id})]
        # A participant on no node's part is still "no longer there".
        assert await operator.act(room, "mute", "p-none") == "gone=mute"
    finally:
        if operator is not None:
            await operator.close()
        for client in clients:
            await client.close()
        database.dispose()


async def test_the_operators_mute_on_a_node_that_does_not_answer_is_not_reported_done(
        spreading_nodes) -> None:
    """A spread room, its operator on node A's admin web, node B (where the participant
    is) paused: the mute cannot be confirmed, and the page says so instead of "done",
    auditing nothing. It used to say "done" as soon as the command was queued for node
    B, whether node B ever did it or not."""
    node_a, node_b, url = spreading_nodes
    room = "vichrice-jesenik"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    database = Database(url)
    clients: list[SignalClient] = []
    operator: Operator | None = None
    try:
        _, _, ostrava_id = await praha_and_ostrava(node_a, node_b, guest, clients)
        operator = await Operator.sign_in(node_a.front, database)
        assert f'data-participant="{ostrava_id}"' in await operator.live()

        os.killpg(node_b.process.pid, signal.SIGSTOP)
        assert await operator.act(room, "mute", ostrava_id) == "failed=unconfirmed"
        assert audited(database, room) == []
    finally:
        if node_b.process.poll() is None:
            os.killpg(node_b.process.pid, signal.SIGCONT)
        if operator is not None:
            await operator.close()
        for client in clients:
            await client.close()
        database.dispose()


async def test_the_operator_closes_a_spread_room_on_every_node(spreading_nodes) -> None:
    """A spread room, its operator on node A's admin web closes it: the participants of
    both nodes' parts are told (closed_by_operator) and disconnected, node B having
    answered that it closed its part, no part is left, and the close is audited as the
    operator's."""
    node_a, node_b, url = spreading_nodes
    room = "zaplavy-litovel"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    database = Database(url)
    clients: list[SignalClient] = []
    operator: Operator | None = None

    def parts() -> list[str]:
        with database.session() as session:
            return list(session.scalars(text("SELECT node_id FROM room_parts WHERE room_name = :room"),
                                        {"room": room}))

    try:
        await praha_and_ostrava(node_a, node_b, guest, clients)
        operator = await Operator.sign_in(node_a.front, database)

        assert await operator.act(room, "close") == "done=close"
        for client in clients:
            assert await wait_until(lambda client=client: client.ws.closed, timeout=10)
            assert [m["code"] for m in client.of_type("closed")] == ["closed_by_operator"]
        assert await wait_until(lambda: parts() == [], timeout=10)
        assert f'data-room="{room}"' not in await operator.live()
        assert audited(database, room) == [("operator", "room.close", {})]
    finally:
        if operator is not None:
            await operator.close()
        for client in clients:
            await client.close()
        database.dispose()


async def test_the_operators_recording_of_a_spread_room_is_the_rooms_one(spreading_nodes,
                                                                         tmp_path) -> None:
    """A spread room recorded by node B's home worker (its host's Record there): the
    operator on node A's admin web sees the room recording, Record starts no second
    recording on node A, and Stop stops node B's, as a host's Stop on node A would. The
    page used to say "not recording" and the operator's Record and Stop to act on node
    A's worker alone."""
    node_a, node_b, url = spreading_nodes
    room = "sesuv-halenkovice"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    host = issue_token(SECRET, JoinGrant(room=room, role="host"), 600)
    database = Database(url)
    clients: list[SignalClient] = []
    operator: Operator | None = None

    def recordings(node: str) -> list[str]:
        return sorted(p.name for p in (tmp_path / node / "recordings").glob("*/*.webm"))

    def recording(client: SignalClient) -> bool:
        lists = client.of_type("participants")
        return bool(lists and lists[-1]["recording"])

    try:
        clients.append(await join_through(node_a.front, guest, "Praha"))
        clients.append(await join_through(node_b.front, host, "Ostrava"))
        praha, ostrava = clients
        await ostrava.send({"type": "record", "active": True})
        assert await wait_until(lambda: recording(praha), timeout=20)
        assert len(recordings("node-b")) == 1
        operator = await Operator.sign_in(node_a.front, database)
        assert 'value="stop_recording"' in await operator.live()

        assert await operator.act(room, "record") == "done=record"
        await asyncio.sleep(1)
        assert recordings("node-a") == []  # one recording per room: node B's
        assert await operator.act(room, "stop_recording") == "done=stop_recording"
        assert await wait_until(lambda: not recording(praha) and not recording(ostrava), timeout=20)
        assert 'value="record"' in await operator.live()
        assert recordings("node-a") == [] and len(recordings("node-b")) == 1
        assert [action for _, action, _ in audited(database, room)] == [
            "room.record", "room.stop_recording"]
    finally:
        if operator is not None:
            await operator.close()
        for client in clients:
            await client.close()
        database.dispose()


async def test_record_pressed_on_both_nodes_at_once_starts_one_recording(spreading_nodes,
                                                                         tmp_path) -> None:
    """A spread room, an operator on each node's admin web pressing Record at the same
    moment: one recording for the room. Each node used to look only at what it had last
    read of the other's part (not recording yet) and start its own: two recordings."""
    node_a, node_b, url = spreading_nodes
    room = "pozar-krnov"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    database = Database(url)
    clients: list[SignalClient] = []
    operators: list[Operator] = []

    def recordings() -> list[str]:
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("node-*/recordings/*/*.webm"))

    try:
        praha, ostrava, ostrava_id = await praha_and_ostrava(node_a, node_b, guest, clients)
        for node in (node_a, node_b):
            operators.append(await Operator.sign_in(node.front, database))
            assert f'data-participant="{ostrava_id}"' in await operators[-1].live()

        answers = await asyncio.gather(*(operator.act(room, "record") for operator in operators))
        assert answers == ["done=record", "done=record"]
        assert len(recordings()) == 1, recordings()
        assert await wait_until(lambda: all(m["recording"] for m in (
            praha.of_type("participants")[-1], ostrava.of_type("participants")[-1])), timeout=20)
    finally:
        for operator in operators:
            await operator.close()
        for client in clients:
            await client.close()
        database.dispose()


async def test_a_node_whose_lease_lapsed_and_came_back_is_in_its_spread_rooms_again(
        spreading_nodes) -> None:
    """A spread room; node B is paused (SIGSTOP: a GC pause, a slow database) until its
    lease lapses and node A, reading the room meanwhile (a participant joins it there),
    leaves node B's part out. When node B resumes and renews its lease, node A reads the
    room again: node B's participant is listed and heard there, and receives node A's.
    Node A used to read it only at the next change or resync (an hour away here): the
    room stayed split while both nodes were alive."""
    node_a, node_b, url = spreading_nodes
    room = "sucho-znojmo"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    database = Database(url)
    clients: list[SignalClient] = []

    def node_b_lease() -> tuple[bool, bool]:
        return node_lease(database, "node-b")

    def listed(client: SignalClient) -> set[str]:
        lists = client.of_type("participants")
        return {p["id"] for p in lists[-1]["participants"]} if lists else set()

    def receives(client: SignalClient, others: set[str]) -> bool:
        frames = client.live_frames("video")
        return all(frames.get(other, 0) >= 5 for other in others)

    try:
        clients.append(await join_through(node_a.front, guest, "Praha"))
        clients.append(await join_through(node_b.front, guest, "Ostrava"))
        praha, ostrava = clients
        praha_id, ostrava_id = (c.of_type("joined")[0]["participant"] for c in clients)
        assert await wait_until(lambda: receives(praha, {ostrava_id})
                                and receives(ostrava, {praha_id}), timeout=45)

        os.killpg(node_b.process.pid, signal.SIGSTOP)
        assert await wait_until(lambda: node_b_lease()[0], timeout=4 * LEASE_S + 10)
        # Node A reads the room while node B is dead: node B's part is left out.
        clients.append(await join_through(node_a.front, guest, "Brno"))
        brno = clients[2]
        brno_id = brno.of_type("joined")[0]["participant"]
        assert await wait_until(lambda: listed(praha) == {praha_id, brno_id}, timeout=20)
        assert await wait_until(lambda: receives(brno, {praha_id}), timeout=30)

        os.killpg(node_b.process.pid, signal.SIGCONT)
        assert await wait_until(lambda: node_b_lease() == (False, True), timeout=4 * LEASE_S + 10)
        everyone = {praha_id, ostrava_id, brno_id}
        assert await wait_until(lambda: listed(praha) == listed(brno) == everyone, timeout=20), \
            (listed(praha), listed(brno))
        assert await wait_until(lambda: receives(praha, {ostrava_id, brno_id})
                                and receives(brno, {praha_id, ostrava_id})
                                and receives(ostrava, {praha_id, brno_id}), timeout=30), \
            [c.live_frames("video") for c in clients]
        assert listed(ostrava) == everyone
    finally:
        if node_b.process.poll() is None:
            os.killpg(node_b.process.pid, signal.SIGCONT)
        for client in clients:
            await client.close()
        database.dispose()


async def test_a_node_restarted_within_its_lease_keeps_its_rooms_while_its_workers_start(
        tmp_path, shared_database_url: str) -> None:
    """Node B, hosting a room, is killed and started again before its lease runs out,
    with workers that take longer to start than two thirds of its lease (four of them, a
    6 s lease, on a 2-core machine). It renews its lease from its start, so node A does
    not reap it: the room stays on node B, nothing moved. Its first renewal used to come
    only after its workers were ready (plus lease/3): its lease lapsed while it started,
    node A marked it dead and moved its room away from a node that was up."""
    url = shared_database_url
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    started = [await start_node(tmp_path, url, "node-a")]
    # Node B's first process holds a long lease: it is not reaped while it is down.
    started.append(await start_node(tmp_path, url, "node-b", labels="izs",
                                    extra_env={"MULTIPOINT_NODE_LEASE_SECONDS": "60"}))
    room = izs_bridge(url)
    token = issue_token(SECRET, JoinGrant(room=room, role="guest", scheduled=True), 600)
    database = Database(url)

    def hosting_node() -> str | None:
        with database.session() as session:
            return session.scalar(text(
                "SELECT n.name FROM rooms r JOIN media_workers w ON w.id = r.worker_id "
                "JOIN media_nodes n ON n.id = w.node_id WHERE r.name = :room"), {"room": room})

    def node_b_heartbeat() -> datetime:
        with database.session() as session:
            return session.scalar(text("SELECT heartbeat_at FROM media_nodes WHERE name = 'node-b'"))

    try:
        caller = Caller(token, started[0].front)
        await caller.join()  # the IZS bridge is placed on node B, the IZS node
        await caller.close()
        assert caller.joins == [started[1].front] and hosting_node() == "node-b"

        started[1].kill()
        started[1].process.wait(10)
        # A lease longer than the tests' 2 s: its renewals, every 2 s, bear the
        # starving of its front by four workers starting on two cores.
        started[1] = await start_node(tmp_path, url, "node-b", labels="izs", extra_env={
            "MULTIPOINT_WORKERS": "4", "MULTIPOINT_NODE_LEASE_SECONDS": "6"})
        # Its workers are ready: node A, reaping every lease/3, has seen whatever node B's
        # lease did meanwhile once node B renewed it after that.
        ready = node_b_heartbeat()
        assert await wait_until(lambda: node_b_heartbeat() > ready, timeout=30)
        assert hosting_node() == "node-b"
        with database.session() as session:
            assert session.scalar(text("SELECT count(*) FROM room_moves")) == 0
    finally:
        database.dispose()
        for node in started:
            if node.process.poll() is None:
                node.kill()
            node.process.wait(10)


async def test_a_killed_nodes_participants_leave_the_spread_room_when_it_is_reaped(
        spreading_nodes) -> None:
    """A spread room; node B is killed (kill -9). Once node A reaps it, node A's
    participant no longer lists node B's participant. Node A used to read the room only
    at its next change or resync (an hour away here): it kept listing the dead node's
    participant, and piping to its worker, until then."""
    node_a, node_b, url = spreading_nodes
    guest = issue_token(SECRET, JoinGrant(room="povoden-olomouc", role="guest"), 600)
    database = Database(url)
    clients: list[SignalClient] = []

    def listed(client: SignalClient) -> set[str]:
        lists = client.of_type("participants")
        return {p["id"] for p in lists[-1]["participants"]} if lists else set()

    try:
        clients.append(await join_through(node_a.front, guest, "Praha"))
        clients.append(await join_through(node_b.front, guest, "Ostrava"))
        praha = clients[0]
        praha_id, ostrava_id = (c.of_type("joined")[0]["participant"] for c in clients)
        assert await wait_until(lambda: listed(praha) == {praha_id, ostrava_id}, timeout=30)

        node_b.kill()
        node_b.process.wait(10)
        assert await wait_until(lambda: node_lease(database, "node-b")[0], timeout=4 * LEASE_S + 10)
        assert await wait_until(lambda: listed(praha) == {praha_id}, timeout=10), listed(praha)
    finally:
        for client in clients:
            await client.close()
        database.dispose()


async def test_a_paused_node_that_was_reaped_records_the_calls_it_still_has_again(
        spreading_nodes) -> None:
    """A spread room living on node A; node B's part has a participant. Node B is paused
    (SIGSTOP) until it is reaped, which ends the call records of its workers; the room
    does not move (it lives on node A). When node B resumes and learns it was reaped, its
    participant is still connected: it gets a new call record, on node B's worker. Node B
    used to serve it on with its record ended: usage and its worker's load left it out
    for the rest of the call."""
    node_a, node_b, url = spreading_nodes
    room = "vichrice-jesenik"
    guest = issue_token(SECRET, JoinGrant(room=room, role="guest"), 600)
    database = Database(url)
    clients: list[SignalClient] = []

    def node_b_lease() -> tuple[bool, bool]:
        return node_lease(database, "node-b")

    def calls() -> list[tuple[str, str, bool]]:
        """Each call record of the room: who, on which node, whether it is open."""
        with database.session() as session:
            return [tuple(row) for row in session.execute(text(
                "SELECT c.participant, n.name, c.left_at IS NULL FROM call_records c "
                "JOIN media_workers w ON w.id = c.worker_id JOIN media_nodes n "
                "ON n.id = w.node_id WHERE c.room_name = :room ORDER BY c.id"), {"room": room})]

    try:
        clients.append(await join_through(node_a.front, guest, "Praha"))
        clients.append(await join_through(node_b.front, guest, "Ostrava"))
        ostrava = clients[1]
        assert await wait_until(lambda: calls() == [("Praha", "node-a", True),
                                                    ("Ostrava", "node-b", True)], timeout=20)

        os.killpg(node_b.process.pid, signal.SIGSTOP)
        assert await wait_until(lambda: node_b_lease()[0], timeout=4 * LEASE_S + 10)
        # The reaper ended node B's calls.
        assert calls() == [("Praha", "node-a", True), ("Ostrava", "node-b", False)]
        os.killpg(node_b.process.pid, signal.SIGCONT)
        assert await wait_until(lambda: node_b_lease() == (False, True), timeout=4 * LEASE_S + 10)
        assert await wait_until(lambda: calls() == [("Praha", "node-a", True),
                                                    ("Ostrava", "node-b", False),
                                                    ("Ostrava", "node-b", True)], timeout=10), \
            calls()
        assert not ostrava.ws.closed and ostrava.of_type("closed") == []  # its call went on

        await ostrava.close()  # and when it leaves, its new record ends
        assert await wait_until(lambda: calls()[-1] == ("Ostrava", "node-b", False), timeout=10)
    finally:
        if node_b.process.poll() is None:
            os.killpg(node_b.process.pid, signal.SIGCONT)
        for client in clients:
            await client.close()
        database.dispose()
