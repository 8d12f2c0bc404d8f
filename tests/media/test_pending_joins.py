"""Anonymous joins that never answer cannot use up the media ports."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import aiohttp
import pytest

from multipoint.app import LIVE_ROOMS, MEDIA
from multipoint.settings import Settings, load_settings
from signaling.tokens import JoinGrant, issue_token
from tests.conftest import start_process_server
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media

PORTS = (42000, 42011)  # twelve media ports, for the server's and the test's own peers
PER_IP = 3
PER_FRONT = 6
ANSWER_TIMEOUT_S = 5.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                         secret_key="test-secret-" + "x" * 20, media_inline=True,
                         udp_port_min=PORTS[0], udp_port_max=PORTS[1],
                         max_pending_joins_per_ip=PER_IP, max_pending_joins=PER_FRONT,
                         answer_timeout_seconds=ANSWER_TIMEOUT_S)


def token(server, room: str, role: str = "selftest") -> str:
    return issue_token(server.settings.signing_secret(), JoinGrant(room=room, role=role), 300)


async def connect_from(server, address: str) -> SignalClient:
    """A signaling client whose socket comes from ``address`` (any of 127/8 on loopback)."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
    return SignalClient(session, await session.ws_connect(server.ws_url))


def ports_in_use() -> int:
    """How many of the media port range's UDP ports are bound on 127.0.0.1."""
    used = 0
    for port in range(PORTS[0], PORTS[1] + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                used += 1
    return used


async def never_answer(server, address: str, count: int, tag: str,
                       ports: tuple[int, int] | None = PORTS) -> tuple[list[SignalClient], int]:
    """``count`` self-test joins from ``address`` that never answer their offers: the
    clients that got an offer (with a candidate in the port range), and how many were
    refused for too many pending joins."""
    offered, refused = [], 0
    for index in range(count):
        client = await connect_from(server, address)
        await client.send({"type": "join", "v": 1, "token": token(server, f"selftest-{tag}{index}")})
        first = await client.next()
        if first["type"] == "error":
            assert first["code"] == "too_many_pending_joins", first
            assert first["message"] and 1 <= first["retry_after"] <= ANSWER_TIMEOUT_S + 0.1, first
            refused += 1
            await client.close()
            continue
        assert first["type"] == "joined", first
        offer = await client.next("offer")
        found = [int(p) for p in re.findall(r"^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host",
                                            offer["sdp"], re.M)]
        assert found and all(ports is None or ports[0] <= p <= ports[1] for p in found), offer["sdp"]
        offered.append(client)
    return offered, refused


async def join_with_media(server, address: str, room: str) -> tuple[SignalClient, ClientPeer]:
    client = await connect_from(server, address)
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    await client.send({"type": "join", "v": 1, "token": token(server, room)})
    await client.next("joined")
    offer = await client.next("offer")
    assert "a=candidate:" in offer["sdp"], "the guest's offer has no candidate"
    client.peer = peer
    await client._answer(offer)
    client.auto_answer = True
    return client, peer


async def test_pending_joins_are_capped_and_time_out_and_a_guest_still_gets_a_call(server) -> None:
    media = server.app[MEDIA]
    before = ports_in_use()
    attackers: list[SignalClient] = []
    guests: list[SignalClient] = []
    try:
        # One address: beyond its cap, joins are refused before they take any port.
        offered, refused = await never_answer(server, "127.0.0.2", 8, "a")
        attackers += offered
        assert (len(offered), refused) == (PER_IP, 8 - PER_IP)
        assert ports_in_use() == before + PER_IP

        # A guest from elsewhere gets an offer with a candidate and a working call.
        guest, guest_peer = await join_with_media(server, "127.0.0.1", "selftest-guest")
        guests.append(guest)
        assert await wait_until(lambda: sum(guest_peer.frames("video").values()) > 10, timeout=20)
        guest_ports = ports_in_use() - before - PER_IP

        # A second address fills the front's cap: a third is refused outright.
        offered, refused = await never_answer(server, "127.0.0.3", 5, "b")
        attackers += offered
        assert (len(offered), refused) == (PER_FRONT - PER_IP, 5 - (PER_FRONT - PER_IP))
        offered, refused = await never_answer(server, "127.0.0.4", 1, "c")
        assert (offered, refused) == ([], 1)

        # Past the deadline every join that never answered is told so and closed, and
        # its ports are free again.
        for attacker in attackers:
            error = await attacker.next("error", timeout=ANSWER_TIMEOUT_S + 15)
            assert error["code"] == "answer_timeout" and error["message"]
        assert await wait_until(lambda: all(a.ws.closed for a in attackers), timeout=10)
        assert await wait_until(lambda: media.participant_count == 1, timeout=10)
        assert await wait_until(lambda: ports_in_use() == before + guest_ports, timeout=10)
        counters = server.app[LIVE_ROOMS].signaling.counters
        assert counters["answer_timeouts"] == len(attackers)
        assert counters["joins_refused_pending"] == 8 - PER_IP + 5 - (PER_FRONT - PER_IP) + 1

        # The connected guest was never timed out, and a newcomer from a capped address
        # is admitted again and gets media too.
        assert guest_peer.pc.connectionState == "connected"
        assert not guest.of_type("error")
        late, late_peer = await join_with_media(server, "127.0.0.3", "selftest-late")
        guests.append(late)
        assert await wait_until(lambda: sum(late_peer.frames("video").values()) > 10, timeout=20)
        frames = sum(guest_peer.frames("video").values())
        assert await wait_until(lambda: sum(guest_peer.frames("video").values()) > frames + 10)
    finally:
        for client in attackers + guests:
            await client.close()


async def join_from(server, address: str, room: str) -> tuple[SignalClient, dict, float]:
    """A self-test join from ``address``: its client, the server's first answer, and
    when (the loop's time) it came."""
    client = await connect_from(server, address)
    await client.send({"type": "join", "v": 1, "token": token(server, room)})
    first = await client.next()
    return client, first, asyncio.get_running_loop().time()


async def test_a_join_refused_for_too_many_pending_ones_is_told_when_to_come_back(server) -> None:
    """The refusal's retry_after is when the first join holding the cap (the address's,
    or the front's) is timed out at the latest; joined again after it, as the call page
    does (docs/protocol.md), the join is taken. It had no retry_after: the page came back
    after 1, 2, 4, 8 s, refused while the joins waited out their answer timeout."""
    clients: list[SignalClient] = []
    loop = asyncio.get_running_loop()

    async def refused_then_taken(address: str, tag: str, began: float) -> float:
        """A join from ``address`` is refused with a retry_after no earlier than the
        first pending join (sent at ``began``) times out; after it, a join is taken
        (which never answers: it is pending from the time returned)."""
        client, refusal, at = await join_from(server, address, f"selftest-{tag}-refused")
        clients.append(client)
        assert refusal["code"] == "too_many_pending_joins", refusal
        assert ANSWER_TIMEOUT_S - (at - began) - 0.1 <= refusal["retry_after"] <= ANSWER_TIMEOUT_S + 0.1, \
            (refusal, at - began)
        await asyncio.sleep(at + refusal["retry_after"] - loop.time())
        again = loop.time()
        client, first, _ = await join_from(server, address, f"selftest-{tag}-again")
        clients.append(client)
        assert first["type"] == "joined", first
        return again

    try:
        # The address's cap is full: back when its first join times out.
        began = loop.time()
        offered, refused = await never_answer(server, "127.0.0.2", PER_IP, "a")
        clients += offered
        assert refused == 0
        again = await refused_then_taken("127.0.0.2", "a", began)
        signaling = server.app[LIVE_ROOMS].signaling
        assert await wait_until(lambda: signaling.pending_total == 1)  # the others timed out
        # The front's cap: that join taken again (it never answers either) holds it with
        # joins from two more addresses; a fourth address is told when it times out.
        for address, count, tag in (("127.0.0.3", PER_IP, "b"), ("127.0.0.4", PER_FRONT - 1 - PER_IP, "c")):
            offered, refused = await never_answer(server, address, count, tag)
            clients += offered
            assert refused == 0
        await refused_then_taken("127.0.0.5", "d", again)
    finally:
        for client in clients:
            await client.close()


async def test_a_connected_participant_of_a_worker_process_is_never_timed_out(tmp_path: Path) -> None:
    """The worker process reports the connection (its ``connected`` event) across the
    channel: a participant connected in time outlives a later join's deadline."""
    server = await start_process_server(tmp_path, 1, answer_timeout_seconds=ANSWER_TIMEOUT_S)
    clients: list[SignalClient] = []
    try:
        guest, peer = await join_with_media(server, "127.0.0.1", "selftest-process")
        clients.append(guest)
        assert await wait_until(lambda: sum(peer.frames("video").values()) > 10, timeout=20)
        silent, refused = await never_answer(server, "127.0.0.2", 1, "silent", ports=None)
        clients += silent
        assert refused == 0
        error = await silent[0].next("error", timeout=ANSWER_TIMEOUT_S + 15)
        assert error["code"] == "answer_timeout"
        # The guest joined before the silent one: its own deadline has passed too.
        assert not guest.of_type("error") and not guest.ws.closed
        frames = sum(peer.frames("video").values())
        assert await wait_until(lambda: sum(peer.frames("video").values()) > frames + 10)
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
