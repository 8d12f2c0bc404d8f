"""A room unit in a room: a participant whose media is plain RTP or SDES-SRTP (SIP).

Room systems bought through the grant programme call over SIP (signaling/sip/) and send
RTP to a UDP port we answer with, not WebRTC: no ICE, no DTLS. This is their side in the
media worker, beside :class:`~mcu.participant.Participant` (a browser's) in the same
:class:`~mcu.room.Room`:

* one UDP socket for RTP (and RTCP when the unit muxes them, else a second one: the
  answer's ``a=rtcp``), bound on the worker's media address;
* its microphone is a producer like a browser's: packets go through the same C
  fan-out (:func:`mcu._fanout.receive`) to browsers' voice slots and to the room's mixer;
* it is always mixed (``mode`` ``"mixed"``): its voice slot shows the room's mix, so
  the unit hears everyone in one stream, through the same C legs as a browser's;
* SRTP with the keys of the SDP (RFC 4568) when the unit offered RTP/SAVP.

Packets are taken only from the address the unit's SDP names. The unit that stops
sending for :data:`MEDIA_TIMEOUT_S` (a call whose BYE was lost) leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pylibsrtp

from mcu import aiortc_adapter as adapter
from mcu import codecs, rtp
from mcu._fanout import RECEIVED_TAPPED, RECEIVED_UNKNOWN, RECEIVED_WANTS_KEYFRAME, Sink, Track, receive
from mcu.forwarding import Consumer, Producer
from mcu.unit_sdp import SRTP_KEY_BYTES, AudioChoice, SdpError, answer, choose_audio, offer_sdp, parse_offer

if TYPE_CHECKING:
    from mcu.room import Room

logger = logging.getLogger(__name__)

MEDIA_TIMEOUT_S = 30.0
SOCKET_BUFFER_BYTES = 1 << 20
SRTP_PROFILES = {"AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
                 "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32}


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for what we sent (the unit hung up): the packet is lost

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    @property
    def fileno(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("socket").fileno())


def _srtp(suite: str, key: bytes, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                              else pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=SRTP_PROFILES[suite])
    if outbound:
        policy.allow_repeat_tx = True  # a resent packet goes as it was
    return pylibsrtp.Session(policy)


class UnitParticipant:
    """A room unit's place in a room (see the module's text). ``offer`` is its SDP;
    :meth:`start` binds the sockets and returns the answer."""

    mode = "mixed"
    video_codec = codecs.VP8  # what its (future) composite slot shows
    publish_codec: str | None = None  # its camera is not forwarded yet
    video_codecs: tuple[str, ...] = ()
    sent_layers: list[str] | None = None  # it publishes no simulcast layers

    def __init__(self, room: Room, name: str, role: str, participant_id: str, media_host: str) -> None:
        self.id = participant_id
        self.room = room
        self.name = name
        self.role = role
        self.room_codec = codecs.VP8
        self.media_host = media_host
        self.joined_at = time.time()
        self.counters = room.worker.counters
        self._packet_counters = self.counters.packet_path
        # A camera producer too, so the room's mixer takes the unit as a source (its tile
        # in the composite shows its name until its camera is forwarded).
        self.producers: dict[str, Producer] = {
            "microphone": Producer(f"{self.id}-microphone", self.id, "audio", "microphone", self.counters),
            "camera": Producer(f"{self.id}-camera", self.id, "video", "camera", self.counters),
        }
        voice = Consumer(f"{self.id}:voice0", "audio", self.id, self.counters)
        self.slots: dict[str, list[Consumer]] = {"voice": [voice], "camera": []}
        self.consumers: dict[str, Consumer] = {voice.id: voice}
        self._tracks: dict[int, Track] = {}
        self.remb_estimates: dict[int, int] = {}
        self.over_estimate_since: dict[int, float] = {}
        self.last_video_change = self.last_layer_change = time.monotonic()
        self.slot = secrets.randbelow(10)  # which of the worker's ticks sends our RTCP
        self.closed = False
        self.choice: AudioChoice | None = None
        self._rtp: _Socket | None = None
        self._rtcp: _Socket | None = None
        self._sink = Sink()
        self._tx: pylibsrtp.Session | None = None
        self._open: Callable[[bytes], bytes | None] | None = None  # SRTP unprotect
        self._rx: pylibsrtp.Session | None = None  # kept alive for _open
        self._offered_key: bytes | None = None  # dial-out with SRTP: the key we offered
        self.last_heard = time.monotonic()
        self.dtmf_events = 0
        self.receiver_reports = 0  # the unit's reports on the mix we send it
        self.reported_lost = 0  # of the mix, as the unit's last report counts it
        self.on_closed: Callable[[UnitParticipant], None] | None = None

    async def start(self, offer_sdp: str) -> str:
        """The unit called: bind the media sockets for its offer and return our answer
        (SdpError when the offer cannot be taken)."""
        offer = parse_offer(offer_sdp)
        index, choice = choose_audio(offer)
        await self._bind(rtcp_socket=not choice.rtcp_mux)
        assert self._rtp is not None
        our_key = secrets.token_bytes(SRTP_KEY_BYTES) if choice.crypto is not None else None
        self._set_up(choice, our_key)
        rtcp_port = self._rtcp.port if self._rtcp is not None else self._rtp.port
        return answer(offer, index, choice, self.media_host, self._rtp.port, rtcp_port, our_key)

    async def make_offer(self, srtp: bool = False) -> str:
        """We call the unit (dial-out): bind the media sockets and return our offer; the
        unit's answer comes to :meth:`accept_answer`."""
        await self._bind(rtcp_socket=True)
        assert self._rtp is not None and self._rtcp is not None
        self._offered_key = secrets.token_bytes(SRTP_KEY_BYTES) if srtp else None
        return offer_sdp(self.media_host, self._rtp.port, self._rtcp.port, self._offered_key)

    def accept_answer(self, answer_sdp: str) -> None:
        """The unit's answer to :meth:`make_offer`; SdpError when it cannot be taken."""
        if self.choice is not None:
            raise SdpError("bad_sdp", "the call has its answer already")
        _, choice = choose_audio(parse_offer(answer_sdp))
        if (choice.crypto is None) != (self._offered_key is None):
            raise SdpError("codec_mismatch", "the answer does not keep to the offered RTP profile")
        if choice.rtcp_mux and self._rtcp is not None:  # it took RTCP on the RTP port
            assert self._rtcp.transport is not None
            self._rtcp.transport.close()
            self._rtcp = None
        self._set_up(choice, self._offered_key)

    async def _bind(self, rtcp_socket: bool) -> None:
        loop = asyncio.get_running_loop()
        _, self._rtp = await loop.create_datagram_endpoint(
            lambda: _Socket(self._on_datagram), local_addr=(self.media_host, 0))
        if rtcp_socket:
            _, self._rtcp = await loop.create_datagram_endpoint(
                lambda: _Socket(self._on_datagram), local_addr=(self.media_host, 0))

    def _set_up(self, choice: AudioChoice, our_key: bytes | None) -> None:
        """Media flows from here on, as ``choice`` (what both SDPs agreed) says."""
        self.choice = choice
        if choice.crypto is not None and our_key is not None:
            self._tx = _srtp(choice.crypto.suite, our_key, outbound=True)
            self._rx = _srtp(choice.crypto.suite, choice.crypto.key, outbound=False)
            self._open = adapter.unprotector(self._rx)
        microphone = self.producers["microphone"]
        microphone.payload_type = choice.payload_type
        microphone.feedback = self._write_rtcp
        self.last_heard = time.monotonic()
        if choice.direction in ("sendrecv", "sendonly"):  # we send to it
            voice = self.slots["voice"][0]
            voice.configure(secrets.randbits(32) or 1, 0, choice.payload_type, None,
                            self._write_rtcp, self._bind_sink())

    def _bind_sink(self) -> Sink:
        assert self._rtp is not None and self.choice is not None
        if self._tx is None:
            self._sink.bind(self._rtp.fileno, self.choice.remote[0], self.choice.remote[1], 0, 0, None)
        else:
            adapter.point_sink(self._sink, self._rtp.fileno, self.choice.remote, self._tx, (self, self._tx))
        return self._sink

    # Packet path ----------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # Whatever arrives, nothing escapes into the event loop: drops are counted.
        try:
            choice = self.choice
            if self.closed or choice is None or len(data) < 12 or data[0] >> 6 != 2:
                self.counters.unit_dropped += 1
                return
            if addr[0] != choice.remote[0]:  # only the unit the SDP names
                self.counters.unit_dropped += 1
                return
            if self._open is not None:
                plain = self._open(data)
                if plain is None:
                    self.counters.unit_dropped += 1
                    return
                data = plain
            self.last_heard = time.monotonic()
            if 192 <= data[1] <= 223:  # RTCP (RFC 5761)
                self._on_rtcp(data)
            else:
                self._on_rtp(data)
        except Exception:
            self.counters.handler_errors += 1
            logger.exception("unit %s: a datagram failed", self.id)

    def _on_rtp(self, data: bytes) -> None:
        choice = self.choice
        assert choice is not None
        payload_type = data[1] & 0x7F
        if payload_type == choice.dtmf_payload_type:
            self.dtmf_events += 1  # RFC 4733: the PIN prompt (docs/sip.md) reads these
            return
        status = receive(self._tracks, data, self._packet_counters)
        if status & RECEIVED_UNKNOWN:
            microphone = self.producers["microphone"]
            if payload_type != microphone.payload_type:
                self.counters.packets_received += 1
                self.counters.packets_unroutable += 1
                return
            # Its SSRC is learnt from its first packet: SIP offers seldom name it.
            if microphone.ssrc is not None:
                self._tracks.pop(microphone.ssrc, None)
            microphone.ssrc = int.from_bytes(data[8:12], "big")
            self._tracks[microphone.ssrc] = microphone.track
            status = receive(self._tracks, data, self._packet_counters)
        if status & (RECEIVED_WANTS_KEYFRAME | RECEIVED_TAPPED):
            producer = self.producers["microphone"]
            if status & RECEIVED_TAPPED:
                producer.run_taps(data)

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = adapter.parse_rtcp(data)
        except ValueError:
            self.counters.rtcp_malformed += 1
            return
        for packet in packets:
            if isinstance(packet, adapter.RtcpSr):
                producer = self.producers["microphone"]
                if packet.ssrc == producer.ssrc:
                    info = packet.sender_info
                    producer.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)
            if isinstance(packet, adapter.RtcpSr | adapter.RtcpRr):
                self._on_reception_reports(packet.reports)

    def _on_reception_reports(self, reports: list[Any]) -> None:
        # What the unit says it received of the mix: a test call's proof that our sound
        # reached it (mcu/unit.py's media_counts, signaling/sip/testcall.py).
        voice = self.slots["voice"][0]
        for report in reports:
            if report.ssrc == voice.ssrc and voice.leg.packets:
                voice.fraction_lost = report.fraction_lost
                self.reported_lost = max(0, report.packets_lost)
                self.receiver_reports += 1

    def _write_rtcp(self, packet: bytes) -> None:
        """Our RTCP (sender and receiver reports) to the unit."""
        choice = self.choice
        sock = self._rtcp or self._rtp
        if sock is None or sock.transport is None or sock.transport.is_closing() or choice is None:
            raise ConnectionError("the unit's media sockets are closed")
        if self._tx is not None:
            packet = self._tx.protect_rtcp(packet) if 192 <= packet[1] <= 223 else self._tx.protect(packet)
        sock.transport.sendto(packet, choice.remote_rtcp)

    # What the room and the worker's tick ask of every participant -------------------------

    def point_slots(self, plan: dict[str, list[Producer | None]], names: dict[str, str]) -> bool:
        changed = False
        for purpose, producers in plan.items():
            for consumer, producer in zip(self.slots.get(purpose, ()), producers, strict=False):
                if producer is not None and not consumer.accepts(producer):
                    producer = None
                if consumer.producer is not producer:
                    consumer.switch_to(producer)
                    changed = True
        return changed

    def send_transport_feedback(self) -> None:
        return None  # units do not negotiate transport-cc

    def send_rtcp(self) -> None:
        """Sender report for the mix we send, receiver report for its voice (each
        second, from the worker's tick); a unit silent for MEDIA_TIMEOUT_S leaves."""
        if self.closed or self.choice is None:
            return
        if time.monotonic() - self.last_heard > MEDIA_TIMEOUT_S:
            logger.info("unit %s: no media for %g s: it has left", self.id, MEDIA_TIMEOUT_S)
            self.room._spawn(self.room.leave(cast(Any, self), reason="media_timeout"))
            return
        packets = []
        for consumer in self.consumers.values():
            report = consumer.sender_report()
            if report is not None:
                packets.append(report)
        microphone = self.producers["microphone"]
        block = microphone.receiver_report_block()
        if block is not None:
            packets.append(rtp.rtcp_receiver_report(microphone.feedback_ssrc, [block]))
        for packet in packets:
            try:
                self._write_rtcp(packet)
            except (ConnectionError, OSError):
                self.counters.send_errors += 1

    def tell_layers(self, active: list[str]) -> None:
        return None

    def set_video_codec(self, codec: str) -> bool:
        return False

    async def renegotiate(self) -> None:
        return None  # SIP re-INVITEs are the unit's to send; the session stays as answered

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for consumer in self.consumers.values():
            consumer.switch_to(None)
            consumer.disconnect()
        for producer in self.producers.values():
            producer.feedback = None
        self._sink.unbind()
        for sock in (self._rtp, self._rtcp):
            if sock is not None and sock.transport is not None:
                sock.transport.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def quality(self) -> dict[str, Any]:
        microphone = self.producers["microphone"]
        block = microphone.receiver_report_block()
        expected = block[3] - (microphone.base_seq or 0) + 1 if block else 0
        return {"loss_up_pct": round(100 * block[2] / expected, 1) if block and expected > 0 else 0.0,
                "loss_down_pct": 0.0, "bitrate_up_kbps": round(microphone.bitrate_bps / 1000),
                "estimate_down_kbps": None, "estimator": "none", "videos_paused": 0}

    def media_counts(self) -> dict[str, int]:
        counts = {"audio_in": 0, "video_in": 0, "audio_out": 0, "video_out": 0}
        for producer in self.producers.values():
            counts[f"{producer.kind}_in"] += producer.packets
        for consumer in self.consumers.values():
            counts[f"{consumer.kind}_out"] += consumer.leg.packets
        # The unit's word on what reached it (its RTCP receiver reports), for test calls.
        counts["receiver_reports"] = self.receiver_reports
        counts["audio_out_lost"] = self.reported_lost
        return counts

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "role": self.role, "mode": self.mode,
            "joined_at": self.joined_at, "video_codec": None, "connection": "sip",
            "producers": {s: {"packets": p.packets, "active": p.active} for s, p in self.producers.items()},
            "consumers": len(self.consumers),
        }
