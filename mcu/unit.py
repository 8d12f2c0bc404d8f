"""A room unit in a room: a participant whose media is plain RTP or SDES-SRTP (SIP).

Room systems bought through the grant programme call over SIP (signaling/sip/) and send
RTP to a UDP port we answer with, not WebRTC: no ICE, no DTLS. This is their side in the
media worker, beside :class:`~mcu.participant.Participant` (a browser's) in the same
:class:`~mcu.room.Room`:

* per m-line (sound, video) one UDP socket for RTP (and RTCP when the unit muxes
  them, else a second one: the SDP's ``a=rtcp``), bound on the worker's media address;
* its microphone is a producer like a browser's: packets go through the same C
  fan-out (:func:`mcu._fanout.receive`) to browsers' voice slots and to the room's mixer;
* it is always mixed (``mode`` ``"mixed"``): its voice slot shows the room's mix, so
  the unit hears everyone in one stream, through the same C legs as a browser's, and
  its camera slot the composite, in H.264 at the size its SDP allows (the mixer
  encodes it once per size, for all units of that size);
* its camera (H.264) is a producer too: forwarded to browsers in a room that forwards
  H.264, and decoded into the composite;
* SRTP with the keys of the SDP (RFC 4568) when the unit offered RTP/SAVP;
* RTCP feedback on video: PLI/FIR both ways, and generic NACK (RFC 4585) both ways when
  the unit negotiated it: the composite's lost packets resent from its leg's history
  (no RTX: same SSRC and numbers), and what browsers miss of its camera asked of it.

Packets are taken only from the address the unit's SDP names. The unit that stops
sending for :data:`MEDIA_TIMEOUT_S` (a call whose BYE was lost) leaves. Its re-INVITE
may hold and resume the call, move its media to another address or re-key its SRTP
(:meth:`UnitParticipant.update`; docs/sip.md "re-INVITE").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pylibsrtp

from mcu import aiortc_adapter as adapter
from mcu import codecs, rtp
from mcu._fanout import RECEIVED_TAPPED, RECEIVED_UNKNOWN, RECEIVED_WANTS_KEYFRAME, Sink, Track, receive
from mcu.forwarding import Consumer, Producer, smoothed_round_trip
from mcu.mixer.opus import FRAME_SAMPLES, SAMPLE_RATE, OpusEncoder
from mcu.unit_audio import Transcoder
from mcu.unit_camera import CameraForBrowsers
from mcu.unit_sdp import (
    OPUS,
    PLAIN,
    SECURE,
    SRTP_KEY_BYTES,
    UNSPECIFIED,
    LocalStream,
    SdpError,
    StreamChoice,
    answer,
    choose_audio,
    choose_video,
    offer_sdp,
    origin,
    parse_offer,
    rechoose,
    with_origin,
)

if TYPE_CHECKING:
    from mcu.room import Room

logger = logging.getLogger(__name__)

MEDIA_TIMEOUT_S = 30.0
ROOM_OPUS_PAYLOAD_TYPE = 111  # a transcoded unit's sound as the room has it
SOCKET_BUFFER_BYTES = 1 << 20
DTMF_KEYS = "0123456789*#ABCD"  # RFC 4733's events 0-15
# What a unit in the lobby hears (signaling/sip/units.py): a short beep, again and
# again, until it keys in the PIN: the cue that the call is up and waits for something.
PROMPT_HZ = 1000
PROMPT_BEEP_S = 0.2
PROMPT_PERIOD_S = 1.6


@functools.cache
def _prompt_frames() -> list[np.ndarray]:
    """One period of the lobby's cue as 20 ms frames of 48 kHz mono."""
    beep = int(PROMPT_BEEP_S * SAMPLE_RATE)
    pcm = np.zeros(int(PROMPT_PERIOD_S * SAMPLE_RATE), dtype=np.int16)
    t = np.arange(beep) / SAMPLE_RATE
    # Shaped by a Hann window: no click at either end.
    pcm[:beep] = (0.3 * 32767 * np.sin(2 * np.pi * PROMPT_HZ * t) * np.hanning(beep)).astype(np.int16)
    return [pcm[i:i + FRAME_SAMPLES] for i in range(0, len(pcm), FRAME_SAMPLES)]
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


class _Stream:
    """One m-line of the unit's session: its sockets, its SRTP, where it sends."""

    def __init__(self, unit: UnitParticipant, kind: str) -> None:
        self.unit = unit
        self.kind = kind
        self.choice: StreamChoice | None = None
        self.rtp: _Socket | None = None
        self.rtcp: _Socket | None = None
        self.sink = Sink()
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None  # kept alive for open
        self.open: Callable[[bytes], bytes | None] | None = None  # SRTP unprotect
        self.key: bytes | None = None  # ours, when SRTP

    async def bind(self, host: str, rtcp_socket: bool) -> None:
        loop = asyncio.get_running_loop()
        _, self.rtp = await loop.create_datagram_endpoint(
            lambda: _Socket(self._on_datagram), local_addr=(host, 0))
        if rtcp_socket:
            _, self.rtcp = await loop.create_datagram_endpoint(
                lambda: _Socket(self._on_datagram), local_addr=(host, 0))

    def local(self) -> LocalStream:
        assert self.rtp is not None
        return LocalStream(self.rtp.port, (self.rtcp or self.rtp).port, self.key)

    def set_up(self, choice: StreamChoice) -> None:
        """Media flows from here on, as ``choice`` (what both SDPs agreed) says."""
        self.choice = choice
        if choice.rtcp_mux and self.rtcp is not None:  # it takes RTCP on the RTP port
            assert self.rtcp.transport is not None
            self.rtcp.transport.close()
            self.rtcp = None
        if choice.crypto is not None and self.key is not None:
            self.tx = _srtp(choice.crypto.suite, self.key, outbound=True)
            self._receive_with(choice.crypto.suite, choice.crypto.key)
        self._point()

    def change(self, choice: StreamChoice) -> None:
        """The unit's re-INVITE moved it (:func:`~mcu.unit_sdp.rechoose`): a new
        address or port to send to, new SRTP keys of its own."""
        before, self.choice = self.choice, choice
        assert before is not None
        if choice.crypto is not None and before.crypto is not None and choice.crypto.key != before.crypto.key:
            self._receive_with(choice.crypto.suite, choice.crypto.key)
        if choice.remote != before.remote:
            self._point()

    def _receive_with(self, suite: str, key: bytes) -> None:
        self.rx = _srtp(suite, key, outbound=False)
        self.open = adapter.unprotector(self.rx)

    def _point(self) -> None:
        """The C sink sends to where the unit's SDP says."""
        choice = self.choice
        assert self.rtp is not None and choice is not None
        if self.tx is None:
            self.sink.bind(self.rtp.fileno, choice.remote[0], choice.remote[1], 0, 0, None)
        else:
            adapter.point_sink(self.sink, self.rtp.fileno, choice.remote, self.tx, (self, self.tx))

    def write(self, packet: bytes) -> None:
        """A packet of ours sent from Python, not the C sink: our RTCP (reports, PLI/FIR,
        NACK) and the consumer's retransmissions (:attr:`Consumer.write`). RTCP, told
        apart as RFC 5761 4 does, goes SRTCP-protected to the unit's RTCP address; RTP
        SRTP-protected to its RTP address (a unit without rtcp-mux drops RTP that comes to
        its RTCP port). The C sink protects with the same session; it allows a packet
        index again (``_srtp``)."""
        rtcp = 192 <= packet[1] <= 223
        choice = self.choice
        sock = (self.rtcp or self.rtp) if rtcp else self.rtp
        if sock is None or sock.transport is None or sock.transport.is_closing() or choice is None:
            raise ConnectionError("the unit's media sockets are closed")
        target = choice.remote_rtcp if rtcp else choice.remote
        if target[0] in UNSPECIFIED:  # 0.0.0.0: the unit takes nothing (RFC 3264 8.4)
            return
        if self.tx is not None:
            packet = self.tx.protect_rtcp(packet) if rtcp else self.tx.protect(packet)
        sock.transport.sendto(packet, target)

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # Whatever arrives, nothing escapes into the event loop: drops are counted.
        unit = self.unit
        try:
            choice = self.choice
            if unit.closed or choice is None or len(data) < 8 or data[0] >> 6 != 2 \
                    or addr[0] != choice.remote[0]:  # only the unit the SDP names
                unit.counters.unit_dropped += 1
                return
            if self.open is not None:
                plain = self.open(data)
                if plain is None:
                    unit.counters.unit_dropped += 1
                    return
                data = plain
            unit.last_heard = time.monotonic()
            if 192 <= data[1] <= 223:  # RTCP (RFC 5761)
                unit.on_rtcp(self, data)
            elif len(data) >= 12:
                unit.on_rtp(self, data)
            else:
                unit.counters.unit_dropped += 1
        except Exception:
            unit.counters.handler_errors += 1
            logger.exception("unit %s: a datagram failed", unit.id)

    def close(self) -> None:
        self.sink.unbind()
        for sock in (self.rtp, self.rtcp):
            if sock is not None and sock.transport is not None:
                sock.transport.close()


class UnitParticipant:
    """A room unit's place in a room (see the module's text): :meth:`start` takes the
    unit's offer (it called us), :meth:`make_offer` and :meth:`accept_answer` are for
    calling it."""

    unit = True  # the participant list says so: it has no mode to switch
    mode = "mixed"
    video_codec = codecs.H264  # its camera slot shows the composite in H.264
    publish_codec = codecs.H264  # its camera, when it sends one
    video_codecs: tuple[str, ...] = (codecs.H264,)
    sent_layers: list[str] | None = None  # it publishes no simulcast layers

    def __init__(self, room: Room, name: str, role: str, participant_id: str, media_host: str) -> None:
        self.id = participant_id
        self.room = room
        self.name = name
        self.role = role
        self.room_codec = codecs.H264
        self.media_host = media_host
        self.joined_at = time.time()
        self.counters = room.worker.counters
        self._packet_counters = self.counters.packet_path
        # A camera producer even for a unit without video, so the room's mixer takes it
        # as a source (its tile in the composite then shows its name).
        self.producers: dict[str, Producer] = {
            "microphone": Producer(f"{self.id}-microphone", self.id, "audio", "microphone", self.counters),
            "camera": Producer(f"{self.id}-camera", self.id, "video", "camera", self.counters,
                               codec=codecs.H264),
        }
        voice = Consumer(f"{self.id}:voice0", "audio", self.id, self.counters)
        self.slots: dict[str, list[Consumer]] = {"voice": [voice], "camera": []}
        self.consumers: dict[str, Consumer] = {voice.id: voice}
        self.streams: dict[str, _Stream] = {}
        self._tracks: dict[int, Track] = {}
        self.remb_estimates: dict[int, int] = {}
        self.over_estimate_since: dict[int, float] = {}
        self.last_video_change = self.last_layer_change = time.monotonic()
        self.slot = secrets.randbelow(10)  # which of the worker's ticks sends our RTCP
        self.closed = False
        self.answered = False
        self.last_heard = time.monotonic()
        self.dtmf_events = 0  # keys pressed (RFC 4733 events), each counted once
        self._dtmf_timestamp: int | None = None  # the RTP timestamp of the last key's event
        self.on_dtmf: Callable[[str], None] | None = None  # a key, while it keys in a PIN
        self._prompt: asyncio.Task[None] | None = None
        self._camera_vp8: CameraForBrowsers | None = None
        self.receiver_reports = 0  # the unit's reports on the mix we send it
        self.rtt_s: float | None = None  # from its receiver reports of what we send
        self.reported_lost = 0  # of the mix, as the unit's last report counts it
        self.video_receiver_reports = 0  # and on the composite
        self.video_reported_lost = 0
        # The composite's size for this unit, from its SDP (mcu/unit_sdp.py), once it has video.
        self.composite_size: tuple[int, int] | None = None
        self._origin: tuple[str, int] | None = None  # the o= id and version of our last SDP
        self.on_closed: Callable[[UnitParticipant], None] | None = None
        # A unit on G.722 or G.711 (mcu/unit_audio.py): its sound re-timed as Opus packets
        # of our own numbering; the room's mixer sends it the mix in that codec.
        self.transcoder: Transcoder | None = None
        self.mix_codec: str | None = None  # "G722", "PCMU" or "PCMA" (None: Opus)
        self.sound_frames = 0  # its sound's 20 ms frames, encoded to Opus or (quiet) not
        self._opus_seq = secrets.randbits(16)
        self._opus_ts = secrets.randbits(32)

    @property
    def choice(self) -> StreamChoice | None:
        """The sound's m-line as agreed (None until then)."""
        audio = self.streams.get("audio")
        return audio.choice if audio is not None else None

    async def start(self, offer_text: str) -> str:
        """The unit called: bind the media sockets for its offer and return our answer
        (SdpError when the offer cannot be taken)."""
        offer = parse_offer(offer_text)
        choices = [choose_audio(offer)]
        video = choose_video(offer, self.room.worker.config.unit_composite_max)
        if video is not None:
            choices.append(video)
        taken = []
        for choice in choices:
            stream = self.streams[choice.kind] = _Stream(self, choice.kind)
            await stream.bind(self.media_host, rtcp_socket=not choice.rtcp_mux)
            if choice.crypto is not None:
                stream.key = secrets.token_bytes(SRTP_KEY_BYTES)
            taken.append((choice, stream.local()))
        await self._set_up(choices)
        ours = answer(offer, taken, self.media_host)
        self._origin = origin(ours)
        return ours

    async def make_offer(self, srtp: bool = False, video: bool = True) -> str:
        """We call the unit (dial-out): bind the media sockets and return our offer; the
        unit's answer comes to :meth:`accept_answer`."""
        for kind in ("audio", "video") if video else ("audio",):
            stream = self.streams[kind] = _Stream(self, kind)
            await stream.bind(self.media_host, rtcp_socket=True)
            stream.key = secrets.token_bytes(SRTP_KEY_BYTES) if srtp else None
        ours = offer_sdp(self.media_host, {kind: stream.local() for kind, stream in self.streams.items()})
        self._origin = origin(ours)
        return ours

    async def accept_answer(self, answer_text: str) -> None:
        """The unit's answer to :meth:`make_offer`; SdpError when it cannot be taken."""
        if self.answered:
            raise SdpError("bad_sdp", "the call has its answer already")
        answered = parse_offer(answer_text)
        choices = [choose_audio(answered)]
        video = choose_video(answered, self.room.worker.config.unit_composite_max) \
            if "video" in self.streams else None
        if video is not None:
            choices.append(video)
        for choice in choices:
            # (Our offer is in RTP/AVP or RTP/SAVP: an answer in RFC 4585's AVPF is off it.)
            if (choice.crypto is None) != (self.streams[choice.kind].key is None) \
                    or choice.profile not in (PLAIN, SECURE):
                raise SdpError("codec_mismatch", "the answer does not keep to the offered RTP profile")
        for kind in [k for k in self.streams if k not in {c.kind for c in choices}]:
            self.streams.pop(kind).close()  # refused by the unit: no video, say
        await self._set_up(choices)

    async def _set_up(self, choices: list[StreamChoice]) -> None:
        self.answered = True
        self.last_heard = time.monotonic()
        for choice in choices:
            stream = self.streams[choice.kind]
            stream.set_up(choice)
            producer = self.producers["microphone" if choice.kind == "audio" else "camera"]
            producer.payload_type = choice.payload_type
            if choice.kind == "audio" and choice.codec != OPUS:
                # G.722/G.711: Opus inside the room, the unit's codec on its wire. The
                # mixer makes the mix in its codec (its voice slot points there).
                self.transcoder = Transcoder(choice.codec)
                self.mix_codec = choice.codec
                producer.payload_type = ROOM_OPUS_PAYLOAD_TYPE
            producer.feedback = stream.write  # PLI/FIR and reports go back on its m-line
            # What browsers miss of its camera is NACKed to it, if it said it resends
            # (a=rtcp-fb nack): a packet lost between the unit and us reaches none of them.
            producer.nacks_upstream = choice.kind == "video" and choice.nack
            if choice.kind == "video" and choice.we_receive:
                self._add_camera_for_browsers()
            if choice.kind == "video":
                self.composite_size = choice.receive_size
                # A slot for the composite (in H.264), pointed by the room like the mix.
                camera = Consumer(f"{self.id}:camera0", "video", self.id, self.counters, codec=codecs.H264)
                self.slots["camera"] = [camera]
                self.consumers[camera.id] = camera
            consumer = self.slots["voice" if choice.kind == "audio" else "camera"][0]
            # No RTX for units: a NACKed packet goes again as it was, on the same SSRC
            # and sequence number (RFC 4585 allows it without RFC 4588).
            consumer.configure(secrets.randbits(32) or 1, 0, choice.payload_type, None,
                               stream.write, stream.sink)
            self._send_to(choice.kind, choice.we_send)

    def _add_camera_for_browsers(self) -> None:
        """Its camera in VP8 too, for browsers in a room that forwards VP8."""
        self._camera_vp8 = CameraForBrowsers(self.id, self.producers["camera"], self.counters,
                                             self._receive_own)
        self.producers["camera_vp8"] = self._camera_vp8
        self._tracks[self._camera_vp8.ssrc or 0] = self._camera_vp8.track

    def _send_to(self, kind: str, sending: bool) -> None:
        """Send the unit its slot of ``kind`` (the mix, the composite) or not: it put
        the call on hold, or took it back (a re-INVITE), or never wanted it. Our RTCP
        goes on either way (RFC 3264 5.1)."""
        consumer = self.slots["voice" if kind == "audio" else "camera"][0]
        sink = self.streams[kind].sink
        if not sending:
            consumer.leg.sink = None
            return
        if consumer.leg.sink is not sink:
            consumer.leg.sink = sink
            consumer.leg.started = False  # video: from a keyframe
        if kind == "video":
            consumer.request_keyframe()

    async def update(self, offer_text: str, version: int | None = None) -> str:
        """The unit's new offer in a re-INVITE (RFC 3264 8); our answer. What it may
        change: hold and resume (which way media flows; on hold it gets nothing from us
        and its own media, if it sends any, is heard as before), the address and ports
        it takes media on, its SRTP key. Our ports, codecs and keys stay, and an m-line
        it adds (content sharing, say) is refused in the answer (port 0) while the call
        goes on. A change we cannot make (another codec, RTP profile or SRTP suite, an
        m-line gone) raises SdpError and the session stays as it was.

        ``version``: the session goes back to ``offer_text``, the unit's offer before a
        re-INVITE it cancelled once this took it (RFC 3261 9.2), and our SDP's version
        back to the one it has, so that our next answer counts up from it by one."""
        if self.closed or not self.answered or self._origin is None:
            raise SdpError("bad_sdp", "the call has no session to change yet")
        offer = parse_offer(offer_text)
        changes = [(stream, rechoose(offer, stream.choice)) for stream in self.streams.values()
                   if stream.choice is not None]
        for stream, choice in changes:  # all or nothing: rechoose() raised before any change
            before = stream.choice
            stream.change(choice)
            if before is not None and before.we_send != choice.we_send:
                self._send_to(choice.kind, choice.we_send)
            if choice.kind == "video" and choice.we_receive and self._camera_vp8 is None:
                # It sends its camera now (it did not at first): browsers of a VP8 room
                # get it as they would have from the start, the room ranking it anew.
                self._add_camera_for_browsers()
                if self.room.participants.get(self.id) is self:
                    self.room.assign_slots()
        self.last_heard = time.monotonic()
        session_id, last = self._origin
        version = last + 1 if version is None else version
        self._origin = (session_id, version)
        # A stream it stopped (port 0) is answered stopped too (RFC 3264 8.2).
        taken = [(choice, stream.local()) for stream, choice in changes if offer.media[choice.index].port]
        return with_origin(answer(offer, taken, self.media_host), session_id, version)

    # The lobby's cue --------------------------------------------------------------------

    def start_prompt(self) -> None:
        """Play the lobby's cue to the unit until :meth:`stop_prompt` (it is admitted)."""
        stream = self.streams.get("audio")
        if self._prompt is None and stream is not None and stream.choice is not None \
                and stream.choice.we_send:
            self._prompt = asyncio.ensure_future(self._play_prompt(stream))

    def stop_prompt(self) -> None:
        if self._prompt is not None:
            self._prompt.cancel()
            self._prompt = None

    async def _play_prompt(self, stream: _Stream) -> None:
        assert stream.choice is not None
        encoder = OpusEncoder()
        # An SSRC of its own: the mix that follows starts its own sequence and clock.
        ssrc, seq, timestamp = secrets.randbits(32) or 1, secrets.randbits(16), secrets.randbits(32)
        loop = asyncio.get_running_loop()
        due = loop.time()
        first = True
        try:
            while not self.closed:
                for pcm in _prompt_frames():
                    # The session as it is now: a re-INVITE in the lobby may hold the call
                    # (nothing is sent, as of the mix in the room) or move the unit's port.
                    choice = stream.choice
                    assert choice is not None
                    payload = encoder.encode(pcm)
                    step = FRAME_SAMPLES
                    if self.transcoder is not None:  # in the unit's codec (8000 Hz clock)
                        payload = self.transcoder.from_opus(payload)
                        step = len(payload)
                    packet = rtp.rtp_header(choice.payload_type, first, seq, timestamp, ssrc, False) + payload
                    first = False
                    seq, timestamp = (seq + 1) & 0xFFFF, (timestamp + step) & 0xFFFFFFFF
                    if stream.tx is not None:
                        packet = stream.tx.protect(packet)
                    transport = stream.rtp.transport if stream.rtp is not None else None
                    if transport is None or transport.is_closing():
                        return
                    if choice.we_send:
                        transport.sendto(packet, choice.remote)
                    due += FRAME_SAMPLES / SAMPLE_RATE
                    await asyncio.sleep(max(0.0, due - loop.time()))
        except Exception:
            self.counters.handler_errors += 1
            logger.exception("unit %s: the lobby's cue failed", self.id)

    # Packet path ----------------------------------------------------------------------

    def on_rtp(self, stream: _Stream, data: bytes) -> None:
        choice = stream.choice
        assert choice is not None
        payload_type = data[1] & 0x7F
        if payload_type == choice.dtmf_payload_type:
            self._on_telephone_event(data)
            return
        if stream.kind == "audio" and self.transcoder is not None:
            if payload_type != choice.payload_type:
                self.counters.packets_unroutable += 1
                return
            try:
                view = rtp.parse_rtp(data)
            except rtp.MalformedPacket:
                self.counters.packets_malformed += 1
                return
            ssrc = view.ssrc
            # Its quiet sound is of use only to a subscriber that forwards its voice (the
            # mixer never mixes it): for nobody else, it is not even encoded.
            microphone = self.producers["microphone"]
            for packet, level in self.transcoder.to_opus(data[view.payload_start:view.payload_end],
                                                         quiet_too=bool(microphone.consumers)):
                self.sound_frames += 1
                self._opus_ts = (self._opus_ts + FRAME_SAMPLES) & 0xFFFFFFFF
                if packet is None:
                    continue
                self._opus_seq = (self._opus_seq + 1) & 0xFFFF
                self._receive(stream, rtp.rtp_header(ROOM_OPUS_PAYLOAD_TYPE, False, self._opus_seq,
                                                     self._opus_ts, ssrc, True)
                              + rtp.audio_level_block(level) + packet)
            return
        self._receive(stream, data)

    def _on_telephone_event(self, data: bytes) -> None:
        """A key pressed on the unit (RFC 4733): one event is several packets of one RTP
        timestamp (sent while the key is held, the last one three times), so a key is
        taken at the first packet of a timestamp not seen before; that needs no end
        packet, which may be lost."""
        try:
            view = rtp.parse_rtp(data)
        except rtp.MalformedPacket:
            self.counters.packets_malformed += 1
            return
        payload = data[view.payload_start:view.payload_end]
        if len(payload) < 4 or view.timestamp == self._dtmf_timestamp:
            return
        self._dtmf_timestamp = view.timestamp
        if payload[0] >= len(DTMF_KEYS):  # flash hook, tones: not keys of a PIN
            return
        self.dtmf_events += 1
        if self.on_dtmf is not None:
            self.on_dtmf(DTMF_KEYS[payload[0]])

    def _receive_own(self, data: bytes) -> None:
        """A packet we made of the unit's media (its camera in VP8) into the fan-out."""
        if receive(self._tracks, data, self._packet_counters) & RECEIVED_WANTS_KEYFRAME \
                and self._camera_vp8 is not None:
            self._camera_vp8.request_keyframe()

    def _receive(self, stream: _Stream, data: bytes) -> None:
        payload_type = data[1] & 0x7F
        status = receive(self._tracks, data, self._packet_counters)
        producer = self.producers["microphone" if stream.kind == "audio" else "camera"]
        if status & RECEIVED_UNKNOWN:
            if payload_type != producer.payload_type:
                self.counters.packets_received += 1
                self.counters.packets_unroutable += 1
                return
            # Its SSRC is learnt from its first packet: SIP offers seldom name it.
            if producer.ssrc is not None:
                self._tracks.pop(producer.ssrc, None)
            producer.ssrc = int.from_bytes(data[8:12], "big")
            self._tracks[producer.ssrc] = producer.track
            status = receive(self._tracks, data, self._packet_counters)
        if status & RECEIVED_WANTS_KEYFRAME:
            producer.request_keyframe()
        if status & RECEIVED_TAPPED:
            producer.run_taps(data)

    def on_rtcp(self, stream: _Stream, data: bytes) -> None:
        try:
            packets = adapter.parse_rtcp(data)
        except ValueError:
            self.counters.rtcp_malformed += 1
            return
        producer = self.producers["microphone" if stream.kind == "audio" else "camera"]
        slot = self.slots["voice" if stream.kind == "audio" else "camera"]
        for packet in packets:
            if isinstance(packet, adapter.RtcpSr) and packet.ssrc == producer.ssrc:
                info = packet.sender_info
                producer.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)
            if isinstance(packet, adapter.RtcpSr | adapter.RtcpRr) and slot:
                self._on_reception_reports(stream.kind, slot[0], packet.reports)
            elif isinstance(packet, adapter.RtcpPsfb) and slot \
                    and packet.fmt in (rtp.RTCP_PSFB_PLI, rtp.RTCP_PSFB_FIR):
                slot[0].request_keyframe()  # the unit wants a fresh composite
            elif isinstance(packet, adapter.RtcpRtpfb) and packet.fmt == rtp.RTCP_RTPFB_NACK and slot \
                    and stream.choice is not None and stream.choice.nack \
                    and packet.media_ssrc == slot[0].ssrc:
                # Packets of the composite it lost, resent from the leg's history (by the
                # numbers it saw). What the leg never sent is not asked for anywhere: the
                # composite is made here, a lost frame of it is repaired by a key frame.
                slot[0].retransmit(adapter.nack_lost(packet))

    def _on_reception_reports(self, kind: str, consumer: Consumer, reports: list[Any]) -> None:
        # What the unit says it received of the mix or the composite: a test call's proof
        # that our sound and picture reached it (signaling/sip/testcall.py).
        for report in reports:
            if report.ssrc == consumer.ssrc and consumer.leg.packets:
                consumer.fraction_lost = report.fraction_lost
                rtt = consumer.round_trip(report.lsr, report.dlsr)
                if rtt is not None:
                    self.rtt_s = smoothed_round_trip(self.rtt_s, rtt)
                if kind == "audio":
                    self.reported_lost = max(0, report.packets_lost)
                    self.receiver_reports += 1
                else:
                    self.video_reported_lost = max(0, report.packets_lost)
                    self.video_receiver_reports += 1

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

    def file_estimate(self) -> None:
        return None  # no transport-cc estimate to file: a unit's REMB is filed as it comes

    def send_rtcp(self) -> None:
        """Sender report for the mix we send, receiver report for its voice (each
        second, from the worker's tick); a unit silent for MEDIA_TIMEOUT_S leaves."""
        if self.closed or self.choice is None:
            return
        if time.monotonic() - self.last_heard > MEDIA_TIMEOUT_S:
            logger.info("unit %s: no media for %g s: it has left", self.id, MEDIA_TIMEOUT_S)
            self.room._spawn(self.room.leave(cast(Any, self), reason="media_timeout"))
            return
        for kind, stream in self.streams.items():
            packets = []
            slot = self.slots["voice" if kind == "audio" else "camera"]
            report = slot[0].sender_report() if slot else None
            if report is not None:
                packets.append(report)
            producer = self.producers["microphone" if kind == "audio" else "camera"]
            block = producer.receiver_report_block()
            if block is not None:
                packets.append(rtp.rtcp_receiver_report(producer.feedback_ssrc, [block]))
            for packet in packets:
                try:
                    stream.write(packet)
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
        self.stop_prompt()
        for consumer in self.consumers.values():
            consumer.switch_to(None)
            consumer.disconnect()
        for producer in self.producers.values():
            producer.feedback = None
        if self._camera_vp8 is not None:
            self._camera_vp8.stop()
        for stream in self.streams.values():
            stream.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def tick_readable_sockets(self) -> list[Any]:
        """None: a unit's RTP sockets are the event loop's datagram endpoints, read as
        packets come (the mixer reads only browsers' ICE sockets on its tick)."""
        return []

    def quality(self) -> dict[str, Any]:
        microphone = self.producers["microphone"]
        block = microphone.receiver_report_block()
        expected = block[3] - (microphone.base_seq or 0) + 1 if block else 0
        return {"loss_up_pct": round(100 * block[2] / expected, 1) if block and expected > 0 else 0.0,
                "loss_down_pct": 0.0, "bitrate_up_kbps": round(microphone.bitrate_bps / 1000),
                "estimate_down_kbps": None, "estimator": "none", "videos_paused": 0,
                "rtt_ms": round(self.rtt_s * 1000, 1) if self.rtt_s is not None else None}

    def media_counts(self) -> dict[str, int]:
        counts = {"audio_in": 0, "video_in": 0, "audio_out": 0, "video_out": 0}
        for producer in self.producers.values():
            if not producer.local_only:  # what it sent us, not what we made of it
                counts[f"{producer.kind}_in"] += producer.packets
        if self.transcoder is not None:  # every 20 ms it sent, whether encoded to Opus or not
            counts["audio_in"] = self.sound_frames
        for consumer in self.consumers.values():
            counts[f"{consumer.kind}_out"] += consumer.leg.packets
        # The unit's word on what reached it (its RTCP receiver reports), for test calls.
        counts["receiver_reports"] = self.receiver_reports
        counts["audio_out_lost"] = self.reported_lost
        counts["video_receiver_reports"] = self.video_receiver_reports
        counts["video_out_lost"] = self.video_reported_lost
        # Its camera's pictures that the mixer decoded (while it composes and shows the
        # unit): packets alone could be anything, a decoded picture is video.
        mixer = self.room.mixer
        counts["video_in_frames"] = mixer.frames_decoded.get(self.id, 0) if mixer is not None else 0
        counts["video_in_keyframes"] = mixer.keyframes_decoded.get(self.id, 0) if mixer is not None else 0
        counts["video"] = int(bool(self.slots["camera"]))  # it negotiated video
        counts["video_width"], counts["video_height"] = self.composite_size or (0, 0)
        return counts

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "role": self.role, "mode": self.mode,
            "joined_at": self.joined_at, "video_codec": None, "connection": "sip",
            "producers": {s: {"packets": p.packets, "active": p.active} for s, p in self.producers.items()},
            "consumers": len(self.consumers),
        }
