"""Room units calling over SIP: baresip (Debian's) dials into a standing bridge.

Real endpoints on loopback: the unit is baresip with a sine tone for a microphone, the
other participant an aiortc client over the participant protocol. Both hear each other:
the client's spectrum peaks at the unit's tone, and the unit's own recording of what it
received peaks at the client's (and not at its own: the mix leaves a listener out).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pylibsrtp
import pytest
from mcu._fanout import CODEC_H264, is_keyframe_start
from sqlalchemy import select

from mcu import aiortc_adapter as adapter
from mcu import rtp
from mcu.mixer.h264 import H264Depacketizer, H264Encoder, packetize_h264
from mcu.unit import PROMPT_HZ
from mcu.unit_sdp import origin, parse_offer
from multipoint.app import DATABASE, LIVE_ROOMS, MEDIA, POOL, ROOM_UNITS
from scheduler.booking.bridges import create_bridge
from scheduler.booking.dial_in import bridge_number
from scheduler.booking.units import ParticipantMix
from scheduler.config import SchedulerConfig
from scheduler.models import CallRecord, Organisation, StandingBridge
from scheduler.organisations import org_info
from scheduler.seed import seed
from signaling.sip.message import SipMessage, frame, params, parse, tag_of
from signaling.sip.testcall import UnitTestCalls
from signaling.sip.units import DialFailed, UnitMember
from signaling.tokens import JoinGrant, issue_token
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient
from tests.sip_unit import BARESIP, Baresip, tone_share

pytestmark = [pytest.mark.media,
              pytest.mark.skipif(BARESIP is None, reason="no baresip (scripts/test installs it)")]

UNIT_TONE, CLIENT_TONE = 440, 700


def new_bridge(server, **seeding: int) -> StandingBridge:
    """An IZS standing bridge; ``seeding``: the seed's workers (one of 800 units)."""
    with server.app[DATABASE].session() as session:
        seed(session, **(seeding or {"local_workers": 1, "worker_capacity_units": 800}))
        izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
        return create_bridge(session, SchedulerConfig(), org_info(session, izs.id), "Povodně",
                             ParticipantMix(hd=5))


def bridge(server, **seeding: int) -> str:
    return new_bridge(server, **seeding).room_name


def sip_uri(server, room: str, transport: str = "udp") -> str:
    agent = server.app[ROOM_UNITS].agent
    port = agent.udp_port if transport == "udp" else agent.tcp_port
    return f"sip:{room}@127.0.0.1:{port}" + (";transport=tcp" if transport == "tcp" else "")


async def client_in(server, room: str, **join: Any) -> SignalClient:
    client = await SignalClient.connect(server.ws_url)
    grant = JoinGrant(room=room, role="host", scheduled=True)
    await client.join_with(ClientPeer(audio=ToneTrack(CLIENT_TONE), video=ColourTrack()),
                           issue_token(server.settings.signing_secret(), grant, 300), name="Krajský úřad",
                           **join)
    return client


def units_in(server, room: str) -> list:
    live = server.app[MEDIA].rooms.get(room)
    return [p for p in live.participants.values() if p.describe()["connection"] == "sip"] if live else []


async def dial_in(server, unit: Baresip, room: str, transport: str = "udp") -> Any:
    """The unit calls the room; its participant on the worker once it is in."""
    await unit.dial(sip_uri(server, room, transport))
    assert await wait_until(lambda: len(units_in(server, room)) == 1, timeout=15), unit.log[-2000:]
    return units_in(server, room)[0]


def hears(client: SignalClient, frequency: float) -> bool:
    return any(r.audio and r.spectrum_peak(frequency) > 30 for r in client.peer.received.values())


@contextlib.asynccontextmanager
async def unit_called_in(server, tmp_path: Path) -> AsyncIterator[tuple[str, SignalClient, Baresip, Any]]:
    """A bridge with a page in it, and baresip (sounding UNIT_TONE) called in: the room,
    the page's client, the unit and its participant on the worker."""
    room = bridge(server)
    client = await client_in(server, room)
    unit = Baresip(tmp_path / "unit", tone_hz=UNIT_TONE)
    await unit.start()
    try:
        yield room, client, unit, await dial_in(server, unit, room)
    finally:
        await unit.stop()
        await client.close()


async def test_a_unit_dials_in_hears_the_room_is_heard_and_hangs_up(server, tmp_path: Path) -> None:
    room = bridge(server)
    client = await client_in(server, room)
    unit = Baresip(tmp_path / "unit", tone_hz=UNIT_TONE)
    await unit.start()
    try:
        await unit.call(sip_uri(server, room))
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        member = units_in(server, room)[0]
        # Listed to the others by the name its From header gave (baresip: its user part).
        assert await wait_until(lambda: any(
            p["id"] == member.id and p["mode"] == "mixed"
            for m in client.of_type("participants") for p in m["participants"]))
        assert await wait_until(lambda: member.media_counts()["audio_in"] > 150
                                and member.media_counts()["audio_out"] > 150, timeout=15)
        assert await wait_until(lambda: hears(client, UNIT_TONE), timeout=15)
        await asyncio.sleep(2)  # seconds of the client's tone in the unit's recording
        await unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None)
    finally:
        await unit.stop()
        await client.close()
    heard = unit.heard()
    assert tone_share(heard, unit.heard_rate, CLIENT_TONE) > 0.5
    assert tone_share(heard, unit.heard_rate, UNIT_TONE) < 0.01  # not its own voice back
    # The call is in the scheduler's records like a page's.
    with server.app[DATABASE].session() as session:
        records = session.scalars(select(CallRecord).where(CallRecord.room_name == room)).all()
    assert any(r.participant == "unit" and r.left_at is not None for r in records)


async def test_a_unit_removed_by_the_operator_is_hung_up(server, tmp_path: Path) -> None:
    room = bridge(server)
    unit = Baresip(tmp_path / "unit")
    await unit.start()
    try:
        member = await dial_in(server, unit, room, "tcp")  # over TCP this time
        await server.app[LIVE_ROOMS].remove(room, member.id, "operátor")
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None, timeout=10)
        assert not units_in(server, room)
        # Its 200 to our BYE ends that transaction: nothing of it is kept.
        assert await wait_until(lambda: not server.app[ROOM_UNITS].agent._bye_waiters, timeout=5)
    finally:
        await unit.stop()


async def test_a_unit_with_srtp_is_answered_with_keys_of_our_own(server, tmp_path: Path) -> None:
    room = bridge(server)
    client = await client_in(server, room)
    unit = Baresip(tmp_path / "unit", tone_hz=UNIT_TONE, srtp=True)
    await unit.start()
    try:
        member = await dial_in(server, unit, room)
        assert member.choice is not None and member.choice.crypto is not None
        assert await wait_until(lambda: hears(client, UNIT_TONE), timeout=15)
        assert await wait_until(lambda: member.media_counts()["audio_out"] > 100)
        # Garbage and forged RTP at its port, from its own address: dropped, counted, and
        # the call goes on.
        dropped = server.app[MEDIA].counters.unit_dropped
        port = member.streams["audio"].local().rtp_port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            for index in range(50):
                forger.sendto(b"\x80\x6f" + index.to_bytes(2, "big") + bytes(8) + b"forged" * 20,
                              ("127.0.0.1", port))
                forger.sendto(b"\xff" * (index + 1), ("127.0.0.1", port))
        assert await wait_until(lambda: server.app[MEDIA].counters.unit_dropped >= dropped + 100)
        heard_before = member.media_counts()["audio_in"]
        assert await wait_until(lambda: member.media_counts()["audio_in"] > heard_before + 50)
        await asyncio.sleep(1.5)
        await unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        await unit.stop()
        await client.close()
    assert tone_share(unit.heard(), unit.heard_rate, CLIENT_TONE) > 0.5
    assert server.app[MEDIA].counters.handler_errors == 0


@pytest.mark.parametrize("codec", ["G722/16000/1", "PCMU/8000/1"])
async def test_a_unit_on_g722_or_g711_is_transcoded_both_ways(server, tmp_path: Path, codec: str) -> None:
    room = bridge(server)
    client = await client_in(server, room)
    unit = Baresip(tmp_path / "unit", tone_hz=UNIT_TONE, audio_codecs=codec)
    await unit.start()
    try:
        member = await dial_in(server, unit, room)
        assert member.choice.codec == codec.split("/")[0]
        # The page hears the unit (as Opus), the unit hears the page (in its own codec).
        assert await wait_until(lambda: hears(client, UNIT_TONE), timeout=15)
        await asyncio.sleep(2)
        await unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        await unit.stop()
        await client.close()
    heard = unit.heard()
    assert tone_share(heard, unit.heard_rate, CLIENT_TONE) > 0.5
    assert tone_share(heard, unit.heard_rate, UNIT_TONE) < 0.01
    assert server.app[MEDIA].counters.handler_errors == 0


async def test_units_on_one_codec_share_one_encode_of_the_mix_and_a_talker_gets_its_own(
        server, tmp_path: Path) -> None:
    """Two silent units on G.722 hear the room from one encode a tick; a unit on G.711
    that talks hears the others without its own voice; all from the mixer, in C. The
    page is mixed too: nobody forwards a unit's voice."""
    room = bridge(server)
    client = await client_in(server, room, mode="mixed")
    silent = [Baresip(tmp_path / f"quiet{i}", tone_hz=0, audio_codecs="G722/16000/1") for i in range(2)]
    talker = Baresip(tmp_path / "talker", tone_hz=UNIT_TONE, audio_codecs="PCMU/8000/1")
    units = [*silent, talker]
    for unit in units:
        await unit.start()
    try:
        for unit in units:
            await unit.dial(sip_uri(server, room))
        assert await wait_until(lambda: len(units_in(server, room)) == 3, timeout=20)
        assert await wait_until(lambda: hears(client, UNIT_TONE), timeout=15)
        mixer = server.app[MEDIA].rooms[room].mixer
        g722, pcmu = mixer.narrowband["G722"], mixer.narrowband["PCMU"]
        assert len(g722.listeners()) == 2 and len(pcmu.listeners()) == 1
        ticks, encodes = g722.ticks, g722.encodes
        stats = mixer.audio.stats
        mixer_ticks, decodes = stats.ticks, stats.decodes
        await asyncio.sleep(3)
        assert g722.ticks - ticks > 100
        assert g722.encodes - encodes == g722.ticks - ticks  # one encode a tick for both
        assert pcmu.encodes > pcmu.ticks  # the shared one, and the talker's own
        # The units' sound comes with its level: the mixer decodes the two talkers (the
        # page and the G.711 unit), not the quiet units too.
        assert (stats.decodes - decodes) / (stats.ticks - mixer_ticks) < 2.2
        # Nobody forwards the quiet units' voices (everyone is mixed): their silence is
        # not even encoded to Opus; it still counts as their sound reaching us.
        members = {m.mix_codec: m for m in units_in(server, room)}
        quiet = [m for m in units_in(server, room) if m.mix_codec == "G722"]
        assert all(m.producers["microphone"].packets < 10 for m in quiet), \
            [m.producers["microphone"].packets for m in quiet]
        assert all(m.media_counts()["audio_in"] > 100 for m in quiet)
        assert members["PCMU"].producers["microphone"].packets > 100  # the talker's is
        for unit in units:
            await unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        for unit in units:
            await unit.stop()
        await client.close()
    for unit in silent:  # the page and the talking unit, both
        heard = unit.heard()
        shares = [tone_share(heard, unit.heard_rate, tone) for tone in (CLIENT_TONE, UNIT_TONE)]
        assert min(shares) > 0.1 and sum(shares) > 0.8, shares
    heard = talker.heard()
    assert tone_share(heard, talker.heard_rate, CLIENT_TONE) > 0.5
    assert tone_share(heard, talker.heard_rate, UNIT_TONE) < 0.01
    assert server.app[MEDIA].counters.handler_errors == 0


async def test_a_unit_without_a_codec_we_take_is_refused_with_the_reason(server, tmp_path: Path) -> None:
    room = bridge(server)
    unit = Baresip(tmp_path / "unit", audio_codecs="GSM/8000/1")
    await unit.start()
    try:
        await unit.dial(sip_uri(server, room))
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None, timeout=15)
        assert "488" in unit.saw("CALL_CLOSED").get("param", "") + unit.log.decode(errors="replace")
        assert not units_in(server, room)
    finally:
        await unit.stop()
    assert room not in server.app[MEDIA].rooms or not server.app[MEDIA].rooms[room].participants


# Plain SIP, hand-made: what a unit, a scanner or a broken device may send. -------------------


def sip_request(method: str, uri: str, *, transport: str, local_port: int, call_id: str, cseq: int = 1,
                body: bytes = b"", extra: str = "", to_tag: str = "", branch: str = "z9hG4bKraw1",
                sender: str = "Tester", content_type: str = "application/sdp") -> bytes:
    """A request as a unit at 127.0.0.1:``local_port`` writes it."""
    to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:{local_port};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: \"{sender}\" <sip:tester@127.0.0.1>;tag=abc\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:tester@127.0.0.1:{local_port};transport={transport.lower()}>\r\n{extra}")
    if body:
        head += f"Content-Type: {content_type}\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class RawSip:
    def __init__(self, server) -> None:
        self.port = server.app[ROOM_UNITS].agent.udp_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.local = self.sock.getsockname()[1]

    def request(self, method: str, uri: str, call_id: str = "c1@test", **details: Any) -> bytes:
        return sip_request(method, uri, transport="UDP", local_port=self.local, call_id=call_id, **details)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    async def responses(self, wanted: int = 1, timeout: float = 5.0) -> list:
        return [parse(data) for data in await self.datagrams(wanted, timeout)]

    async def datagrams(self, wanted: int = 1, timeout: float = 5.0) -> list[bytes]:
        found: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < wanted and loop.time() < deadline:
            try:
                found.append(self.sock.recv(65536))
            except BlockingIOError:
                await asyncio.sleep(0.02)
        return found

    def close(self) -> None:
        self.sock.close()


class RawSipStream:
    """:class:`RawSip` on a TCP stream of its own: a unit that calls over TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.local = writer.get_extra_info("sockname")[1]
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, server) -> RawSipStream:
        return cls(*await asyncio.open_connection("127.0.0.1", server.app[ROOM_UNITS].agent.tcp_port))

    def request(self, method: str, uri: str, call_id: str = "c1@test", **details: Any) -> bytes:
        return sip_request(method, uri, transport="TCP", local_port=self.local, call_id=call_id, **details)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def responses(self, wanted: int = 1, timeout: float = 5.0) -> list:
        found: list[SipMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < wanted:
            data = frame(self.buffer)
            if data is not None:
                found.append(parse(data))
                continue
            with contextlib.suppress(TimeoutError):
                chunk = await asyncio.wait_for(self.reader.read(65536), max(deadline - loop.time(), 0))
                if not chunk:
                    break
                self.buffer += chunk
            if loop.time() >= deadline:
                break
        return found

    def close(self) -> None:
        self.writer.close()


OFFER = (b"v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n")


async def test_plain_sip_requests_get_clear_answers(server) -> None:
    room = bridge(server)
    raw = RawSip(server)
    try:
        raw.send(raw.request("OPTIONS", f"sip:{room}@127.0.0.1"))
        (options,) = await raw.responses()
        assert options.status == 200 and {"INVITE", "INFO"} <= set(options.get("Allow").split(", "))
        # What an INVITE's offer may come in, as a 415 says it: SDP, or SDP in multipart/mixed.
        assert set(options.get("Accept").split(", ")) == {"application/sdp", "multipart/mixed"}
        raw.send(raw.request("SUBSCRIBE", f"sip:{room}@127.0.0.1", call_id="c2", extra="Event: x\r\n"))
        (subscribe,) = await raw.responses()
        assert subscribe.status == 405 and "BYE" in subscribe.get("Allow")
        raw.send(raw.request("BYE", f"sip:{room}@127.0.0.1", call_id="nobody", to_tag="x"))
        (bye,) = await raw.responses()
        assert bye.status == 481
        raw.send(raw.request("INVITE", "sip:no-such-room@127.0.0.1", call_id="c3", body=OFFER))
        trying, refused = await raw.responses(2)
        assert trying.status == 100 and refused.status == 404
        # Each refusal ACKed, as a unit does (else it comes again: RFC 3261 17.2.1).
        raw.send(raw.request("ACK", "sip:no-such-room@127.0.0.1", call_id="c3",
                             to_tag=tag_of(refused.get("To"))))
        raw.send(raw.request("INVITE", f"sip:{room}@127.0.0.1", call_id="c4", branch="z9hG4bKnosdp"))
        (no_offer,) = await raw.responses()
        assert no_offer.status == 488
        raw.send(raw.request("ACK", f"sip:{room}@127.0.0.1", call_id="c4", to_tag=tag_of(no_offer.get("To")),
                             branch="z9hG4bKnosdp"))
        bad_sdp = b"v=0\r\nm=audio x RTP/AVP\r\n"
        raw.send(raw.request("INVITE", f"sip:{room}@127.0.0.1", call_id="c5", body=bad_sdp,
                             branch="z9hG4bKbadsdp"))
        trying, bad = await raw.responses(2)
        assert bad.status == 400 and "m-line" in bad.reason
        raw.send(raw.request("ACK", f"sip:{room}@127.0.0.1", call_id="c5", to_tag=tag_of(bad.get("To")),
                             branch="z9hG4bKbadsdp"))
        # Garbage and a request with a broken CSeq: nothing for the first, 400 for the second.
        raw.send(b"\x00\xffnot sip at all")
        raw.send(raw.request("OPTIONS", f"sip:{room}@127.0.0.1", call_id="c6").replace(
            b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"))
        (broken,) = await raw.datagrams()  # with the CSeq as it came: not for our parser
        assert broken.startswith(b"SIP/2.0 400 ")
        # A Via that names no hop (only a comma): 400 too, not a failure of ours (500).
        raw.send(raw.request("OPTIONS", f"sip:{room}@127.0.0.1", call_id="c7").replace(
            b"Via: SIP/2.0/UDP", b"Via: ,\r\nX-Was-Via: SIP/2.0/UDP"))
        (no_hop,) = await raw.datagrams()
        assert no_hop.startswith(b"SIP/2.0 400 Bad Request: no Via"), no_hop
        assert server.app[ROOM_UNITS].agent.counters["malformed"] >= 2
    finally:
        raw.close()
    assert room not in server.app[MEDIA].rooms or not server.app[MEDIA].rooms[room].participants


async def test_a_method_we_do_not_know_gets_501_with_allow_whatever_its_case(server) -> None:
    """Methods are case-sensitive tokens (RFC 3261 7.1): ``invite`` is not INVITE but a
    method we do not know, like an extension's, and gets 501 with Allow (21.5.2), not 400."""
    room = bridge(server)
    raw = RawSip(server)
    try:
        for method in ("invite", "Options", "X-FOO"):
            raw.send(raw.request(method, f"sip:{room}@127.0.0.1", call_id=f"method-{method}"))
            (answer,) = await raw.responses()
            assert answer.status == 501 and answer.cseq == (1, method), answer
            assert "INVITE" in answer.get("Allow").split(", ")
    finally:
        raw.close()


def with_isup(handling: str) -> bytes:
    """OFFER in a multipart/mixed body with an ISUP part after it, as an SBC in front of
    a unit on the telephone network sends it (RFC 3204)."""
    return (b"--part\r\nContent-Type: application/sdp\r\nContent-Disposition: session\r\n\r\n" + OFFER
            + b"\r\n--part\r\nContent-Type: application/ISUP;version=itu-t92+\r\n"
            + b"Content-Disposition: signal" + handling.encode() + b"\r\n\r\n\x01\x00\x49\r\n--part--\r\n")


async def test_an_sdp_offer_in_a_multipart_body_is_taken_and_a_part_we_must_read_is_refused(server) -> None:
    """An INVITE whose SDP comes in a multipart/mixed body with another part (RFC 5621 4.2:
    every agent takes multipart/mixed) is answered with the SDP's call; one with a part
    we cannot read and must (its handling not optional: RFC 3261 20.11) gets 415 with
    Accept, as does another type of body."""
    room = bridge(server)
    raw = RawSip(server)
    uri = f"sip:{room}@127.0.0.1"
    try:
        raw.send(raw.request("INVITE", uri, call_id="multipart", body=with_isup(";handling=optional"),
                             content_type="multipart/mixed;boundary=part"))
        answered = next(r for r in await raw.responses(2) if r.status >= 200)
        assert answered.status == 200, answered
        assert parse_offer(answered.body.decode()).media[0].port  # its audio taken
        to_tag = tag_of(answered.get("To"))
        raw.send(raw.request("ACK", uri, call_id="multipart", to_tag=to_tag, branch="z9hG4bKmpack"))
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        raw.send(raw.request("BYE", uri, call_id="multipart", cseq=2, to_tag=to_tag, branch="z9hG4bKmpbye"))
        (bye,) = await raw.responses()
        assert bye.status == 200
        for call_id, body, content_type in (
                ("required", with_isup(""), "multipart/mixed;boundary=part"),
                ("text", b"hello", "text/plain")):
            raw.send(raw.request("INVITE", uri, call_id=call_id, body=body, content_type=content_type,
                                 branch=f"z9hG4bK{call_id}"))
            (refused,) = await raw.responses()
            assert refused.status == 415 and "application/sdp" in refused.get("Accept"), refused
            raw.send(raw.request("ACK", uri, call_id=call_id, to_tag=tag_of(refused.get("To")),
                                 branch=f"z9hG4bK{call_id}"))
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        raw.close()


async def test_a_keep_alive_ping_over_tcp_gets_its_pong(server) -> None:
    """A unit that keeps its TCP connection alive with RFC 5626's ping (a double CRLF
    between messages) gets the pong, one CRLF, at once (3.5.1: a server MUST), else it
    takes the connection for dead (4.4.1: no pong within 10 s); the stream goes on."""
    room = bridge(server)
    unit = await RawSipStream.connect(server)
    try:
        unit.send(b"\r\n\r\n")
        assert await asyncio.wait_for(unit.reader.readexactly(2), 5) == b"\r\n"
        unit.send(b"\r\n\r\n" + unit.request("OPTIONS", f"sip:{room}@127.0.0.1", call_id="alive"))
        assert await asyncio.wait_for(unit.reader.readexactly(2), 5) == b"\r\n"
        (options,) = await unit.responses()
        assert options.status == 200 and options.call_id == "alive"
    finally:
        unit.close()


@pytest.mark.parametrize("fault", ["no_length", "too_large", "two_lengths"])
async def test_a_message_that_cannot_be_cut_from_a_tcp_stream_gets_400_before_the_stream_closes(
        server, fault: str) -> None:
    """A request over TCP without Content-Length (a stream needs it to find the message's
    end, RFC 3261 18.3), one with two that differ, or one that says it is longer than
    any we take: nothing after
    it can be read, so the connection closes, but first the unit is told why in a 400
    (it only saw the connection close)."""
    room = bridge(server)
    unit = await RawSipStream.connect(server)
    try:
        request = unit.request("OPTIONS", f"sip:{room}@127.0.0.1", call_id="uncut")
        if fault == "no_length":
            request = request.replace(b"Content-Length: 0\r\n", b"")
        elif fault == "too_large":
            request = request.replace(b"Content-Length: 0", b"Content-Length: 999999")
        else:  # which one the body's end is cannot be known: what follows may be a message
            request = request.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 4") + b"\r\n\r\n"
        unit.send(request)
        (refused,) = await unit.responses()
        assert refused.status == 400 and refused.call_id == "uncut", refused
        assert {"no_length": "no Content-Length", "too_large": "too large",
                "two_lengths": "conflicting Content-Length"}[fault] in refused.reason
        assert await asyncio.wait_for(unit.reader.read(), 5) == b""  # and the stream ends
    finally:
        unit.close()


async def test_our_requests_in_a_dialog_through_proxies_go_by_its_route_set(server) -> None:
    """Proxies that stay on a dialog's path (Record-Route: an SBC, a video communication
    server) make its route set (RFC 3261 12.1). A unit that calls us takes its own from
    our 200, which must carry the INVITE's Record-Route values in their order (12.1.1),
    and ours is those values in that order; when we call, ours is our 200's reversed
    (12.1.2), for our ACK and our BYE alike. Our 200 carried none (the unit sent its ACK
    and BYE past the proxies, straight to our Contact, which behind an SBC does not get
    there: we hung up for the lost ACK after 32 s), our BYE to a unit that called had
    the route set reversed, and our BYE to a unit we called had none."""
    room = bridge(server)
    agent = server.app[ROOM_UNITS].agent
    raw = RawSip(server)
    uri = f"sip:{room}@127.0.0.1"
    routes = ["<sip:sbc.example.cz;lr>", "<sip:vcs1.example.cz;lr;transport=tcp>", "<sip:10.0.0.9;lr>"]
    record_route = f"Record-Route: {routes[0]}\r\nRecord-Route: {routes[1]}, {routes[2]}\r\n"
    dialling: asyncio.Future[Any] | None = None
    try:
        raw.send(raw.request("INVITE", uri, call_id="routed", body=OFFER, branch="z9hG4bKrouted",
                             extra=record_route))
        ok = await final_of(raw, "routed")
        assert ok.status == 200 and ok.get_all("Record-Route") == routes
        raw.send(raw.request("ACK", uri, call_id="routed", to_tag=tag_of(ok.get("To")),
                             branch="z9hG4bKroutedack"))
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        await server.app[LIVE_ROOMS].remove(room, units_in(server, room)[0].id, "operátor")
        bye = await request_of(raw, "BYE")
        assert bye.get_all("Route") == routes
        raw.send(response_from(bye, 200))

        # A unit we call, through the same proxies (their Record-Route in its 200).
        dialling = asyncio.ensure_future(agent.dial(f"sip:unit@127.0.0.1:{raw.local}", OFFER.decode()))
        invite = await request_of(raw, "INVITE")
        raw.send(response_from(invite, 200, to_tag="unit", body=OFFER).replace(
            b"Content-Type:", record_route.encode() + b"Content-Type:"))
        ack = await request_of(raw, "ACK")
        assert ack.get_all("Route") == routes[::-1]
        call = (await asyncio.wait_for(dialling, 5)).call
        await agent.hang_up(call, wait=False)
        bye = await request_of(raw, "BYE")
        assert bye.get_all("Route") == routes[::-1]
        raw.send(response_from(bye, 200))
        assert await wait_until(lambda: not agent.dialogs and not agent._bye_waiters)
    finally:
        if dialling is not None and not dialling.done():
            dialling.cancel()
        raw.close()


async def test_a_cancelled_invite_and_a_retransmitted_one_leave_no_call(server) -> None:
    room = bridge(server)
    raw = RawSip(server)
    try:
        invite = raw.request("INVITE", f"sip:{room}@127.0.0.1", call_id="race", body=OFFER)
        raw.send(invite)
        raw.send(invite)  # a retransmission: one call, the same answers
        raw.send(raw.request("CANCEL", f"sip:{room}@127.0.0.1", call_id="race"))
        answers = await raw.responses(4, timeout=5)
        statuses = sorted(a.status for a in answers)
        # Either the CANCEL came first (200 to it, 487 to the INVITE), or the answer did
        # (200 to the INVITE, 481 to the CANCEL): never a call left behind unanswered.
        assert 100 in statuses
        ok = [a for a in answers if a.status == 200 and a.cseq[1] == "INVITE"]
        if ok:
            to_tag = ok[0].get("To").split("tag=")[1]
            ack = raw.request("ACK", f"sip:{room}@127.0.0.1", call_id="race", to_tag=to_tag)
            raw.send(ack)
            raw.send(raw.request("BYE", f"sip:{room}@127.0.0.1", call_id="race", cseq=2, to_tag=to_tag,
                                 branch="z9hG4bKbye"))
        else:
            assert 487 in statuses
        assert await wait_until(lambda: not units_in(server, room))
        assert await wait_until(lambda: not server.app[ROOM_UNITS].agent.dialogs)
    finally:
        raw.close()


# Calling a unit (dial-out) --------------------------------------------------------------------


async def test_the_operator_calls_a_unit_into_a_room_and_both_are_heard(server, tmp_path: Path) -> None:
    room = bridge(server)
    client = await client_in(server, room)
    unit = Baresip(tmp_path / "unit", tone_hz=UNIT_TONE, auto_answer=True)
    await unit.start()
    try:
        member = await server.app[ROOM_UNITS].dial(room, f"sip:unit@127.0.0.1:{unit.sip_port}",
                                                   name="Zasedačka Benešov")
        assert await wait_until(lambda: unit.saw("CALL_ESTABLISHED") is not None), unit.log[-2000:]
        assert [u.name for u in units_in(server, room)] == ["Zasedačka Benešov"]
        assert member.participant_id == units_in(server, room)[0].id
        assert await wait_until(lambda: hears(client, UNIT_TONE), timeout=15)
        await asyncio.sleep(2)
        await unit.hang_up()  # the unit ends it: its BYE reaches us
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        await unit.stop()
        await client.close()
    assert tone_share(unit.heard(), unit.heard_rate, CLIENT_TONE) > 0.5


async def test_a_unit_the_operator_called_is_called_again_when_its_worker_dies(
        two_workers, tmp_path: Path) -> None:
    """Pages rejoin by themselves when their media worker dies; a unit we called cannot,
    so the front calls it again (the worker process is killed as a crash would)."""
    server = two_workers
    room = bridge(server, local_workers=2)
    client = await client_in(server, room)
    unit = Baresip(tmp_path / "unit", auto_answer=True)
    await unit.start()
    live_rooms = server.app[LIVE_ROOMS]
    target = f"sip:unit@127.0.0.1:{unit.sip_port}"

    def calls() -> list[dict[str, Any]]:
        return [d for d in live_rooms.dials if d["target"] == target]

    async def unit_workers() -> list[int]:
        return [p["worker"] for r in await live_rooms.rooms() if r["name"] == room
                for p in r["participants"] if p["connection"] == "sip"]

    def established() -> int:
        return sum(1 for event in unit.events if event.get("type") == "CALL_ESTABLISHED")

    try:
        first = live_rooms.dial(room, target, by="operator")
        assert await wait_until(lambda: first["outcome"] == "connected", timeout=20), first
        assert await wait_until(lambda: established() == 1), unit.log[-2000:]
        (worker,) = await unit_workers()
        server.app[POOL].workers[worker].kill()
        # Its call ends (a BYE: the unit is not left in a dead call), and it is rung again.
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None, timeout=20), unit.log[-2000:]
        assert await wait_until(lambda: len(calls()) == 2 and calls()[0]["outcome"] == "connected",
                                timeout=30), calls()
        again = calls()[0]
        assert again["by"] == "operator" and again["participant"] != first["participant"]
        assert await wait_until(lambda: established() == 2), unit.log[-2000:]
        assert len(await unit_workers()) == 1
        # Ended by the unit this time: nobody calls it again.
        await unit.hang_up()
        for _ in range(50):
            if not await unit_workers():
                break
            await asyncio.sleep(0.1)
        assert not await unit_workers()
        await asyncio.sleep(1)
        assert len(calls()) == 2
    finally:
        await unit.stop()
        await client.close()


async def test_a_unit_we_called_refreshing_the_session_gets_our_offer_again(server) -> None:
    """A re-INVITE on a call we made is answered with our side of the session (our offer),
    not with the unit's own answer sent back to it."""
    room = bridge(server)
    raw = RawSip(server)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    unit_sdp = (f"v=0\r\no=unit 5 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {media.getsockname()[1]} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
                f"m=video 0 RTP/AVP 97\r\n").encode()
    dialling = asyncio.ensure_future(server.app[ROOM_UNITS].dial(room, f"sip:unit@127.0.0.1:{raw.local}"))
    try:
        invite = (await raw.responses())[0]
        assert invite.method == "INVITE"
        ok = SipMessage(status=200, reason="OK")
        for name in ("Via", "From", "Call-ID", "CSeq"):
            for value in invite.get_all(name):
                ok.add(name, value)
        ok.add("To", invite.get("To") + ";tag=abc")  # the tag sip_request's From carries
        ok.add("Contact", f"<sip:unit@127.0.0.1:{raw.local}>")
        ok.add("Content-Type", "application/sdp")
        ok.body = unit_sdp
        raw.send(ok.to_bytes())
        await asyncio.wait_for(dialling, 10)
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        our_tag = invite.get("From").split("tag=")[1]
        raw.send(raw.request("INVITE", invite.get("From").split("<")[1].split(">")[0], call_id=invite.call_id,
                             to_tag=our_tag, body=unit_sdp, branch="z9hG4bKrefresh"))
        refreshed = next(r for r in await raw.responses(3, timeout=3) if r.status == 200)
        assert refreshed.body == invite.body != unit_sdp
    finally:
        if not dialling.done():
            dialling.cancel()
        raw.close()
        media.close()
        for member in units_in(server, room):
            await server.app[LIVE_ROOMS].remove(room, member.id, "test")


async def test_calls_that_do_not_come_about_say_why(server, tmp_path: Path) -> None:
    room = bridge(server)
    units = server.app[ROOM_UNITS]
    # Nobody at that address (TCP: refused at once).
    with pytest.raises(DialFailed) as failed:
        await units.dial(room, f"sip:unit@127.0.0.1:{free_tcp_port()};transport=tcp")
    assert failed.value.outcome == "unreachable"
    # A unit that rings and is not answered (nobody in the meeting room): cancelled.
    unit = Baresip(tmp_path / "unit")
    await unit.start()
    try:
        with pytest.raises(DialFailed) as failed:
            await units.dial(room, f"sip:unit@127.0.0.1:{unit.sip_port}", ring_s=2)
        assert failed.value.outcome == "no_answer"
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None)
    finally:
        await unit.stop()
    # A unit with none of our codecs: it refuses our offer.
    unit = Baresip(tmp_path / "gsm", audio_codecs="GSM/8000/1", auto_answer=True)
    await unit.start()
    try:
        with pytest.raises(DialFailed) as failed:
            await units.dial(room, f"sip:unit@127.0.0.1:{unit.sip_port}")
        assert failed.value.outcome == "codec_mismatch", failed.value
    finally:
        await unit.stop()
    # A room that is not on: refused before anything is sent.
    with pytest.raises(DialFailed) as failed:
        await units.dial("no-such-room", f"sip:unit@127.0.0.1:{unit.sip_port}")
    assert failed.value.outcome == "refused" and failed.value.status == 404
    # An address with a line break would write headers of its own into our INVITE.
    with pytest.raises(DialFailed) as failed:
        await units.dial(room, f"sip:unit@127.0.0.1:{unit.sip_port}\r\nX-Injected: yes")
    assert failed.value.outcome == "refused" and failed.value.status == 400
    assert (await units.agent.dial("sip:unit@host\r\nX: y", "v=0\r\n")).status == 400
    assert not units.agent.dialogs and not units_in(server, room)
    assert not server.app[MEDIA].rooms.get(room) or not server.app[MEDIA].rooms[room].participants


async def test_every_copy_of_a_units_refusal_of_our_call_gets_our_ack(server, monkeypatch) -> None:
    """RFC 3261 17.1.1.2: a unit that refuses our INVITE (486 here) sends its refusal again
    until our ACK reaches it; each copy gets the ACK again, for timer D (32 s over UDP,
    shortened here) and not after. Only the first was ACKed: an ACK lost on its way left
    the unit resending its refusal for 32 s."""
    import signaling.sip.ua as ua

    monkeypatch.setattr(ua, "TIMER_D_S", 1.0)
    agent = server.app[ROOM_UNITS].agent
    raw = RawSip(server)
    dialling = asyncio.ensure_future(agent.dial(f"sip:unit@127.0.0.1:{raw.local}", OFFER.decode()))
    try:
        invite = await request_of(raw, "INVITE")
        busy = response_from(invite, 486, to_tag="busy", reason="Busy Here")
        raw.send(busy)
        first = await request_of(raw, "ACK")
        assert (await asyncio.wait_for(dialling, 5)).status == 486
        assert params(first.get_all("Via")[0])["branch"] == params(invite.get_all("Via")[0])["branch"]
        for _ in range(2):  # our ACK was lost: the refusal again, and the ACK again
            raw.send(busy)
            assert (await request_of(raw, "ACK", timeout=2)).to_bytes() == first.to_bytes()
        await asyncio.sleep(1.5)  # past timer D: the transaction is over
        raw.send(busy)
        assert await raw.responses(1, timeout=1) == []
        assert not agent._refused
    finally:
        if not dialling.done():
            dialling.cancel()
        raw.close()


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_units_camera_reaches_a_browser_and_the_unit_decodes_the_composite(
        server, tmp_path: Path) -> None:
    room = bridge(server)
    unit = Baresip(tmp_path / "unit", video=True)  # H.264 in packetization mode 0, as baresip has it
    await unit.start()
    client = await SignalClient.connect(server.ws_url)
    try:
        member = await dial_in(server, unit, room)
        # A room a unit starts forwards H.264: a page that can do it sees the unit's camera.
        grant = JoinGrant(room=room, role="guest", scheduled=True)
        await client.join_with(ClientPeer(audio=ToneTrack(CLIENT_TONE), video=ColourTrack()),
                               issue_token(server.settings.signing_secret(), grant, 300),
                               name="Krajský úřad", video_codecs=["h264", "vp8"])
        assert await wait_until(lambda: client.live_frames("video").get(member.id, 0) > 15, timeout=20)
        # The unit gets the composite in H.264 and decodes it.
        assert await wait_until(lambda: member.media_counts()["video_out"] > 30, timeout=15)
        assert await wait_until(lambda: unit.decoded_fps() > 5, timeout=15), unit.log[-3000:]
        # baresip offers level 3.1 (42e01f): the largest size that takes, up to our cap.
        assert member.composite_size == (1280, 720)
        assert b"receiving with resolution 1280 x 720" in unit.log
        mixer = server.app[MEDIA].rooms[room].mixer
        assert mixer is not None and member.id in mixer.decoders.selected  # its tile is decoded
    finally:
        await unit.stop()
        await client.close()


async def test_in_a_vp8_room_browsers_see_the_units_camera_encoded_again_once(server, tmp_path: Path) -> None:
    room = bridge(server)
    # A page starts the room: it forwards VP8, which the unit does not send.
    pages = [await SignalClient.connect(server.ws_url) for _ in range(2)]
    unit = Baresip(tmp_path / "unit", video=True)
    await unit.start()
    try:
        grant = JoinGrant(room=room, role="guest", scheduled=True)
        for page in pages:
            await page.join_with(ClientPeer(audio=ToneTrack(CLIENT_TONE), video=ColourTrack()),
                                 issue_token(server.settings.signing_secret(), grant, 300),
                                 name="Obecní úřad", video_codecs=["vp8"])
        member = await dial_in(server, unit, room)
        assert member.producers["camera"].codec == "h264"
        for page in pages:  # both decode it, in VP8
            assert await wait_until(lambda p=page: p.live_frames("video").get(member.id, 0) > 15, timeout=20)
        again = member.producers["camera_vp8"]
        assert again.codec == "vp8" and len(again.consumers) == 2
        encoded = member._camera_vp8.frames_encoded
        assert encoded > 15
        # Once for both pages: as many frames as the unit sent, not twice as many.
        assert encoded <= member.producers["camera"].packets
        # Nobody shows it: it is no longer encoded.
        for page in pages:
            await page.close()
        assert await wait_until(lambda: not again.consumers, timeout=10)
        assert again._tap not in member.producers["camera"].taps  # C keeps its packets
        await asyncio.sleep(0.5)
        idle = member._camera_vp8.frames_encoded
        await asyncio.sleep(1.5)
        assert member._camera_vp8.frames_encoded == idle
    finally:
        await unit.stop()
        for page in pages:
            await page.close()


def h264_offer(audio_port: int, video_port: int, profile_level_id: str) -> bytes:
    """A unit's offer with Opus and H.264 of that profile and level, RTCP muxed."""
    return (b"v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            + f"m=audio {audio_port} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\n"
              f"m=video {video_port} RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
              f"a=fmtp:97 profile-level-id={profile_level_id};packetization-mode=1\r\n"
              "a=rtcp-mux\r\n".encode())


class PictureSizes:
    """The H.264 that reaches a plain RTP socket, depacketized and decoded by FFmpeg: the
    size of each picture."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.depacketizer = H264Depacketizer()
        self.decoder = av.CodecContext.create("h264", "r")
        self.sizes: list[tuple[int, int]] = []

    def read(self) -> list[tuple[int, int]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.sizes
            if 192 <= data[1] <= 223:  # our RTCP, muxed
                continue
            view = rtp.parse_rtp(data)
            frame = self.depacketizer.push(view.sequence_number, view.timestamp, view.marker,
                                           data[view.payload_start:view.payload_end])
            if frame is not None:
                self.sizes += [(p.width, p.height) for p in self.decoder.decode(av.Packet(frame.data))]


async def test_each_unit_gets_the_composite_at_the_size_its_h264_level_takes(server, tmp_path: Path) -> None:
    room = bridge(server)
    unit = Baresip(tmp_path / "unit", video=True)  # level 3.1: 1280x720
    await unit.start()
    raw = RawSip(server)
    audio, video = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        member = await dial_in(server, unit, room)
        # A second unit, by hand, whose decoder is level 1.3 (CIF's 396 macroblocks).
        for sock in (audio, video):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        offer = h264_offer(audio.getsockname()[1], video.getsockname()[1], "42e00d")
        uri = f"sip:{room}@127.0.0.1"
        raw.send(raw.request("INVITE", uri, call_id="cif", body=offer, branch="z9hG4bKcif"))
        ok = next(r for r in await raw.responses(2) if r.status == 200)
        assert b"m=video 0 " not in ok.body  # its video was taken
        to_tag = ok.get("To").split("tag=")[1]
        raw.send(raw.request("ACK", uri, call_id="cif", to_tag=to_tag, branch="z9hG4bKcifack"))
        assert await wait_until(lambda: len(units_in(server, room)) == 2)
        small = next(u for u in units_in(server, room) if u.id != member.id)
        assert small.composite_size == (320, 180)
        # What reaches its socket decodes at 320x180, while baresip decodes 1280x720.
        pictures = PictureSizes(video)
        assert await wait_until(lambda: len(pictures.read()) > 10, timeout=15)
        assert set(pictures.sizes) == {(320, 180)}
        assert await wait_until(lambda: unit.decoded_fps() > 5, timeout=15), unit.log[-3000:]
        assert b"receiving with resolution 1280 x 720" in unit.log
        mixer = server.app[MEDIA].rooms[room].mixer
        assert sorted(mixer.h264_sizes) == [(320, 180), (1280, 720)]  # one encode for each size
        raw.send(raw.request("BYE", uri, call_id="cif", cseq=2, to_tag=to_tag, branch="z9hG4bKcifbye"))
        # The small unit gone, its size is no longer encoded; baresip's picture goes on.
        assert await wait_until(lambda: sorted(mixer.h264_sizes) == [(1280, 720)], timeout=10)
    finally:
        await unit.stop()
        raw.close()
        audio.close()
        video.close()


async def test_a_test_call_checks_video_both_ways_and_says_when_it_was_not_tested(
        server, tmp_path: Path) -> None:
    results: list[dict[str, Any]] = []

    async def record(result: dict[str, Any]) -> int:
        results.append(result)
        return len(results)

    calls = UnitTestCalls(server.app[ROOM_UNITS], record)
    unit = Baresip(tmp_path / "video", video=True, auto_answer=True)
    await unit.start()
    try:
        await calls.run("SN-VIDEO", f"sip:unit@127.0.0.1:{unit.sip_port}")
    finally:
        await unit.stop()
    verdict = results[-1]
    figures = verdict["figures"]
    assert verdict["passed"] is True, verdict
    assert figures["video_tested"] == 1
    # Its camera decoded in the composite (15 fps for the 8 s, a key frame first) ...
    assert figures["video_from_unit_frames"] >= 2 * figures["seconds"]
    assert figures["video_from_unit_keyframes"] >= 1 and figures["video_from_unit_packets"] > 0
    # ... and the composite at 1280x720 reached it: its receiver reports within the window.
    assert figures["video_to_unit_packets"] > 0 and figures["video_receiver_reports"] >= 1
    assert (figures["video_to_unit_width"], figures["video_to_unit_height"]) == (1280, 720)
    # A unit without video passes on sound alone; the verdict says video was not tested.
    unit = Baresip(tmp_path / "audio", auto_answer=True)
    await unit.start()
    try:
        await calls.run("SN-AUDIO", f"sip:unit@127.0.0.1:{unit.sip_port}")
    finally:
        await unit.stop()
    verdict = results[-1]
    assert verdict["passed"] is True, verdict
    assert verdict["figures"]["video_tested"] == 0
    assert verdict["figures"]["video_from_unit_frames"] is None
    assert verdict["figures"]["video_to_unit_packets"] is None


# SIPp (Debian's sip-tester): scripted floods of what we refuse, beside a live call. ------------

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "sipp"


async def sipp(server, scenario: str, service: str, calls: int, rate: int, workdir: Path) -> int:
    """Run a SIPp scenario against our SIP port; its exit status (0: every call as scripted)."""
    port = server.app[ROOM_UNITS].agent.udp_port
    process = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(SCENARIOS / scenario), "-s", service, f"127.0.0.1:{port}", "-i", "127.0.0.1",
        "-p", "0", "-m", str(calls), "-r", str(rate), "-timeout", "40s", "-trace_err",
        "-error_file", str(workdir / "sipp-errors.log"),
        cwd=workdir, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, errors = await process.communicate()
    assert process.returncode is not None
    if process.returncode:
        log = workdir / "sipp-errors.log"
        print(errors.decode(errors="replace")[-2000:], log.read_text()[-3000:] if log.exists() else "")
    return process.returncode


@pytest.mark.skipif(SIPP is None, reason="no sipp (scripts/test installs sip-tester)")
async def test_floods_of_bad_calls_and_unknown_methods_get_clear_answers_and_disturb_no_call(
        server, tmp_path: Path) -> None:
    async with unit_called_in(server, tmp_path) as (room, client, _, member):
        # 100 INVITEs offering G.729 and H.263 at 50 a second into the same room: 488 each.
        seen = server.app[ROOM_UNITS].agent.counters["messages"]
        assert await sipp(server, "bad_sdp_invites.xml", room, 100, 50, tmp_path) == 0
        assert server.app[ROOM_UNITS].agent.counters["messages"] >= seen + 200  # INVITE and ACK
        # REGISTER and an unknown method, 50 times: 405 and 501.
        assert await sipp(server, "unknown_methods.xml", room, 50, 50, tmp_path) == 0
        # Calls whose re-INVITEs refresh the session (200), hold it (200, recvonly), ask
        # for another codec (488, the call goes on) or carry no offer (200 with ours).
        assert await sipp(server, "reinvite.xml", room, 5, 5, tmp_path) == 0
        # The unit's call went on through it all, both ways, and it is still the only one.
        heard = member.media_counts()["audio_in"]
        assert await wait_until(lambda: member.media_counts()["audio_in"] > heard + 50)
        assert hears(client, UNIT_TONE)
        assert [u.id for u in units_in(server, room)] == [member.id]
        assert await wait_until(lambda: len(server.app[ROOM_UNITS].agent.dialogs) == 1)


async def test_a_call_over_tls(server, tmp_path: Path) -> None:
    from tests.browser.test_turn import self_signed

    room = bridge(server)
    certificate, key = self_signed(tmp_path)
    agent = server.app[ROOM_UNITS].agent
    await agent.start_tls(0, str(certificate), str(key), cafile=str(certificate))
    context = ssl.create_default_context(cafile=str(certificate))
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.tls_port, ssl=context,
                                                   server_hostname="localhost")
    local = writer.get_extra_info("sockname")[1]

    def request(method: str, cseq: int, to_tag: str = "", body: bytes = b"") -> bytes:
        return sip_request(method, f"sip:{room}@127.0.0.1", transport="TLS", local_port=local,
                           call_id="tls-call", cseq=cseq, body=body, to_tag=to_tag,
                           branch=f"z9hG4bKtls{cseq}{method}", sender="Unit over TLS")

    buffer = bytearray()

    async def response() -> SipMessage:
        while True:
            data = frame(buffer)
            if data is not None:
                return parse(data)
            buffer.extend(await asyncio.wait_for(reader.read(4096), 10))

    try:
        writer.write(request("INVITE", 1, body=OFFER))
        assert (await response()).status == 100
        ok = await response()
        assert ok.status == 200 and ";transport=tls" in ok.get("Contact")
        assert b"m=audio" in ok.body
        to_tag = ok.get("To").split("tag=")[1]
        writer.write(request("ACK", 1, to_tag))
        assert await wait_until(lambda: [u.name for u in units_in(server, room)] == ["Unit over TLS"])
        writer.write(request("BYE", 2, to_tag))
        assert (await response()).status == 200
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        writer.close()


# A meeting's number and its PIN over DTMF (RFC 4733) ---------------------------------------


def numbered_bridge(server) -> tuple[str, str, str]:
    """A bridge's room, number and PIN."""
    made = new_bridge(server)
    return made.room_name, bridge_number(made.id), made.dial_in_pin


def wrong(pin: str) -> str:
    return str((int(pin[0]) + 1) % 10) + pin[1:]


def waiting(server) -> int:
    """Units in a lobby: at the front, and outside their rooms on the worker."""
    return len(server.app[ROOM_UNITS].lobby) + len(server.app[POOL].workers[0].service.outside)


async def test_a_unit_dials_a_meetings_number_and_keys_in_its_pin(server, tmp_path: Path) -> None:
    room, number, pin = numbered_bridge(server)
    client = await client_in(server, room)
    unit = Baresip(tmp_path / "unit", tone_hz=UNIT_TONE)
    await unit.start()
    try:
        await unit.call(sip_uri(server, number))
        # Answered, but outside the room until the PIN: nobody hears it, it is not listed.
        assert await wait_until(lambda: waiting(server) == 2)
        await asyncio.sleep(1.5)
        assert not units_in(server, room) and not hears(client, UNIT_TONE)
        await unit.key_in(wrong(pin) + "#")  # one wrong try of three
        await asyncio.sleep(2)
        assert not units_in(server, room) and unit.saw("CALL_CLOSED") is None
        await unit.key_in(pin + "#")
        assert await wait_until(lambda: len(units_in(server, room)) == 1, timeout=15), unit.log[-2000:]
        # The front lets go of its lobby place when the worker's admit answers.
        assert await wait_until(lambda: waiting(server) == 0)
        assert await wait_until(lambda: hears(client, UNIT_TONE), timeout=15)
        member = units_in(server, room)[0]
        assert member.dtmf_events == 2 * (len(pin) + 1)
    finally:
        await unit.stop()
        await client.close()


async def test_wrong_pins_a_silent_unit_and_an_unknown_number_are_turned_away(server, tmp_path: Path) -> None:
    room, number, pin = numbered_bridge(server)
    pool = server.app[POOL]
    unit = Baresip(tmp_path / "unit")
    await unit.start()
    try:
        await unit.call(sip_uri(server, number))
        for _ in range(3):
            await unit.key_in(wrong(pin) + "#")
            await asyncio.sleep(1.5)
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None, timeout=10), unit.log[-2000:]
        assert await wait_until(lambda: waiting(server) == 0)
        assert not units_in(server, room)
        assert await wait_until(lambda: all(not state.units for state in pool.states))  # no place held
        # Keyed in nothing: hung up when the time to key it in is over.
        server.app[ROOM_UNITS].pin_timeout_s = 2.0
        unit.events.clear()
        await unit.call(sip_uri(server, number))
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None, timeout=10)
        assert await wait_until(lambda: waiting(server) == 0)
        # A number no meeting has: 404 before anything is answered.
        unit.events.clear()
        await unit.dial(sip_uri(server, "1999999"))
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None, timeout=10)
        assert "404" in unit.saw("CALL_CLOSED").get("param", "") + unit.log.decode(errors="replace")
    finally:
        await unit.stop()


async def test_a_unit_keys_in_its_pin_in_sip_info(server) -> None:
    """Units that send keys in SIP INFO (application/dtmf-relay) rather than in RTP."""
    room, number, pin = numbered_bridge(server)
    raw = RawSip(server)
    uri = f"sip:{number}@127.0.0.1"
    cseq = iter(range(2, 100))

    def info(body: bytes, to_tag: str, content_type: str = "application/dtmf-relay",
             call_id: str = "info-call") -> bytes:
        number = next(cseq)
        return raw.request("INFO", uri, call_id=call_id, cseq=number, to_tag=to_tag, body=body,
                           branch=f"z9hG4bKinfo{number}", content_type=content_type)

    try:
        raw.send(raw.request("INVITE", uri, call_id="info-call", body=OFFER, branch="z9hG4bKinfo1"))
        _, ok = await raw.responses(2)
        assert ok.status == 200
        to_tag = ok.get("To").split("tag=")[1]
        raw.send(raw.request("ACK", uri, call_id="info-call", to_tag=to_tag, branch="z9hG4bKinfo1"))
        assert await wait_until(lambda: waiting(server) == 2)
        # Outside a dialog, in a body we do not read, or naming no key: clear refusals.
        raw.send(info(b"Signal=1\r\n", "nobody", call_id="no-such-call"))
        raw.send(info(b"1", to_tag, content_type="text/plain"))
        raw.send(info(b"Signal=x\r\nDuration=160\r\n", to_tag))
        no_dialog, unread, no_key = await raw.responses(3)
        assert no_dialog.status == 481 and no_key.status == 400
        assert unread.status == 415 and "application/dtmf-relay" in unread.get("Accept")
        assert not units_in(server, room)
        # A wrong try, then the PIN, a key an INFO, ended by # (Signal=11 for some units).
        for key in [*wrong(pin), "11", *pin, "#"]:
            raw.send(info(f"Signal={key}\r\nDuration=160\r\n".encode(), to_tag))
            (answered,) = await raw.responses()
            assert answered.status == 200
        assert await wait_until(lambda: len(units_in(server, room)) == 1, timeout=15)
        assert await wait_until(lambda: waiting(server) == 0)  # once the admit has answered
        raw.send(raw.request("BYE", uri, call_id="info-call", cseq=next(cseq), to_tag=to_tag,
                             branch="z9hG4bKinfobye"))
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        raw.close()


async def test_a_unit_of_rfc_2543_without_branches_keys_in_its_pin_and_hangs_up(server) -> None:
    """A unit of RFC 2543 (older firmware) puts no branch in its Via: its transactions
    are told apart by CSeq as RFC 3261 17.2.3 says, so each key of its PIN in an INFO is
    taken, a copy of one is answered again without being taken twice, and the ACK of a
    refusal (the INVITE's CSeq) ends the refusal's copies. Every INFO after the first was taken for a copy
    of the first, answered with its 200 and its key lost: the unit never got in."""
    room, number, pin = numbered_bridge(server)
    raw = RawSip(server)
    uri = f"sip:{number}@127.0.0.1"

    def request(method: str, cseq: int, call_id: str = "old-unit", **details: Any) -> bytes:
        written = raw.request(method, uri, call_id=call_id, cseq=cseq, **details)
        return re.sub(rb";branch=[^;\r]*", b"", written)

    try:
        # A refusal (the wrong number), ACKed: not sent again.
        raw.send(re.sub(rb"sip:\d+@", b"sip:99999999@", request("INVITE", 1, "wrong", body=OFFER)))
        refused = await final_of(raw, "wrong")
        assert refused.status == 404
        raw.send(request("ACK", 1, "wrong", to_tag=tag_of(refused.get("To"))))
        assert await raw.responses(1, timeout=1.5) == []  # past T1 and 3*T1
        raw.send(request("INVITE", 1, body=OFFER))
        ok = await final_of(raw, "old-unit")
        assert ok.status == 200
        to_tag = tag_of(ok.get("To"))
        raw.send(request("ACK", 1, to_tag=to_tag))
        assert await wait_until(lambda: waiting(server) == 2)
        for cseq, key in enumerate([*pin, "#"], start=2):
            info = request("INFO", cseq, to_tag=to_tag, body=f"Signal={key}\r\n".encode(),
                           content_type="application/dtmf-relay")
            for _ in range(2 if cseq == 2 else 1):  # the first key's INFO comes twice
                raw.send(info)
                answered = [r for r in await raw.responses(1) if r.call_id == "old-unit"]
                assert [(r.status, r.cseq) for r in answered] == [(200, (cseq, "INFO"))]
        assert await wait_until(lambda: len(units_in(server, room)) == 1, timeout=15)
        raw.send(request("BYE", 10, to_tag=to_tag))
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        raw.close()


async def test_a_unit_that_hangs_up_in_the_lobby_leaves_nothing_behind(server, tmp_path: Path) -> None:
    room, number, _ = numbered_bridge(server)
    unit = Baresip(tmp_path / "unit")
    await unit.start()
    try:
        await unit.dial(sip_uri(server, number))
        assert await wait_until(lambda: waiting(server) == 2, timeout=15)
        await unit.key_in("12")  # half a PIN
        await asyncio.sleep(3)
        await unit.hang_up()
        assert await wait_until(lambda: waiting(server) == 0)
        assert not units_in(server, room)
        assert room not in server.app[ROOM_UNITS].signaling.channels
    finally:
        await unit.stop()
    # What it heard meanwhile: the lobby's cue, a beep again and again.
    assert tone_share(unit.heard(), unit.heard_rate, PROMPT_HZ) > 0.5


# Generic NACK (RFC 4585) with units that offer it ---------------------------------------------


class HandUnit:
    """A room unit written here: SIP by hand (:class:`RawSip`), its media on sockets of
    its own, plain RTP or SDES-SRTP, RTCP muxed or on ports of its own; H.264 at level
    3.0 (the composite comes at 640x360), ``nack``: it offers generic NACK; ``avpf``: in
    RFC 4585's profile for RTCP feedback (RTP/AVPF, RTP/SAVPF)."""

    def __init__(self, server, *, nack: bool, srtp: bool = False, mux: bool = True,
                 avpf: bool = False) -> None:
        self.raw = RawSip(server)
        self.nack, self.srtp, self.mux, self.avpf = nack, srtp, mux, avpf
        self.sockets: dict[str, socket.socket] = {}
        for name in ("audio", "audio_rtcp", "video", "video_rtcp", "moved"):
            sock = self.sockets[name] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        self.key = bytes(range(30))
        self.tx = pylibsrtp.Session(pylibsrtp.Policy(  # what the unit sends, with its key
            key=self.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
        self.rx: pylibsrtp.Session | None = None  # what it receives, with our key
        self.answer: Any = None
        self.to_tag = ""
        self.uri = ""
        self.ssrc = 0x5EED0001

    def offer(self, *, version: int = 1, direction: str = "sendrecv", video: str = "video",
              audio: str = "111\r\na=rtpmap:111 opus/48000/2", extra: str = "") -> bytes:
        """Its SDP: ``version`` of its session (a re-INVITE's new offer counts it up),
        which way its media flows, the socket it takes video on, an m-line added."""
        proto = ("RTP/SAVP" if self.srtp else "RTP/AVP") + ("F" if self.avpf else "")
        crypto = (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(self.key).decode()}\r\n"
                  if self.srtp else "")
        lines = f"v=0\r\no=t 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        for kind, m_line in (("audio", audio),
                             ("video", "97\r\na=rtpmap:97 H264/90000\r\n"
                                       "a=fmtp:97 profile-level-id=42e01e;packetization-mode=1\r\n"
                                       + ("a=rtcp-fb:97 nack\r\n" if self.nack else "")
                                       + "a=rtcp-fb:97 nack pli")):
            rtcp = ("a=rtcp-mux" if self.mux
                    else f"a=rtcp:{self.sockets[kind + '_rtcp'].getsockname()[1]}")
            port = self.sockets[video if kind == "video" else kind].getsockname()[1]
            lines += f"m={kind} {port} {proto} {m_line}\r\n{crypto}{rtcp}\r\na={direction}\r\n"
        return (lines + extra).encode()

    def reinvite(self, body: bytes, branch: str, cseq: int) -> bytes:
        """A re-INVITE in its call, with ``body`` as its new offer."""
        return self.raw.request("INVITE", self.uri, call_id="hand", cseq=cseq, to_tag=self.to_tag, body=body,
                                branch=branch, sender="Hand-made unit")

    async def change(self, body: bytes, branch: str, cseq: int) -> Any:
        """Send a re-INVITE and ACK its final response: that response. The ACK of a 2xx
        is a transaction of its own (a branch of its own); that of a refusal is the
        INVITE's, with its branch (RFC 3261 17.1.1.3), or the refusal comes again."""
        self.raw.send(self.reinvite(body, branch, cseq))
        final = next(r for r in await self.raw.responses(2) if r.status >= 200)
        self.raw.send(self.raw.request("ACK", self.uri, call_id="hand", cseq=cseq, to_tag=self.to_tag,
                                       branch=branch + "ack" if final.status < 300 else branch))
        return final

    async def call(self, room: str, direction: str = "sendrecv") -> None:
        self.uri = f"sip:{room}@127.0.0.1"
        self.raw.send(self.raw.request("INVITE", self.uri, call_id="hand",
                                       body=self.offer(direction=direction), branch="z9hG4bKhand",
                                       sender="Hand-made unit"))
        ok = next(r for r in await self.raw.responses(2) if r.status == 200)
        self.to_tag = ok.get("To").split("tag=")[1]
        self.raw.send(self.raw.request("ACK", self.uri, call_id="hand", to_tag=self.to_tag,
                                       branch="z9hG4bKhandack"))
        self.answer = parse_offer(ok.body.decode())
        self.answer_sdp = ok.body.decode()
        video = self.answer.media[1]
        assert video.port, ok.body
        if self.srtp:
            self.rx = pylibsrtp.Session(pylibsrtp.Policy(
                key=video.crypto[0].key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))

    @property
    def our_video_rtcp(self) -> tuple[str, int]:
        """Where our video m-line takes the unit's RTCP (muxed: its RTP port)."""
        video = self.answer.media[1]
        return "127.0.0.1", (video.port if self.mux else video.rtcp_port)

    def datagrams(self, name: str) -> list[bytes]:
        found = []
        while True:
            try:
                found.append(self.sockets[name].recv(65536))
            except BlockingIOError:
                return found

    def send_rtcp(self, packet: bytes) -> None:
        if self.srtp:
            packet = self.tx.protect_rtcp(packet)
        self.sockets["video_rtcp" if not self.mux else "video"].sendto(packet, self.our_video_rtcp)

    def send_rtp(self, packet: bytes) -> None:
        if self.srtp:
            packet = self.tx.protect(packet)
        self.sockets["video"].sendto(packet, ("127.0.0.1", self.answer.media[1].port))

    def rtcp_received(self) -> list[Any]:
        """Our RTCP on its video m-line since the last call, parsed."""
        packets = []
        for data in self.datagrams("video" if self.mux else "video_rtcp"):
            if not 192 <= data[1] <= 223:
                continue  # RTP, muxed: not read here
            if self.rx is not None:
                data = self.rx.unprotect_rtcp(data)
            packets += adapter.parse_rtcp(data)
        return packets

    def hang_up(self) -> None:
        self.raw.send(self.raw.request("BYE", self.uri, call_id="hand", cseq=2, to_tag=self.to_tag,
                                       branch="z9hG4bKhandbye"))

    def close(self) -> None:
        self.raw.close()
        for sock in self.sockets.values():
            sock.close()


@pytest.mark.parametrize(("nack", "srtp", "mux"), [
    (True, False, True),
    # SRTP and RTCP on a port of its own: a resent packet is SRTP on the RTP port, not
    # SRTCP on the RTCP one.
    (True, True, False),
    (False, False, True),  # not offered: not answered, NACKs not heeded
], ids=["nack-plain-muxed", "nack-srtp-rtcp-port", "no-nack"])
async def test_a_unit_that_offers_nack_gets_the_composites_lost_packets_again(
        server, nack: bool, srtp: bool, mux: bool) -> None:
    room = bridge(server)
    unit = HandUnit(server, nack=nack, srtp=srtp, mux=mux)
    counters = server.app[MEDIA].counters
    try:
        await unit.call(room)
        video = unit.answer.media[1]
        assert video.feedback(97) >= {"nack pli", "ccm fir"}
        assert ("nack" in video.feedback(97)) is nack  # our answer: only what it offered
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        # The composite as it comes: by sequence number, the bytes that came (SRTP: as
        # sent); a few of them the unit "loses" (it never opens them).
        wire: dict[int, bytes] = {}
        plain: dict[int, bytes] = {}
        lost: list[int] = []
        again: dict[int, bytes] = {}

        def read() -> int:
            for data in unit.datagrams("video"):
                if 192 <= data[1] <= 223:
                    continue  # our RTCP, muxed
                seq = int.from_bytes(data[2:4], "big")
                if seq in lost:
                    if seq in wire:
                        again[seq] = data
                        continue
                    wire[seq] = data
                    continue
                wire[seq] = data
                plain[seq] = unit.rx.unprotect(data) if unit.rx is not None else data
            return len(wire)

        assert await wait_until(lambda: read() >= 10, timeout=15)
        ssrc = int.from_bytes(next(iter(plain.values()))[8:12], "big")
        # It lost the next three packets: it sees the one after them, and NACKs them.
        newest = max(wire, key=lambda s: (s - min(wire)) & 0xFFFF)
        lost += [(newest + i) & 0xFFFF for i in (1, 2, 3)]
        assert await wait_until(lambda: read() and all(s in wire for s in lost), timeout=10)
        nacks, resent = counters.nacks_received, counters.retransmissions
        unit.send_rtcp(rtp.rtcp_nack(unit.ssrc, ssrc, lost))
        if nack:
            assert await wait_until(lambda: read() and len(again) == 3, timeout=5), (lost, sorted(again))
            assert counters.nacks_received == nacks + 1 and counters.retransmissions == resent + 3
            for seq in lost:
                # The same packet as the first time: same SSRC, number, timestamp, payload
                # (SRTP: the same packet index, so the same bytes on the wire)...
                assert again[seq] == wire[seq]
                # ...and a real SRTP unit, which never opened the lost one, opens it now.
                opened = unit.rx.unprotect(again[seq]) if unit.rx is not None else again[seq]
                view = rtp.parse_rtp(opened)
                assert view.ssrc == ssrc and view.sequence_number == seq
        else:
            await asyncio.sleep(1.5)
            read()
            assert not again and (counters.nacks_received, counters.retransmissions) == (nacks, resent)
        unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        unit.close()


class HandCamera:
    """The hand-made unit's camera: libx264 (320x180, constrained baseline) from a noisy
    picture, sent at 15 fps on its video m-line, a key frame whenever we ask (PLI/FIR).
    It reads our RTCP there: the NACKs it gets, by sequence number."""

    def __init__(self, unit: HandUnit) -> None:
        self.unit = unit
        self.encoder = H264Encoder(320, 180)
        self.seq = 1000
        self.sent: dict[int, bytes] = {}
        self.nacked: list[int] = []
        self.drop_next = False  # "lose" the first packet of the next frame that is no key frame
        self.dropped: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        rng = np.random.default_rng(1)
        keyframe = True
        for index in itertools.count():
            for packet in self.unit.rtcp_received():
                if isinstance(packet, adapter.RtcpPsfb) \
                        and packet.fmt in (rtp.RTCP_PSFB_PLI, rtp.RTCP_PSFB_FIR):
                    keyframe = True
                elif isinstance(packet, adapter.RtcpRtpfb) and packet.fmt == rtp.RTCP_RTPFB_NACK \
                        and packet.media_ssrc == self.unit.ssrc:
                    self.nacked += adapter.nack_lost(packet)
            picture = rng.integers(0, 255, (270, 320), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            frame.pts = index * 6000
            for access_unit, timestamp, is_key in self.encoder.encode(frame, keyframe=keyframe):
                payloads = packetize_h264(access_unit)
                for position, payload in enumerate(payloads):
                    packet = rtp.rtp_header(97, position == len(payloads) - 1, self.seq, timestamp,
                                            self.unit.ssrc, False) + payload
                    self.sent[self.seq] = packet
                    if self.drop_next and not is_key and position == 0:
                        self.drop_next, self.dropped = False, self.seq
                    else:
                        self.unit.send_rtp(packet)
                    self.seq = (self.seq + 1) & 0xFFFF
            keyframe = False
            await asyncio.sleep(1 / 15)


@pytest.mark.parametrize("nack", [True, False], ids=["nack", "no-nack"])
async def test_what_a_browser_misses_of_a_units_camera_is_nacked_to_the_unit(server, nack: bool) -> None:
    room = bridge(server)
    unit = HandUnit(server, nack=nack)
    camera = HandCamera(unit)
    client = await SignalClient.connect(server.ws_url)
    try:
        await unit.call(room)  # the unit starts the room: it forwards H.264
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        member = units_in(server, room)[0]
        assert member.producers["camera"].nacks_upstream is nack
        camera.start()
        grant = JoinGrant(room=room, role="guest", scheduled=True)
        await client.join_with(ClientPeer(audio=ToneTrack(CLIENT_TONE), video=ColourTrack()),
                               issue_token(server.settings.signing_secret(), grant, 300),
                               name="Krajský úřad", video_codecs=["h264", "vp8"])
        assert await wait_until(lambda: client.live_frames("video").get(member.id, 0) > 5, timeout=20)
        live = server.app[MEDIA].rooms[room]
        leg = next(c.leg for p in live.participants.values() if p is not member
                   for c in p.consumers.values() if c.producer is member.producers["camera"])
        # A packet lost between the unit and us: the browser's NACK for it finds nothing
        # in its leg's history, and goes on to the unit, by the unit's own number.
        camera.drop_next = True
        assert await wait_until(lambda: camera.dropped is not None, timeout=5)
        lost = camera.dropped
        assert lost is not None
        at_browser = (lost + leg.seq_offset) & 0xFFFF
        if not nack:
            await asyncio.sleep(2)
            assert lost not in camera.nacked and leg.sent(at_browser) is None
            return
        assert await wait_until(lambda: lost in camera.nacked, timeout=5), camera.nacked
        assert leg.sent(at_browser) is None
        # The unit resends it, late, with its number: it is forwarded in its place.
        unit.send_rtp(camera.sent[lost])
        assert await wait_until(lambda: leg.sent(at_browser) is not None, timeout=5)
        resent = rtp.parse_rtp(leg.sent(at_browser))
        original = rtp.parse_rtp(camera.sent[lost])
        assert leg.sent(at_browser)[resent.payload_start:resent.payload_end] \
            == camera.sent[lost][original.payload_start:original.payload_end]
        assert resent.timestamp == (original.timestamp + leg.ts_offset) & 0xFFFFFFFF
    finally:
        camera.stop()
        await client.close()
        unit.hang_up()
        unit.close()

async def test_a_unit_that_starts_its_camera_mid_call_is_seen_by_browsers_of_a_vp8_room(server) -> None:
    """A unit that took only the composite at first and sends its camera later (a
    re-INVITE from recvonly to sendrecv) is encoded again in VP8 for the browsers, as a
    unit that sent it from the start is."""
    room = bridge(server)
    page = await SignalClient.connect(server.ws_url)  # a page starts the room: it forwards VP8
    unit = HandUnit(server, nack=False)
    camera = HandCamera(unit)
    try:
        grant = JoinGrant(room=room, role="guest", scheduled=True)
        await page.join_with(ClientPeer(audio=ToneTrack(CLIENT_TONE), video=ColourTrack()),
                             issue_token(server.settings.signing_secret(), grant, 300),
                             name="Obecní úřad", video_codecs=["vp8"])
        await unit.call(room, direction="recvonly")  # the composite, no camera of its own
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        member = units_in(server, room)[0]
        assert "camera_vp8" not in member.producers

        # It starts its camera: a new offer, then H.264 on its video m-line.
        started = await unit.change(unit.offer(version=2), "z9hG4bKcamera", 3)
        assert started.status == 200, started.reason
        camera.start()
        assert await wait_until(lambda: page.live_frames("video").get(member.id, 0) > 5, timeout=20)
        again = member.producers["camera_vp8"]
        assert again.codec == "vp8" and len(again.consumers) == 1
        assert member._camera_vp8.frames_encoded > 5
    finally:
        camera.stop()
        await page.close()
        unit.hang_up()
        unit.close()


def composite_packets(unit: HandUnit, socket_name: str) -> list[bytes]:
    """The composite's RTP that came to one of the unit's sockets since the last call."""
    return [d for d in unit.datagrams(socket_name) if not 192 <= d[1] <= 223]


@pytest.mark.parametrize("srtp", [False, True], ids=["avpf", "savpf"])
async def test_a_unit_offering_the_rtcp_feedback_profile_is_answered_in_it(server, srtp: bool) -> None:
    """A unit may offer its media in RFC 4585's profile for RTCP feedback (RTP/AVPF, or
    RTP/SAVPF with SRTP), which is what we do on RTP/AVP anyway (PLI, FIR, NACK): it is
    answered in that profile (RFC 3264 6: the answer's is the offer's) and its call goes
    as any other, re-INVITEs too; a change of profile mid-call is refused as SRTP's is.
    It was refused 488, "no audio codec in common: offered opus", with Opus offered."""
    room = bridge(server)
    unit = HandUnit(server, nack=True, srtp=srtp, avpf=True)
    profile = "RTP/SAVPF" if srtp else "RTP/AVPF"
    try:
        await unit.call(room)
        assert [m.proto for m in unit.answer.media] == [profile, profile]
        assert await wait_until(lambda: len(composite_packets(unit, "video")) > 0, timeout=15)
        held = await unit.change(unit.offer(version=2, direction="sendonly"), "z9hG4bKavpfhold", 3)
        assert held.status == 200, held.reason
        assert [m.proto for m in parse_offer(held.body.decode()).media] == [profile, profile]
        unit.avpf = False
        changed = await unit.change(unit.offer(version=3), "z9hG4bKavpfgone", 4)
        assert changed.status == 488 and "profile" in changed.get("Warning"), changed
        unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        unit.close()


async def test_a_unit_holds_the_call_takes_it_back_and_moves_its_media(server) -> None:
    """re-INVITEs with a new offer (RFC 3264 8), as room systems send them: hold (it
    only sends), resume with its video on another port; what we cannot do (another
    codec) is refused with 488 and the call goes on; an m-line it adds (content) is
    declined in the answer; a re-INVITE while one is being answered gets 500."""
    room = bridge(server)
    unit = HandUnit(server, nack=False)
    try:
        await unit.call(room)
        session_id, version = origin(unit.answer_sdp)
        assert await wait_until(lambda: len(composite_packets(unit, "video")) > 0, timeout=15)

        held = await unit.change(unit.offer(version=2, direction="sendonly"), "z9hG4bKhold", 3)
        assert held.status == 200, held.reason
        assert [m.direction for m in parse_offer(held.body.decode()).media] == ["recvonly", "recvonly"]
        assert origin(held.body.decode()) == (session_id, version + 1)  # the same session, counted up
        await asyncio.sleep(0.5)
        composite_packets(unit, "video")  # what was on its way
        await asyncio.sleep(1.5)
        assert composite_packets(unit, "video") == []  # on hold: nothing sent to it
        assert len(units_in(server, room)) == 1

        resumed = await unit.change(unit.offer(version=3, video="moved"), "z9hG4bKresume", 4)
        assert resumed.status == 200, resumed.reason
        answered = parse_offer(resumed.body.decode())
        assert [m.direction for m in answered.media] == ["sendrecv", "sendrecv"]
        assert answered.media[1].port == unit.answer.media[1].port  # our ports stay
        assert await wait_until(lambda: len(moved := composite_packets(unit, "moved")) > 0
                                and is_keyframe_start(rtp.parse_rtp(moved[0]).payload(moved[0]), CODEC_H264),
                                timeout=10)  # on its new port, from a keyframe
        assert composite_packets(unit, "video") == []

        # Its sound in G.711 from now on: we cannot change codecs in a call.
        refused = await unit.change(unit.offer(version=4, video="moved", audio="0\r\na=rtpmap:0 PCMU/8000"),
                                    "z9hG4bKcodec", 5)
        assert refused.status == 488 and "codec" in refused.get("Warning")
        await asyncio.sleep(0.3)
        composite_packets(unit, "moved")
        assert await wait_until(lambda: len(composite_packets(unit, "moved")) > 3)  # the call goes on

        # Content sharing as a second video m-line: declined in place, the rest kept.
        content = (f"m=video {unit.sockets['video_rtcp'].getsockname()[1]} RTP/AVP 97\r\n"
                   "a=rtpmap:97 H264/90000\r\na=content:slides\r\na=sendonly\r\n")
        shared = await unit.change(unit.offer(version=5, video="moved", extra=content), "z9hG4bKcontent", 6)
        assert shared.status == 200
        ports = [m.port for m in parse_offer(shared.body.decode()).media]
        assert ports[:2] == [m.port for m in answered.media] and ports[2] == 0

        # A new offer, and two more re-INVITEs (another offer, a refresh) before it is
        # answered: the first is answered, the others get 500 with a Retry-After of 0 to
        # 10 s (RFC 3261 14.2; 491 is for an INVITE of ours in progress) and wait their turn.
        unit.raw.send(unit.reinvite(unit.offer(version=6, video="moved"), "z9hG4bKfirst", 7))
        unit.raw.send(unit.reinvite(unit.offer(version=7, video="moved"), "z9hG4bKsecond", 8))
        unit.raw.send(unit.reinvite(unit.offer(version=5, video="moved"), "z9hG4bKthird", 9))
        finals = {r.cseq[0]: r for r in await unit.raw.responses(5) if r.status >= 200}
        assert {cseq: r.status for cseq, r in finals.items()} == {7: 200, 8: 500, 9: 500}
        assert all(0 <= int(finals[cseq].get("Retry-After")) <= 10 for cseq in (8, 9))
        for cseq, branch in ((8, "z9hG4bKsecond"), (9, "z9hG4bKthird")):  # (ACKs of the 500s)
            unit.raw.send(unit.raw.request("ACK", unit.uri, call_id="hand", cseq=cseq, to_tag=unit.to_tag,
                                           branch=branch))
        # Not the ACK of our 200: it goes on. (Copies of the 500s sent before their ACKs
        # came are skipped: a refusal goes again until its ACK, RFC 3261 17.2.1.)
        again = [r for r in await unit.raw.responses(4, timeout=3) if r.status != 500]
        assert [(r.status, r.cseq[0]) for r in again][:1] == [(200, 7)]
        unit.raw.send(unit.raw.request("ACK", unit.uri, call_id="hand", cseq=7, to_tag=unit.to_tag,
                                       branch="z9hG4bKfirstack"))
        assert await wait_until(lambda: len(composite_packets(unit, "moved")) > 3)
        unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        unit.close()


async def test_a_unit_holding_with_the_address_0_0_0_0_is_sent_nothing(server) -> None:
    """A unit that puts the call on hold as RFC 2543 had it, its SDP's address 0.0.0.0
    (older room systems still do), is sent nothing, neither RTP nor RTCP (RFC 3264 8.4),
    and answered recvonly; with its address back it gets the composite again. We sent
    the mix, the composite and our reports to 0.0.0.0, that is to our own host at the
    unit's ports."""
    room = bridge(server)
    unit = HandUnit(server, nack=False)
    try:
        await unit.call(room)
        assert await wait_until(lambda: len(composite_packets(unit, "video")) > 0, timeout=15)
        unspecified = unit.offer(version=2).replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")
        held = await unit.change(unspecified, "z9hG4bKzeros", 3)
        assert held.status == 200, held.reason
        assert [m.direction for m in parse_offer(held.body.decode()).media] == ["recvonly", "recvonly"]
        await asyncio.sleep(0.5)
        for name in ("audio", "video"):
            unit.datagrams(name)  # what was on its way
        await asyncio.sleep(2.5)  # more than our reports' second
        assert unit.datagrams("audio") == unit.datagrams("video") == []  # (sent to 0.0.0.0: here)
        assert len(units_in(server, room)) == 1

        resumed = await unit.change(unit.offer(version=3), "z9hG4bKback", 4)
        assert resumed.status == 200, resumed.reason
        assert [m.direction for m in parse_offer(resumed.body.decode()).media] == ["sendrecv", "sendrecv"]
        assert await wait_until(lambda: len(composite_packets(unit, "video")) > 3, timeout=10)
        unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        unit.close()


async def test_a_unit_takes_the_call_back_from_hold_with_a_reinvite_without_an_offer(server) -> None:
    """A unit on hold that takes the call back with a re-INVITE without an offer (as
    units behind a call manager do: RFC 3261 14.2, RFC 6337 5.3) gets our offer in the
    200 with every stream sendrecv, and its answer in the ACK is taken: the composite
    comes again; one that answers sendonly (it still holds) is sent nothing. Our 200
    offered the session as it was, recvonly, so the unit could not take the call back,
    and what it answered in its ACK was not read."""
    room = bridge(server)
    unit = HandUnit(server, nack=False)
    try:
        await unit.call(room)
        assert await wait_until(lambda: len(composite_packets(unit, "video")) > 0, timeout=15)
        held = await unit.change(unit.offer(version=2, direction="sendonly"), "z9hG4bKheld", 3)
        assert held.status == 200, held.reason
        await asyncio.sleep(0.5)
        composite_packets(unit, "video")  # what was on its way

        for cseq, answered, version in ((4, "sendonly", 3), (5, "sendrecv", 4)):
            branch = f"z9hG4bKnooffer{cseq}"
            unit.raw.send(unit.reinvite(b"", branch, cseq))
            ok = next(r for r in await unit.raw.responses(2) if r.status >= 200)
            assert ok.status == 200, ok.reason
            assert [m.direction for m in parse_offer(ok.body.decode()).media] == ["sendrecv", "sendrecv"]
            unit.raw.send(unit.raw.request("ACK", unit.uri, call_id="hand", cseq=cseq, to_tag=unit.to_tag,
                                           branch=branch + "ack", body=unit.offer(version=version,
                                                                                   direction=answered)))
            await asyncio.sleep(1)
            composite_packets(unit, "video")  # what went before the answer came
            if answered == "sendonly":  # still on hold: nothing
                await asyncio.sleep(1.5)
                assert composite_packets(unit, "video") == []
        assert await wait_until(lambda: len(composite_packets(unit, "video")) > 3, timeout=10)
        unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        unit.close()


async def test_a_reinvite_cancelled_before_its_answer_gets_487_and_the_call_goes_on_as_it_was(
        server, monkeypatch) -> None:
    """RFC 3261 9.2: a unit that CANCELs its re-INVITE (a hold here) while its worker is
    still answering it gets 200 to the CANCEL and 487 to the re-INVITE, and the call goes
    on with the session as it was: the composite still comes to it, and our answer to its
    next offer counts our SDP's version up from the one it has (RFC 3264 8). The CANCEL
    was answered 200 and the re-INVITE 200 too, the hold taken, once the worker answered."""
    room = bridge(server)
    units = server.app[ROOM_UNITS]
    unit = HandUnit(server, nack=False)
    go_on = asyncio.Event()
    reinvited = units.reinvited

    async def slow_reinvited(*args: Any, **kwargs: Any) -> tuple[int, str, str]:
        await go_on.wait()  # the worker's answer on its way
        return await reinvited(*args, **kwargs)

    monkeypatch.setattr(units, "reinvited", slow_reinvited)
    try:
        await unit.call(room)
        session_id, version = origin(unit.answer_sdp)
        assert await wait_until(lambda: len(composite_packets(unit, "video")) > 0, timeout=15)
        unit.raw.send(unit.reinvite(unit.offer(version=2, direction="sendonly"), "z9hG4bKheld", 3))
        assert [r.status for r in await unit.raw.responses(1)] == [100]
        unit.raw.send(unit.raw.request("CANCEL", unit.uri, call_id="hand", cseq=3, to_tag=unit.to_tag,
                                       branch="z9hG4bKheld", sender="Hand-made unit"))
        answers = {r.cseq: r.status for r in await unit.raw.responses(2, timeout=3)}
        assert answers == {(3, "CANCEL"): 200, (3, "INVITE"): 487}, answers
        unit.raw.send(unit.raw.request("ACK", unit.uri, call_id="hand", cseq=3, to_tag=unit.to_tag,
                                       branch="z9hG4bKheld"))
        go_on.set()
        assert await unit.raw.responses(1, timeout=2) == []  # no 200 to it after all
        await asyncio.sleep(0.5)
        composite_packets(unit, "video")
        await asyncio.sleep(1)
        assert len(composite_packets(unit, "video")) > 3  # not on hold: the session as it was
        held = await unit.change(unit.offer(version=3, direction="sendonly"), "z9hG4bKheldnow", 4)
        assert held.status == 200, held.reason
        assert origin(held.body.decode()) == (session_id, version + 1)
        assert [m.direction for m in parse_offer(held.body.decode()).media] == ["recvonly", "recvonly"]
        unit.hang_up()
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        go_on.set()
        unit.close()


async def test_baresip_puts_the_call_on_hold_and_takes_it_back(server, tmp_path: Path) -> None:
    """A SIP endpoint nobody here wrote holds the call (its re-INVITE: a=sendonly) and
    resumes it: the mix stops going to it while held and comes back, and the room goes
    on hearing it, in the same call."""
    async with unit_called_in(server, tmp_path) as (room, client, unit, member):
        assert await wait_until(lambda: member.media_counts()["audio_out"] > 100, timeout=15)
        await unit.command("hold")
        voice = member.slots["voice"][0]
        assert await wait_until(lambda: voice.leg.sink is None, timeout=10), unit.log[-2000:]
        await asyncio.sleep(0.3)
        sent = member.media_counts()["audio_out"]
        await asyncio.sleep(1.5)
        assert member.media_counts()["audio_out"] == sent  # held: nothing sent to it
        await unit.command("resume")
        assert await wait_until(lambda: member.media_counts()["audio_out"] > sent + 50, timeout=10)
        heard = member.media_counts()["audio_in"]
        assert await wait_until(lambda: member.media_counts()["audio_in"] > heard + 50)
        assert units_in(server, room) == [member]  # the same call throughout
        assert await wait_until(lambda: hears(client, UNIT_TONE), timeout=10)


# What a unit leaves behind when a call ends early or oddly --------------------------------------


def response_from(request: SipMessage, status: int, *, to_tag: str = "", body: bytes = b"",
                  contact: str = "sip:unit@127.0.0.1", reason: str = "") -> bytes:
    """A unit's response to one of our requests (its 200 to our INVITE or BYE)."""
    reply = SipMessage(status=status, reason=reason or ("OK" if status == 200 else "Error"))
    for name in ("Via", "From", "Call-ID", "CSeq"):
        for value in request.get_all(name):
            reply.add(name, value)
    reply.add("To", request.get("To") + (f";tag={to_tag}" if to_tag else ""))
    if body:
        reply.add("Contact", f"<{contact}>")
        reply.add("Content-Type", "application/sdp")
        reply.body = body
    return reply.to_bytes()


async def request_of(raw: RawSip, method: str, timeout: float = 10) -> SipMessage:
    """The next request of ``method`` that comes to the unit (responses and others skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for message in await raw.responses(1, timeout=deadline - loop.time()):
            if message.is_request and message.method == method:
                return message
    raise AssertionError(f"no {method} came")


async def into_the_lobby(server, raw: RawSip, uri: str, call_id: str) -> str:
    """Call a meeting's number ``uri`` and ACK the answer: the unit waits in the lobby to
    key in its PIN. Returns our To tag, for the requests of its dialog."""
    branch = f"z9hG4bK{call_id}"
    raw.send(raw.request("INVITE", uri, call_id=call_id, body=OFFER, branch=branch))
    ok = await final_of(raw, call_id)
    assert ok.status == 200
    to_tag = ok.get("To").split("tag=")[1]
    raw.send(raw.request("ACK", uri, call_id=call_id, to_tag=to_tag, branch=branch))
    assert await wait_until(lambda: waiting(server) == 2)
    return to_tag


async def final_of(raw: RawSip, call_id: str, timeout: float = 5) -> SipMessage:
    """The final response to the INVITE of ``call_id`` (others' retransmissions skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for message in await raw.responses(1, timeout=deadline - loop.time()):
            if not message.is_request and message.call_id == call_id and message.cseq[1] == "INVITE" \
                    and message.status >= 200:
                return message
    raise AssertionError(f"no final response to {call_id}")


async def test_our_bye_is_forgotten_once_the_unit_answers_it(server) -> None:
    """A unit the host removes gets our BYE (hang_up without waiting for its answer): once
    it answers, nothing of that BYE's transaction is kept. It was, one per call, for ever."""
    room = bridge(server)
    agent = server.app[ROOM_UNITS].agent
    unit = HandUnit(server, nack=False)
    try:
        await unit.call(room)
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        await server.app[LIVE_ROOMS].remove(room, units_in(server, room)[0].id, "hostitel")
        bye = await request_of(unit.raw, "BYE")
        assert agent._bye_waiters  # waiting for the unit's word
        unit.raw.send(response_from(bye, 200))
        assert await wait_until(lambda: not agent._bye_waiters, timeout=3), agent._bye_waiters
        assert not units_in(server, room) and not agent.dialogs
    finally:
        unit.close()


async def tcp_call_whose_connection_closed(server, room: str, contact_port: int,
                                           contact_host: str = "127.0.0.1") -> Any:
    """A unit at 127.0.0.1 calls ``room`` over TCP, taking requests at ``contact_host``:
    ``contact_port`` (its Contact), and its connection closes (the unit closed it, or a
    NAT on the way dropped an idle one) while its call goes on. Returns the call."""
    uri = f"sip:{room}@127.0.0.1"
    agent = server.app[ROOM_UNITS].agent
    calling = await RawSipStream.connect(server)
    try:
        invite = sip_request("INVITE", uri, transport="TCP", local_port=contact_port,
                             call_id="tcp-closed", body=OFFER, sender="Jednotka",
                             branch="z9hG4bKtcpclosed")
        calling.send(invite.replace(b"Contact: <sip:tester@127.0.0.1:",
                                    f"Contact: <sip:tester@{contact_host}:".encode()))
        ok = next(r for r in await calling.responses(2) if r.status == 200)
        calling.send(sip_request("ACK", uri, transport="TCP", local_port=contact_port,
                                 call_id="tcp-closed", to_tag=tag_of(ok.get("To")),
                                 branch="z9hG4bKtcpclosedack"))
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        (call,) = agent.dialogs.values()
    finally:
        calling.close()
    assert await wait_until(lambda: call.flow.writer.is_closing(), timeout=5)  # we saw it
    assert len(units_in(server, room)) == 1
    return call


async def accepting(host: str, port: int = 0) -> tuple[asyncio.Server, asyncio.Queue[RawSipStream]]:
    """A unit's listening socket (where its Contact points): the connections made to it."""
    accepted: asyncio.Queue[RawSipStream] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(RawSipStream(reader, writer))

    return await asyncio.start_server(accept, host, port), accepted


@pytest.mark.parametrize("ending", ["removed", "room_closed", "service_stops"])
async def test_a_unit_whose_tcp_connection_closed_gets_our_bye_over_a_new_one(
        server, ending: str) -> None:
    """A unit calls over TCP and its connection closes during the call. When we hang up
    on it (the operator removes it, its room closes, the service stops), our BYE was
    written to the closed stream, that is nowhere, and the unit sat in a dead call until
    its own media timeout. RFC 3261 18.1.1: with no connection open, we open one to the
    dialog's remote target (the unit's Contact) and the BYE goes over it."""
    room = bridge(server)
    agent = server.app[ROOM_UNITS].agent
    listening, accepted = await accepting("127.0.0.1")
    contact_port = listening.sockets[0].getsockname()[1]
    reached: list[RawSipStream] = []
    try:
        await tcp_call_whose_connection_closed(server, room, contact_port)
        stopping = None
        if ending == "removed":
            await server.app[LIVE_ROOMS].remove(room, units_in(server, room)[0].id, "operátor")
        elif ending == "room_closed":
            await server.app[LIVE_ROOMS].close(room, "the booked time is over")
        else:  # the agent's BYEs on closing, each waited for a moment
            stopping = asyncio.ensure_future(agent.close())
        unit = await asyncio.wait_for(accepted.get(), 5)  # our new connection to its Contact
        reached.append(unit)
        (bye,) = await unit.responses(1, timeout=5)
        assert bye.is_request and bye.method == "BYE" and bye.call_id == "tcp-closed"
        assert bye.uri == f"sip:tester@127.0.0.1:{contact_port};transport=tcp"
        assert bye.get_all("Via")[0].startswith("SIP/2.0/TCP ")
        unit.send(response_from(bye, 200))
        if stopping is not None:
            await asyncio.wait_for(stopping, 1)  # the answer came: no more waiting
        assert await wait_until(lambda: not agent._bye_waiters and not agent.dialogs, timeout=5)
        assert await wait_until(lambda: not units_in(server, room), timeout=5)
    finally:
        for unit in reached:
            unit.close()
        listening.close()


async def test_a_new_connection_for_our_bye_goes_to_the_unit_not_to_the_host_its_contact_names(
        server) -> None:
    """A caller's Contact is whatever it wrote: one at 127.0.0.1 naming 127.0.0.2 would
    have us open a connection to another host of the network, and write to it, when we
    hang up. The connection goes to the address the call came from, at the Contact's
    port (where a unit's Contact points unless it is behind a NAT)."""
    room = bridge(server)
    agent = server.app[ROOM_UNITS].agent
    own, at_own = await accepting("127.0.0.1")
    port = own.sockets[0].getsockname()[1]
    other, at_other = await accepting("127.0.0.2", port)
    reached: list[RawSipStream] = []
    try:
        await tcp_call_whose_connection_closed(server, room, port, contact_host="127.0.0.2")
        await server.app[LIVE_ROOMS].remove(room, units_in(server, room)[0].id, "operátor")
        unit = await asyncio.wait_for(at_own.get(), 5)
        reached.append(unit)
        (bye,) = await unit.responses(1, timeout=5)
        assert bye.method == "BYE" and bye.uri == f"sip:tester@127.0.0.2:{port};transport=tcp"
        unit.send(response_from(bye, 200))
        assert await wait_until(lambda: not agent._bye_waiters and not agent.dialogs, timeout=5)
        assert at_other.empty()
    finally:
        for unit in reached:
            unit.close()
        own.close()
        other.close()


async def test_a_unit_that_closes_its_connection_after_its_request_gets_our_answers_over_a_new_one(
        server) -> None:
    """A unit over TCP that closes its connection once it has sent a request (one
    connection per transaction, or a NAT that drops it) takes our responses on a new
    connection to its Via's sent-by port (RFC 3261 18.2.2), at the address the request
    came from: our 200 to its INVITE (sent again until its ACK) and to a re-INVITE. They
    were written to the closed stream, that is nowhere: the unit never had its call, and
    we hung up on it after 64*T1."""
    room = bridge(server)
    uri = f"sip:{room}@127.0.0.1"
    agent = server.app[ROOM_UNITS].agent
    listening, accepted = await accepting("127.0.0.1")
    port = listening.sockets[0].getsockname()[1]  # the unit's, in its Via and Contact
    reached: list[RawSipStream] = []

    async def send_and_close(request: bytes) -> RawSipStream:
        """``request`` on a connection the unit then closes; the one we open to answer."""
        calling = await RawSipStream.connect(server)
        calling.send(request)
        await calling.writer.drain()
        calling.close()
        reached.append(await asyncio.wait_for(accepted.get(), 5))
        return reached[-1]

    try:
        ours = await send_and_close(sip_request("INVITE", uri, transport="TCP", local_port=port,
                                                call_id="one-way", body=OFFER, branch="z9hG4bKoneway"))
        ok = next(r for r in await ours.responses(2) if r.status >= 200)
        assert ok.status == 200 and ok.cseq == (1, "INVITE") and ok.body.startswith(b"v=0")
        to_tag = tag_of(ok.get("To"))
        ours.send(sip_request("ACK", uri, transport="TCP", local_port=port, call_id="one-way",
                              to_tag=to_tag, branch="z9hG4bKonewayack"))
        assert await wait_until(lambda: len(units_in(server, room)) == 1 and agent.dialogs
                                and next(iter(agent.dialogs.values())).confirmed)
        ours.close()  # that one closes too: the 200 to its re-INVITE comes on yet another
        hold = OFFER.replace(b"o=t 1 1", b"o=t 1 2") + b"a=sendonly\r\n"
        held = await send_and_close(sip_request("INVITE", uri, transport="TCP", local_port=port,
                                                call_id="one-way", cseq=2, to_tag=to_tag, body=hold,
                                                branch="z9hG4bKonewayhold"))
        ok = next(r for r in await held.responses(2) if r.status >= 200)
        assert ok.status == 200 and ok.cseq == (2, "INVITE") and b"a=recvonly" in ok.body
        held.send(sip_request("ACK", uri, transport="TCP", local_port=port, call_id="one-way",
                              cseq=2, to_tag=to_tag, branch="z9hG4bKonewayholdack"))
        held.send(sip_request("BYE", uri, transport="TCP", local_port=port, call_id="one-way",
                              cseq=3, to_tag=to_tag, branch="z9hG4bKonewaybye"))
        assert [r.status for r in await held.responses(1) if r.cseq == (3, "BYE")] == [200]
        assert await wait_until(lambda: not units_in(server, room) and not agent.dialogs)
    finally:
        for unit in reached:
            unit.close()
        listening.close()


async def test_a_unit_we_called_that_closed_our_connection_gets_our_ack_again_over_a_new_one(
        server) -> None:
    """A unit we call over TCP answers 200, then closes our connection and sends its 200
    again (it missed our ACK) over a connection of its own: our ACK again goes over a new
    connection to its Contact's port (RFC 3261 18.1.1), as our BYE does. It was written to
    the closed stream, that is nowhere, and the unit sent its 200 for 64*T1 and hung up."""
    agent = server.app[ROOM_UNITS].agent
    listening, accepted = await accepting("127.0.0.1")
    port = listening.sockets[0].getsockname()[1]
    target = f"sip:unit@127.0.0.1:{port};transport=tcp"
    dialling = asyncio.ensure_future(agent.dial(target, OFFER.decode()))
    reached: list[RawSipStream] = []
    try:
        reached.append(await asyncio.wait_for(accepted.get(), 5))  # our INVITE's connection
        (invite,) = await reached[0].responses(1)
        ok = response_from(invite, 200, to_tag="unit", body=OFFER, contact=target)
        reached[0].send(ok)
        (ack,) = await reached[0].responses(1)
        assert ack.method == "ACK"
        call = (await asyncio.wait_for(dialling, 5)).call
        reached[0].close()
        assert await wait_until(lambda: call.flow.closed, timeout=5)  # we saw it
        resending = await RawSipStream.connect(server)
        reached.append(resending)
        resending.send(ok)
        reached.append(await asyncio.wait_for(accepted.get(), 5))  # ours, to its Contact's port
        (again,) = await reached[-1].responses(1)
        assert again.to_bytes() == ack.to_bytes()
        assert await resending.responses(1, timeout=0.5) == []  # not a request: no answer
        await agent.hang_up(call, wait=False)
    finally:
        if not dialling.done():
            dialling.cancel()
        for unit in reached:
            unit.close()
        listening.close()


async def test_invites_cancelled_before_their_answer_are_forgotten(server, monkeypatch) -> None:
    """A peer that sends INVITE and CANCEL again and again: each is answered (487, or 200
    when the answer was first) and its transaction goes after its time (shortened here),
    as an answered INVITE's does; the cancelled ones' stayed for ever, each with its call."""
    import signaling.sip.ua as ua

    monkeypatch.setattr(ua, "TRANSACTION_S", 1.0)
    room = bridge(server)
    agent = server.app[ROOM_UNITS].agent
    raw = RawSip(server)
    try:
        cancelled = 0
        for index in range(5):
            call_id, branch = f"cancel-{index}", f"z9hG4bKcancel{index}"
            uri = f"sip:{room}@127.0.0.1"
            raw.send(raw.request("INVITE", uri, call_id=call_id, body=OFFER, branch=branch))
            raw.send(raw.request("CANCEL", uri, call_id=call_id, branch=branch))
            final = await final_of(raw, call_id)
            to_tag = final.get("To").split("tag=")[1]
            raw.send(raw.request("ACK", uri, call_id=call_id, to_tag=to_tag, branch=branch))
            if final.status == 200:  # the answer came before the CANCEL: hang up
                raw.send(raw.request("BYE", uri, call_id=call_id, cseq=2, to_tag=to_tag,
                                     branch=branch + "bye"))
            else:
                assert final.status == 487
                cancelled += 1
        assert cancelled  # the case this is about came up
        assert await wait_until(lambda: not units_in(server, room) and not agent.dialogs)
        assert await wait_until(lambda: not agent._invites, timeout=5), list(agent._invites)
    finally:
        raw.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_our_200_goes_again_until_its_ack_and_a_call_never_acked_is_hung_up(
        server, monkeypatch, transport: str) -> None:
    """RFC 3261 13.3.1.4: our 200 to an INVITE is sent again (T1 doubling up to T2, both
    shortened here) until its ACK comes, over TCP too (a proxy on the way may forward it
    over UDP); a call whose ACK has not come in 64*T1 is hung up with a BYE, its unit
    leaves the room and its record is closed. Over TCP the 200 went once, and a call
    never ACKed stayed in the room until its media timed out."""
    import signaling.sip.ua as ua

    monkeypatch.setattr(ua, "T1_S", 0.05)
    monkeypatch.setattr(ua, "T2_S", 0.4)  # 64*T1: 3.2 s
    room = bridge(server)
    uri = f"sip:{room}@127.0.0.1"
    agent = server.app[ROOM_UNITS].agent
    loop = asyncio.get_running_loop()

    async def unit() -> RawSip | RawSipStream:
        return RawSip(server) if transport == "udp" else await RawSipStream.connect(server)

    def records() -> dict[str, Any]:
        with server.app[DATABASE].session() as session:
            return {r.participant: r.left_at
                    for r in session.scalars(select(CallRecord).where(CallRecord.room_name == room))}

    acked, silent = await unit(), await unit()
    heard: list[tuple[float, SipMessage]] = []  # by the unit that never ACKs, as it came

    async def listen() -> None:
        while True:
            heard.extend((loop.time(), m) for m in await silent.responses(1, timeout=0.5))

    listening = asyncio.ensure_future(listen())
    try:
        acked.send(acked.request("INVITE", uri, call_id="acked", body=OFFER, sender="Acked",
                                 branch="z9hG4bKacked"))
        silent.send(silent.request("INVITE", uri, call_id="silent", body=OFFER, sender="Never acked",
                                   branch="z9hG4bKsilent"))
        # The 200, and the same again 0.05, 0.1, 0.2 s later...
        oks = [r for r in await acked.responses(5, timeout=10) if r.status == 200]
        assert len(oks) >= 3 and len({(ok.get("To"), ok.body) for ok in oks}) == 1, oks
        to_tag = oks[0].get("To").split("tag=")[1]
        acked.send(acked.request("ACK", uri, call_id="acked", to_tag=to_tag, branch="z9hG4bKackedack"))
        await acked.responses(10, timeout=0.3)  # what was on its way
        assert await acked.responses(1, timeout=1) == []  # its ACK came: no more
        # A re-INVITE's 200 (a refresh) as well, until the ACK of that INVITE: a late copy
        # of the first ACK does not stop it.
        acked.send(acked.request("INVITE", uri, call_id="acked", cseq=2, to_tag=to_tag, body=OFFER,
                                 sender="Acked", branch="z9hG4bKrefresh"))
        refreshed_at = loop.time()
        assert [r.status for r in await acked.responses(3, timeout=5) if r.cseq == (2, "INVITE")] == [200] * 3
        acked.send(acked.request("ACK", uri, call_id="acked", to_tag=to_tag, branch="z9hG4bKackedack"))
        assert [r.status for r in await acked.responses(1, timeout=2)] == [200]
        acked.send(acked.request("ACK", uri, call_id="acked", cseq=2, to_tag=to_tag,
                                 branch="z9hG4bKrefreshack"))
        await acked.responses(10, timeout=0.3)
        assert await acked.responses(1, timeout=1) == []

        def bye_at() -> float | None:
            return next((at for at, m in heard if m.is_request and m.method == "BYE"), None)

        assert await wait_until(lambda: bye_at() is not None, timeout=15), "no BYE for the call never ACKed"
        oks_at = [at for at, m in heard if not m.is_request and m.status == 200]
        assert len(oks_at) >= 6 and max(oks_at) < bye_at()  # again and again until the BYE
        assert bye_at() - oks_at[0] > 2.5  # not before 64*T1 (3.2 s, less what the reading lags)
        bye = next(m for _, m in heard if m.is_request)
        assert bye.call_id == "silent"
        silent.send(response_from(bye, 200))
        assert await wait_until(lambda: [u.name for u in units_in(server, room)] == ["Acked"])
        assert await wait_until(lambda: records().get("Never acked") is not None)
        assert len(agent.dialogs) == 1

        # 64*T1 has passed for the call that was ACKed too: it goes on.
        await asyncio.sleep(max(0.5, refreshed_at + 3.5 - loop.time()))
        assert [m for m in await acked.responses(10, timeout=0.5) if m.is_request] == []
        assert records()["Acked"] is None
        acked.send(acked.request("BYE", uri, call_id="acked", cseq=3, to_tag=to_tag,
                                 branch="z9hG4bKackedbye"))
        assert await wait_until(lambda: not units_in(server, room) and not agent.dialogs)
    finally:
        listening.cancel()
        acked.close()
        silent.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_refusal_goes_again_until_its_ack_and_for_64_t1_at_most(
        server, monkeypatch, transport: str) -> None:
    """RFC 3261 17.2.1: our final non-2xx answer to an INVITE (a 404 here) is sent again
    over UDP (T1 doubling up to T2, both shortened here) until its ACK comes, the ACK
    with the INVITE's own branch (an ACK of another transaction does not stop it); a
    unit that never ACKs gets it for 64*T1 (timer H) and no more, about 11 times, so a
    forged INVITE cannot make us send more than that toward its source; a retransmitted
    INVITE gets it once again. Over TCP it goes once. It went once over UDP too: a
    refusal lost on its way left the unit (which stops resending its INVITE after our
    100) waiting until its own timeout."""
    import signaling.sip.ua as ua

    monkeypatch.setattr(ua, "T1_S", 0.05)
    monkeypatch.setattr(ua, "T2_S", 0.4)  # 64*T1: 3.2 s
    uri = "sip:no-such-room@127.0.0.1"
    loop = asyncio.get_running_loop()
    unit = RawSip(server) if transport == "udp" else await RawSipStream.connect(server)
    heard: list[tuple[float, SipMessage]] = []

    async def listen() -> None:
        while True:
            heard.extend((loop.time(), m) for m in await unit.responses(1, timeout=0.5))

    def refusals(call_id: str, since: float = 0.0) -> list[float]:
        return [at for at, m in heard if m.call_id == call_id and m.status == 404 and at > since]

    listening = asyncio.ensure_future(listen())
    try:
        started = loop.time()
        unit.send(unit.request("INVITE", uri, call_id="acks", body=OFFER, branch="z9hG4bKacks"))
        unit.send(unit.request("INVITE", uri, call_id="never", body=OFFER, branch="z9hG4bKnever"))
        assert await wait_until(lambda: len(refusals("never")) >= 1, timeout=5)
        if transport == "tcp":
            await asyncio.sleep(2)
            assert len(refusals("acks")) == len(refusals("never")) == 1
            return
        assert await wait_until(lambda: len(refusals("acks")) >= 3, timeout=5), heard
        to_tag = tag_of(next(m for _, m in heard if m.call_id == "acks" and m.status == 404).get("To"))
        # The ACK of another transaction (a 2xx's, with a branch of its own): not this one's.
        unit.send(unit.request("ACK", uri, call_id="acks", to_tag=to_tag, branch="z9hG4bKother"))
        other_at = loop.time()
        assert await wait_until(lambda: len(refusals("acks", other_at + 0.05)) >= 1, timeout=3)
        unit.send(unit.request("ACK", uri, call_id="acks", to_tag=to_tag, branch="z9hG4bKacks"))
        acked_at = loop.time()
        await asyncio.sleep(max(0.5, started + 4.5 - loop.time()))  # past 64*T1 for both
        assert refusals("acks", acked_at + 0.05) == []  # its ACK came: no more
        never = refusals("never")
        assert 5 <= len(never) <= 11, never  # again and again, as often as the RFC says at most
        gaps = [b - a for a, b in itertools.pairwise(never)]
        assert gaps[0] < 0.2 and max(gaps) > 0.3  # T1 doubling up to T2
        assert never[-1] - never[0] < 3.2 + 0.3  # and not past 64*T1
        last = loop.time()
        unit.send(unit.request("INVITE", uri, call_id="never", body=OFFER, branch="z9hG4bKnever"))
        await asyncio.sleep(1.5)
        assert len(refusals("never", last)) == 1  # a retransmitted INVITE: the answer once more
    finally:
        listening.cancel()
        unit.close()


GSM_ONLY = (b"v=0\r\no=unit 5 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 40002 RTP/AVP 3\r\n")


async def test_a_test_call_answered_without_our_codecs_leaves_no_room_behind(server) -> None:
    """A unit that answers our call with none of our codecs (GSM): the test call's verdict
    is codec_mismatch, the call is hung up, and the room made for it goes on the worker
    too. Each such test call left an empty room there (listed by the operator's page)."""
    results: list[dict[str, Any]] = []

    async def record(result: dict[str, Any]) -> int:
        results.append(result)
        return len(results)

    raw = RawSip(server)
    calls = UnitTestCalls(server.app[ROOM_UNITS], record)
    agent = server.app[ROOM_UNITS].agent
    testing = asyncio.ensure_future(calls.run("SN-GSM", f"sip:unit@127.0.0.1:{raw.local}"))
    try:
        invite = await request_of(raw, "INVITE")
        assert any(name.startswith("unittest-") for name in server.app[MEDIA].rooms)
        raw.send(response_from(invite, 200, to_tag="gsm", body=GSM_ONLY,
                               contact=f"sip:unit@127.0.0.1:{raw.local}"))
        bye = await request_of(raw, "BYE")  # after our ACK
        raw.send(response_from(bye, 200))
        await asyncio.wait_for(testing, 10)
    finally:
        if not testing.done():
            testing.cancel()
        raw.close()
    assert results[-1]["problems"] == ["codec_mismatch"], results[-1]
    assert not [name for name in server.app[MEDIA].rooms if name.startswith("unittest-")]
    assert not [name for name in server.app[ROOM_UNITS].signaling.channels if name.startswith("unittest-")]
    assert not server.app[POOL].workers[0].service.outside and not agent.dialogs


async def test_a_unit_holding_or_moving_in_the_lobby_gets_the_cue_as_it_says(server) -> None:
    """A unit keying in its PIN puts the call on hold (a=sendonly): the lobby's cue stops
    as the mix would; it takes the call back on another port: the cue goes there. The
    cue went on to the held unit, and to the port it had left."""
    _, number, _ = numbered_bridge(server)
    unit = HandUnit(server, nack=False)

    def sound(name: str) -> list[bytes]:
        return [d for d in unit.datagrams(name) if not 192 <= d[1] <= 223]

    try:
        await unit.call(number)
        assert await wait_until(lambda: waiting(server) == 2)
        assert await wait_until(lambda: len(sound("audio")) > 0, timeout=5)  # the cue
        held = await unit.change(unit.offer(version=2, direction="sendonly"), "z9hG4bKlobbyhold", 3)
        assert held.status == 200, held.reason
        await asyncio.sleep(0.3)
        sound("audio")  # what was on its way
        await asyncio.sleep(1.5)
        assert sound("audio") == []  # held: nothing sent to it
        audio_port = unit.sockets["audio"].getsockname()[1]
        moved_port = unit.sockets["moved"].getsockname()[1]
        moved = unit.offer(version=3).replace(f"m=audio {audio_port} ".encode(),
                                              f"m=audio {moved_port} ".encode())
        resumed = await unit.change(moved, "z9hG4bKlobbymove", 4)
        assert resumed.status == 200, resumed.reason
        came: list[bytes] = []
        assert await wait_until(lambda: came.extend(sound("moved")) or len(came) > 10, timeout=5)
        assert sound("audio") == []
        assert waiting(server) == 2  # still keying in its PIN
        unit.hang_up()
        assert await wait_until(lambda: waiting(server) == 0)
    finally:
        unit.close()


async def test_a_unit_that_hangs_up_as_it_answers_our_call_is_not_left_in_the_room(two_workers) -> None:
    """We call a unit; it answers and, at our ACK, hangs up at once (RFC 3261 lets it), while
    its answer is on its way to the media worker (a process: that takes a moment). The call
    did not come about, and the unit is not in the room: its BYE found no member to end,
    and it stayed listed, heard by nobody, until its media timed out 30 s later."""
    server = two_workers
    room = bridge(server, local_workers=2)
    live_rooms, units = server.app[LIVE_ROOMS], server.app[ROOM_UNITS]
    raw = RawSip(server)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    unit_sdp = (f"v=0\r\no=unit 5 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {media.getsockname()[1]} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
                f"m=video 0 RTP/AVP 97\r\n").encode()

    async def units_listed() -> list[str]:
        return [p["id"] for r in await live_rooms.rooms() if r["name"] == room
                for p in r["participants"] if p["connection"] == "sip"]

    dialling = asyncio.ensure_future(units.dial(room, f"sip:unit@127.0.0.1:{raw.local}"))
    try:
        invite = await request_of(raw, "INVITE")
        raw.send(response_from(invite, 200, to_tag="abc", body=unit_sdp,
                               contact=f"sip:unit@127.0.0.1:{raw.local}"))
        loop = asyncio.get_running_loop()
        while True:  # our ACK, read as it comes (not on a poll), then the unit's BYE at once
            ack = parse(await asyncio.wait_for(loop.sock_recv(raw.sock, 65536), 10))
            if ack.is_request and ack.method == "ACK":
                break
        our_tag = invite.get("From").split("tag=")[1]
        raw.send(raw.request("BYE", uri_of_contact(invite), call_id=invite.call_id, to_tag=our_tag,
                             branch="z9hG4bKhangupatonce"))
        with pytest.raises(DialFailed) as failed:
            await asyncio.wait_for(dialling, 10)
        assert failed.value.outcome == "failed", failed.value
        assert not await units_listed()
        await asyncio.sleep(1.5)  # nor later (its worker's list is reported each second)
        assert not await units_listed()
        assert not units.agent.dialogs
        assert not [c for c in units.signaling.connections.values() if c.channel and c.channel.name == room]
    finally:
        if not dialling.done():
            dialling.cancel()
        raw.close()
        media.close()


async def test_a_units_reinvite_while_our_call_to_it_is_set_up_gets_491_and_the_call_goes_on(
        server, monkeypatch) -> None:
    """A unit we call sends a re-INVITE of its own while our INVITE is not done: as it
    rings (in the early dialog of its 180), and once it answered, while its answer is on
    its way to its media worker (held here). Both times it is our offer/answer still in
    progress: 491 Request Pending (RFC 3261 14.2), and it tries again later. The first
    got 481 (no such dialog), the second 488 (an offer refused), and the call comes
    about and takes the unit's next re-INVITE."""
    room = bridge(server)
    units = server.app[ROOM_UNITS]
    pool = server.app[POOL]
    raw = RawSip(server)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))

    def unit_sdp(version: int) -> bytes:
        return (f"v=0\r\no=unit 5 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {media.getsockname()[1]} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
                f"m=video 0 RTP/AVP 97\r\n").encode()

    answer_may_go = asyncio.Event()
    request = pool.request

    async def held(index: int, method: str, timeout: float = 20.0, **params: Any) -> Any:
        if method == "unit_answer":
            await answer_may_go.wait()
        return await request(index, method, timeout, **params)

    monkeypatch.setattr(pool, "request", held)
    dialling = asyncio.ensure_future(units.dial(room, f"sip:unit@127.0.0.1:{raw.local}"))
    try:
        invite = await request_of(raw, "INVITE")
        our_tag, contact = invite.get("From").split("tag=")[1], uri_of_contact(invite)

        def reinvite(cseq: int, version: int) -> bytes:  # the unit's From tag is sip_request's (abc)
            return raw.request("INVITE", contact, call_id=invite.call_id, cseq=cseq, to_tag=our_tag,
                               body=unit_sdp(version), branch=f"z9hG4bKunits{cseq}")

        raw.send(response_from(invite, 180, to_tag="abc", reason="Ringing"))
        raw.send(reinvite(1, 2))
        assert (await final_of(raw, invite.call_id)).status == 491
        raw.send(response_from(invite, 200, to_tag="abc", body=unit_sdp(1),
                               contact=f"sip:unit@127.0.0.1:{raw.local}"))
        await request_of(raw, "ACK")
        raw.send(reinvite(2, 2))
        assert (await final_of(raw, invite.call_id)).status == 491
        assert not dialling.done() and not units.agent.dialogs[(invite.call_id, our_tag)].ended

        answer_may_go.set()
        member = await asyncio.wait_for(dialling, 10)
        assert await wait_until(lambda: [u.id for u in units_in(server, room)] == [member.participant_id])
        raw.send(reinvite(3, 2))  # its turn now
        ok = await final_of(raw, invite.call_id)
        assert ok.status == 200 and b"m=audio" in ok.body
        raw.send(raw.request("ACK", contact, call_id=invite.call_id, cseq=3, to_tag=our_tag,
                             branch="z9hG4bKunitsack"))
        raw.send(raw.request("BYE", contact, call_id=invite.call_id, cseq=4, to_tag=our_tag,
                             branch="z9hG4bKunitsbye"))
        assert await wait_until(lambda: not units_in(server, room) and not units.agent.dialogs)
    finally:
        answer_may_go.set()
        if not dialling.done():
            dialling.cancel()
        raw.close()
        media.close()


def uri_of_contact(message: SipMessage) -> str:
    return message.get("Contact").split("<")[1].split(">")[0]


async def test_a_unit_keying_in_its_pin_gets_in_after_the_last_page_left(server) -> None:
    """A unit waits in the lobby of a bridge while the only page in the room leaves (a
    reload, the last one out): its right PIN still takes it in, and a page that joins
    later is with it. The room closed on its worker under the unit, whose right PIN was
    then answered with a BYE."""
    room, number, pin = numbered_bridge(server)
    client = await client_in(server, room)
    raw = RawSip(server)
    uri = f"sip:{number}@127.0.0.1"
    cseq = iter(range(2, 100))
    later: SignalClient | None = None
    try:
        to_tag = await into_the_lobby(server, raw, uri, "after-last")
        await client.close()
        live = server.app[MEDIA].rooms.get(room)
        assert await wait_until(lambda: live is None or not live.participants)
        await asyncio.sleep(0.5)
        for key in [*pin, "#"]:
            number_ = next(cseq)
            raw.send(raw.request("INFO", uri, call_id="after-last", cseq=number_, to_tag=to_tag,
                                 body=f"Signal={key}\r\nDuration=160\r\n".encode(),
                                 branch=f"z9hG4bKlastinfo{number_}", content_type="application/dtmf-relay"))
        assert await wait_until(lambda: len(units_in(server, room)) == 1, timeout=10)
        assert await wait_until(lambda: waiting(server) == 0)
        byes = [m for m in await raw.responses(20, timeout=1) if m.is_request and m.method == "BYE"]
        assert not byes, byes[0].get("Reason")
        later = await client_in(server, room)
        unit_id = units_in(server, room)[0].id
        assert await wait_until(lambda: any(p["id"] == unit_id for m in later.of_type("participants")
                                            for p in m["participants"]))
        raw.send(raw.request("BYE", uri, call_id="after-last", cseq=next(cseq), to_tag=to_tag,
                             branch="z9hG4bKlastbye"))
        assert await wait_until(lambda: not units_in(server, room))
    finally:
        raw.close()
        if later is not None:
            await later.close()


async def test_a_unit_keying_in_its_pin_after_the_host_locked_the_room_is_kept_out(server) -> None:
    """The host locks the room while a unit keys in its PIN in the lobby: the right PIN no
    longer takes it in (as a page joining now is refused); it is hung up saying why. It
    went in, past the lock."""
    room, number, pin = numbered_bridge(server)
    host = await client_in(server, room)  # client_in joins as the host
    raw = RawSip(server)
    uri = f"sip:{number}@127.0.0.1"
    try:
        to_tag = await into_the_lobby(server, raw, uri, "locked-out")
        await host.send({"type": "lock", "locked": True})
        assert await wait_until(lambda: any(m.get("locked") for m in host.of_type("participants")))
        for index, key in enumerate([*pin, "#"]):
            raw.send(raw.request("INFO", uri, call_id="locked-out", cseq=index + 2, to_tag=to_tag,
                                 body=f"Signal={key}\r\n".encode(), branch=f"z9hG4bKlockinfo{index}",
                                 content_type="application/dtmf-relay"))
        bye = await request_of(raw, "BYE", timeout=5)
        assert "cause=403" in bye.get("Reason") and "locked" in bye.get("Reason")
        raw.send(response_from(bye, 200))
        assert await wait_until(lambda: waiting(server) == 0)
        await asyncio.sleep(0.5)
        assert not units_in(server, room)
        assert len(server.app[MEDIA].rooms[room].participants) == 1  # the host, as it was
    finally:
        raw.close()
        await host.close()


async def test_a_unit_whose_media_stops_is_hung_up_and_leaves(server, monkeypatch) -> None:
    """A unit that sends nothing (its BYE lost, its network gone) is taken out of the room
    after the media timeout (shortened here) and gets our BYE saying nothing else."""
    import mcu.unit

    monkeypatch.setattr(mcu.unit, "MEDIA_TIMEOUT_S", 2.0)
    room = bridge(server)
    client = await client_in(server, room)
    unit = HandUnit(server, nack=False)  # sends no media at all
    agent = server.app[ROOM_UNITS].agent
    try:
        await unit.call(room)
        assert await wait_until(lambda: len(units_in(server, room)) == 1)
        bye = await request_of(unit.raw, "BYE", timeout=8)
        unit.raw.send(response_from(bye, 200))
        assert not units_in(server, room)
        assert await wait_until(lambda: not agent.dialogs and not agent._bye_waiters)
        assert len(server.app[MEDIA].rooms[room].participants) == 1  # the page goes on
        assert not [c for c in server.app[ROOM_UNITS].signaling.connections.values()
                    if isinstance(c, UnitMember)]
    finally:
        unit.close()
        await client.close()


async def test_units_in_the_lobby_are_hung_up_when_the_room_closes(server) -> None:
    """The room closes (its booked time is over) while a unit keys in its PIN: the unit
    gets our BYE at once, saying why, and nothing of its call or the room is left. It was
    left in the lobby of a room that was gone until its time to key in the PIN was over."""
    room, number, _ = numbered_bridge(server)
    client = await client_in(server, room)
    raw = RawSip(server)
    uri = f"sip:{number}@127.0.0.1"
    try:
        await into_the_lobby(server, raw, uri, "closing")
        await server.app[LIVE_ROOMS].close(room, "the booked time is over")
        bye = await request_of(raw, "BYE", timeout=3)
        assert "cause=480" in bye.get("Reason") and "booked time is over" in bye.get("Reason")
        raw.send(response_from(bye, 200))
        assert await wait_until(lambda: waiting(server) == 0)
        agent = server.app[ROOM_UNITS].agent
        assert await wait_until(lambda: not agent.dialogs and not agent._bye_waiters)
        assert room not in server.app[ROOM_UNITS].signaling.channels
        assert room not in server.app[MEDIA].rooms
        assert all(not state.units for state in server.app[POOL].states)  # no place held
    finally:
        raw.close()
        await client.close()


async def test_a_unit_the_room_was_locked_against_while_it_was_admitted_stays_out(server) -> None:
    """A unit's call looked at the lock only before its admission, which awaits the
    scheduler's database: a room its host locked meanwhile still took the unit in. The
    admission here is the server's own, held up until the room is locked; the operator's
    call is refused before any unit is called."""
    room = bridge(server)
    signaling = server.app[LIVE_ROOMS].signaling
    units = server.app[ROOM_UNITS]
    admit, admitting, go_on = signaling.admit, asyncio.Event(), asyncio.Event()

    async def slow_admit(grant, kind):  # type: ignore[no-untyped-def]
        if grant.role != "host":
            admitting.set()
            await go_on.wait()
        return await admit(grant, kind)

    signaling.admit = slow_admit
    host = await client_in(server, room)
    try:
        dialling = asyncio.ensure_future(
            units.dial(room, f"sip:unit@127.0.0.1:{free_tcp_port()};transport=tcp"))
        await asyncio.wait_for(admitting.wait(), 10)
        await host.send({"type": "lock", "locked": True})
        assert await wait_until(lambda: any(m["locked"] for m in host.of_type("participants")))
        go_on.set()
        with pytest.raises(DialFailed) as failed:
            await dialling
        assert (failed.value.outcome, failed.value.status) == ("refused", 403), failed.value
        assert not units.agent.dialogs and not units_in(server, room)
        assert not signaling.channels[room].placing
    finally:
        go_on.set()
        await host.close()
