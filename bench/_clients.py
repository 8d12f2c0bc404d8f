"""The load generator's peers: publishers that send pre-encoded RTP, subscribers that count it.

Both take over their aiortc transceivers through :mod:`mcu.aiortc_adapter` (aiortc keeps
ICE, DTLS and SRTP; it starts no encoder, decoder or jitter buffer), so the bench's own
cost per packet is one SRTP operation and a few dictionary lookups.

Delay: a publisher records, per stream and sequence number, when it wrote each packet
and which payload it carried. A subscriber learns each leg's sequence-number offset (the
server adds a constant per leg) by looking up the first payload it receives among the
recently sent ones, then checks every later packet's payload against the one sent under
the mapped sequence number (and learns the offset again if it ever changes).

Simulcast (``Participant(simulcast=True)``): as Chrome does, a publisher answers the
server's request for camera layers (bench/_sdp.py) and sends three streams on the
camera's m-line, each on an SSRC of its own with the RID header extension. With
``transport_cc="feedback"`` (bench.sfu's default with --simulcast) a client agrees to
transport-cc, stamps what it sends with transport-wide sequence numbers, and reports
what it receives in transport-cc feedback every 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from mcu._fanout import Arrivals

from bench import _sdp
from bench._media import AUDIO_FRAME, VIDEO_FPS, EncodedMedia, VideoLayer
from mcu import aiortc_adapter as adapter
from mcu import rtp, simulcast, twcc

logger = logging.getLogger("bench")

SEQ_SPACE = 1 << 16
RECENT_PAYLOADS = 4000  # sent payloads a leg's first packet is looked up in
FEEDBACK_INTERVAL_S = 1.0
TRANSPORT_FEEDBACK_INTERVAL_S = 0.1  # about what Chrome sends at these rates
TRANSPORT_CC_MODES = ("off", "stamp", "feedback")  # Participant(transport_cc=...)
REMB_BPS = 10_000_000

Poster = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]  # POST JSON, get JSON


def new_peer_connection() -> RTCPeerConnection:
    # max-bundle: aiortc 1.16 with "balanced" leaves later m-lines on a dead transport.
    return RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


def prefer_codecs(transceiver: RTCRtpTransceiver) -> None:
    wanted = ("audio/opus",) if transceiver.kind == "audio" else ("video/vp8", "video/rtx")
    codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() in wanted])


# Measurement window -------------------------------------------------------------------


@dataclass
class Window:
    """Packets sent in [start, end) count; their delays are kept."""

    start: float = float("inf")
    end: float = float("inf")
    # Per packet, in the same order: send time; kernel arrival at the subscriber's socket
    # minus send time (what the server added); and the time the subscriber's event loop
    # handled it minus send time (adds the load generator's own lag).
    sent: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    handled_delays: list[float] = field(default_factory=list)
    unstamped: int = 0  # packets with no kernel arrival time (the handling time stands in)


# Publishing ---------------------------------------------------------------------------


class TransportSequence:
    """transport-cc on a sending connection: one sequence number per packet, across all
    its streams. ``extension_id`` 0 until the answer agreed to it (nothing is stamped)."""

    def __init__(self) -> None:
        self.extension_id = 0
        self.seq = random.getrandbits(16)

    def element(self) -> tuple[int, bytes]:
        """The next packet's header extension element."""
        seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        return self.extension_id, seq.to_bytes(2, "big")


class OutStream:
    """One publisher track: pre-encoded payloads sent as RTP on an absolute clock.

    ``layer``: a simulcast layer of the camera (its frames, and its RID on every packet).
    ``transport``: the connection's transport-cc numbering, when it has any.
    """

    def __init__(self, kind: str, media: EncodedMedia, layer: VideoLayer | None = None,
                 transport: TransportSequence | None = None) -> None:
        self.kind = kind
        self.media = media
        self.video_frames = layer.frames if layer is not None else media.video_frames
        self.rid = layer.rid.encode("ascii") if layer is not None else b""
        self.transport = transport
        self.payload_type = 0
        self.ssrc = 0
        self.mid = b""
        self.write: Callable[[bytes], None] | None = None
        self.seq = random.getrandbits(16)
        self.timestamp_base = random.getrandbits(32)
        self.index = 0  # frame number since the start
        self.sent = 0
        self.send_errors = 0
        self.sent_at = [0.0] * SEQ_SPACE
        self.payload_at: list[bytes | None] = [None] * SEQ_SPACE
        self.recent: dict[bytes, int] = {}
        self._recent_order: deque[tuple[bytes, int]] = deque()
        self.period = 1 / VIDEO_FPS if kind == "video" else AUDIO_FRAME / 48000
        self.start_at = 0.0

    @property
    def ready(self) -> bool:
        return self.write is not None and self.payload_type != 0

    def configure(self, negotiated: adapter.NegotiatedRtp, ssrc: int, dtls: Any) -> None:
        self.payload_type = negotiated.payload_type
        self.ssrc = ssrc
        self.mid = (negotiated.mid or "").encode("ascii")
        self.write = adapter.packet_writer(dtls)

    def next_due(self) -> float:
        return self.start_at + self.index * self.period

    def send_frame(self) -> None:
        """Send the next frame's packets (nothing, but keep the clock, until negotiated)."""
        index, self.index = self.index, self.index + 1
        write = self.write
        if write is None or not self.payload_type:
            return
        if self.kind == "video":
            frames = self.video_frames
            payloads = frames[index % len(frames)]
            timestamp = (self.timestamp_base + index * (90000 // VIDEO_FPS)) & 0xFFFFFFFF
            elements = [(rtp.EXT_MID, self.mid), (rtp.EXT_ABS_SEND_TIME, rtp.abs_send_time_now())]
            if self.rid:
                elements.append((simulcast.EXT_RID, self.rid))
        else:
            frames_a = self.media.audio_frames
            payloads = [frames_a[index % len(frames_a)]]
            timestamp = (self.timestamp_base + index * AUDIO_FRAME) & 0xFFFFFFFF
            elements = [(rtp.EXT_MID, self.mid),
                        (rtp.EXT_AUDIO_LEVEL, bytes([0x80 | self.media.audio_level]))]
        extension = rtp.one_byte_extension_block(elements)
        transport = self.transport if self.transport is not None and self.transport.extension_id else None
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            seq = self.seq
            self.seq = (seq + 1) & 0xFFFF
            if transport is not None:  # a number of its own on every packet
                extension = rtp.one_byte_extension_block([*elements, transport.element()])
            packet = rtp.rtp_header(self.payload_type, i == last, seq, timestamp, self.ssrc,
                                    True) + extension + payload
            self._remember(seq, payload)
            self.sent_at[seq] = time.monotonic()
            try:
                write(packet)
            except (ConnectionError, OSError):
                self.send_errors += 1
                continue
            self.sent += 1

    def _remember(self, seq: int, payload: bytes) -> None:
        self.payload_at[seq] = payload
        self.recent[payload] = seq
        self._recent_order.append((payload, seq))
        if len(self._recent_order) > RECENT_PAYLOADS:
            old, old_seq = self._recent_order.popleft()
            if self.recent.get(old) == old_seq:
                del self.recent[old]


class Pacer:
    """Sends every stream's frames on time, from one task (earliest due first)."""

    def __init__(self) -> None:
        self.streams: list[OutStream] = []
        self.late_max = 0.0
        self._task: asyncio.Task[None] | None = None

    def add(self, stream: OutStream, phase: float) -> None:
        """Send ``stream`` from ``phase`` seconds after :meth:`start`."""
        stream.start_at = phase
        self.streams.append(stream)

    def start(self) -> None:
        now = time.monotonic()
        for stream in self.streams:
            stream.start_at += now
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        heap = [(s.next_due(), i, s) for i, s in enumerate(self.streams)]
        heapq.heapify(heap)
        while True:
            due, i, stream = heap[0]
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            self.late_max = max(self.late_max, now - due)
            stream.send_frame()
            heapq.heapreplace(heap, (stream.next_due(), i, stream))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def resume(self) -> None:
        """Start again after :meth:`stop`, from now: no burst of the frames skipped meanwhile."""
        now = time.monotonic()
        # The same shift for every stream keeps the publishers staggered.
        shift = max(0.0, now - min(stream.next_due() for stream in self.streams))
        for stream in self.streams:
            stream.start_at += shift
        self._task = asyncio.ensure_future(self._run())


# Receiving ----------------------------------------------------------------------------


class Leg:
    """One forwarded stream as one subscriber receives it."""

    __slots__ = ("first_at", "in_window", "kind", "mismatched", "offset", "received", "relearned",
                 "source")

    def __init__(self, source: OutStream | None, kind: str) -> None:
        self.source = source  # the publisher's stream, when this leg is matched to one
        self.kind = kind
        self.offset: int | None = None
        self.received = 0
        self.in_window = 0
        self.mismatched = 0  # packets whose payload matched nothing sent
        self.relearned = 0
        self.first_at = 0.0


class Receiver:
    """Counts and times RTP on one client's connection, without decoding anything."""

    def __init__(self, window: Window, sources: dict[str, OutStream] | None) -> None:
        self.window = window
        self.sources = sources or {}  # kind -> the stream this subscriber should receive
        self.legs: dict[int, Leg] = {}
        self.kind_by_ssrc: dict[int, str] = {}
        self.kind_by_pt: dict[int, str] = {}
        self.rtcp_packets = 0
        self.keyframe_requests = 0
        self.other_packets = 0  # RTX, unknown payload types
        self.errors = 0
        self.video_ssrcs: set[int] = set()
        # Kernel receive time of the packet being handled (adapter.arrival_clock).
        self.arrival: Callable[[], float | None] | None = None
        # transport-cc, once the answer agreed to it: the extension's ID; the numbers
        # received, with their arrival (monotonic seconds), and the feedback made of them
        # (the server's own C code makes it, as for its publishers: mcu/_fanout.c).
        self.transport_cc_id = 0
        self.transport_feedback = False  # keep the arrivals (someone sends feedback on them)
        self.transport_arrivals = Arrivals(0)
        self.transport_stamped = 0  # RTP packets that carried a transport-wide number
        # What the server's RTCP said: the SSRCs its receiver reports covered (for a
        # publisher: the streams it learned), and its transport-cc feedback packets.
        self.reported_ssrcs: set[int] = set()
        self.transport_feedback_received = 0

    def negotiated(self, negotiated: adapter.NegotiatedRtp) -> None:
        self.kind_by_pt[negotiated.payload_type] = negotiated.kind
        for ssrc in negotiated.ssrcs:
            self.kind_by_ssrc[ssrc] = negotiated.kind
            if negotiated.kind == "video":
                self.video_ssrcs.add(ssrc)

    def _arrived(self, now: float) -> float:
        """The packet being handled: when the kernel queued it (monotonic clock)."""
        stamp = self.arrival() if self.arrival is not None else None
        if stamp is None:
            self.window.unstamped += 1
            return now
        return stamp - (time.time() - time.monotonic())  # CLOCK_REALTIME to monotonic

    def on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        now = time.monotonic()
        view = rtp.parse_rtp(data)
        arrived: float | None = None
        if self.transport_cc_id:
            number = view.extensions.get(self.transport_cc_id)
            if number is not None and len(number) == 2:
                self.transport_stamped += 1
                if self.transport_feedback:
                    arrived = self._arrived(now)
                    self.transport_arrivals.record(int.from_bytes(number, "big"), arrived)
        leg = self.legs.get(view.ssrc)
        if leg is None:
            kind = self.kind_by_pt.get(view.payload_type)
            if kind is None:
                self.other_packets += 1
                return
            leg = self.legs[view.ssrc] = Leg(self.sources.get(kind), kind)
            leg.first_at = now
        leg.received += 1
        source = leg.source
        if source is None:
            return
        payload = data[view.payload_start:view.payload_end]
        seq = view.sequence_number
        if leg.offset is not None:
            sent_seq = (seq - leg.offset) & 0xFFFF
            if source.payload_at[sent_seq] != payload:
                leg.offset = None
                leg.relearned += 1
        if leg.offset is None:
            found = source.recent.get(payload)
            if found is None:
                leg.mismatched += 1
                return
            leg.offset = (seq - found) & 0xFFFF
            sent_seq = found
        sent = source.sent_at[sent_seq]
        window = self.window
        if window.start <= sent < window.end:
            leg.in_window += 1
            if arrived is None:
                arrived = self._arrived(now)
            window.sent.append(sent)
            window.delays.append(arrived - sent)
            window.handled_delays.append(now - sent)

    def on_rtcp(self, data: bytes) -> None:
        self.rtcp_packets += 1
        at = 0
        while at + 8 <= len(data):  # each packet of the compound one
            kind, fmt = data[at + 1], data[at] & 0x1F
            end = at + 4 + 4 * int.from_bytes(data[at + 2:at + 4], "big")
            if kind == rtp.RTCP_PSFB and fmt in (rtp.RTCP_PSFB_PLI, rtp.RTCP_PSFB_FIR):
                self.keyframe_requests += 1
            elif kind == rtp.RTCP_RR:  # report blocks of 24 bytes, each naming its SSRC
                for block in range(at + 8, min(end, len(data)) - 23, 24):
                    self.reported_ssrcs.add(int.from_bytes(data[block:block + 4], "big"))
            elif kind == twcc.RTCP_RTPFB and fmt == twcc.FMT_TRANSPORT_CC:
                self.transport_feedback_received += 1
            at = end

    def on_error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors <= 3:
            logger.warning("receive path error: %r", exc)

    def matched(self, kinds: tuple[str, ...] = ("audio", "video")) -> bool:
        return all(any(leg.kind == kind and leg.offset is not None for leg in self.legs.values())
                   for kind in kinds)

    def flowing(self, kinds: tuple[str, ...] = ("audio", "video")) -> bool:
        return all(any(leg.kind == kind and leg.received > 0 for leg in self.legs.values())
                   for kind in kinds)


def configure_layers(streams: list[OutStream], negotiated: Any, ssrc: int, rtx_ssrc: int, dtls: Any,
                     skip: Callable[[OutStream], bool] = lambda stream: False) -> None:
    """One m-line, a stream per simulcast layer (lowest first): aiortc's SSRC for the top
    one, our own for the others (the server learns each from its RID). Streams already
    configured, or that ``skip`` names, are left as they are."""
    taken = {ssrc, rtx_ssrc}
    for stream in streams:
        if stream.ready or skip(stream):
            continue
        layer_ssrc = ssrc if stream is streams[-1] else 0
        while not layer_ssrc or layer_ssrc in taken:
            layer_ssrc = random.getrandbits(32)
        taken.add(layer_ssrc)
        stream.configure(negotiated, layer_ssrc, dtls)


# One participant of the multipoint service ---------------------------------------------


class Participant:
    """A participant over the real protocol (docs/protocol.md): join, answer every offer.

    ``publish`` participants send the pre-encoded audio and video on their microphone and
    camera slots; the others answer every publish slot inactive and only receive.

    ``simulcast``: answer as Chrome does (the camera's layers, when the offer asks for
    them and ``media`` has them). ``streams["video"]`` is then the top layer (what
    subscribers get when they report no tile size); ``layer_streams`` holds every layer,
    low to high. ``transport_cc``: "off" (aiortc's answer: REMB), "stamp" (agree to it and
    stamp what we send, but send no feedback: the server stamps and its estimator idles)
    or "feedback" (as Chrome: feedback on what we receive, every 100 ms).
    """

    def __init__(self, name: str, window: Window, media: EncodedMedia | None,
                 sources: dict[str, OutStream] | None = None, *, mode: str = "forwarded",
                 publish: tuple[str, ...] = ("audio", "video"), receive_video: bool = True,
                 receiver: Receiver | None = None, simulcast: bool = False,
                 transport_cc: str = "off") -> None:
        self.name = name
        self.mode = mode  # "mixed": one mixed sound and one composed picture (docs/protocol.md)
        self.receive_video = receive_video  # False: every video slot it could receive is declined
        self.simulcast = simulcast
        if transport_cc not in TRANSPORT_CC_MODES:
            raise ValueError(f"transport_cc must be one of {TRANSPORT_CC_MODES}")
        self.transport_cc = transport_cc
        self.pc = new_peer_connection()
        self.transport = TransportSequence()
        layers = media.layers if media is not None and simulcast and "video" in publish else ()
        self.layer_streams = [OutStream("video", media, layer, self.transport)
                              for layer in layers] if media is not None else []
        self.streams: dict[str, OutStream] = {
            kind: self.layer_streams[-1] if kind == "video" and self.layer_streams
            else OutStream(kind, media, transport=self.transport)
            for kind in publish} if media else {}
        self.layers_sent: list[str] = []  # the RIDs our answer said we send
        self.layers_asked: list[str] | None = None  # the last "layers" message's RIDs
        self.layers_messages = 0
        self.transport_feedback_sent = 0
        self._transport_feedback_task: asyncio.Task[None] | None = None
        self.receiver = receiver or Receiver(window, sources)
        self.participant_id = ""
        self.offers = 0
        self.largest_offer_bytes = 0  # the whole offer message, as the server sent it
        self.joins = 0
        self.last_offer_at = 0.0
        self.unknown_messages = 0
        self.failure: str | None = None
        self._taken: set[int] = set()
        self._tapped: set[int] = set()
        self._feedback: dict[int, Callable[[bytes], None]] = {}
        self._feedback_ssrc = random.getrandbits(32)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._feedback_task: asyncio.Task[None] | None = None
        self.joined = asyncio.get_running_loop().create_future()
        self.rejoin_when_disconnected = False
        self._link: tuple[str, str] | None = None
        self._rejoining: asyncio.Task[None] | None = None
        self.fronts: list[str] = []  # signaling URLs of the live fronts (from "joined")
        self.redirects = 0

    def sending_streams(self) -> list[OutStream]:
        """Every stream this participant sends: its microphone and each camera layer."""
        return [stream for kind, stream in self.streams.items()
                if kind != "video" or not self.layer_streams] + self.layer_streams

    async def _rejoin(self) -> None:
        assert self._link is not None
        for task in (self._feedback_task, self._transport_feedback_task):
            if task is not None:
                task.cancel()
        self._transport_feedback_task = None
        # A new connection numbers its packets afresh.
        self.receiver.transport_arrivals = Arrivals(0)
        old_pc, old_session = self.pc, self._session
        self.pc = new_peer_connection()
        self._taken.clear()
        self._tapped.clear()
        self._feedback.clear()
        for stream in self.sending_streams():
            stream.write = None  # configured again on the new connection
        self.joined = asyncio.get_running_loop().create_future()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old_pc.close(), 5)
        if old_session is not None:
            await old_session.close()
        for _attempt in range(100):  # the worker may still be starting
            try:
                await self.join(*self._link)
                return
            except (RuntimeError, aiohttp.ClientError, OSError):
                # The front may be gone with its node: the next live one, as the page does.
                ws_url, token = self._link
                if len(self.fronts) > 1:
                    at = self.fronts.index(ws_url) if ws_url in self.fronts else -1
                    self._link = (self.fronts[(at + 1) % len(self.fronts)], token)
                if self._reader is not None:
                    self._reader.cancel()
                if self._session is not None:
                    await self._session.close()
                self.failure = None
                self.joined = asyncio.get_running_loop().create_future()
                await asyncio.sleep(0.2)

    async def join(self, ws_url: str, token: str) -> None:
        for _redirect in range(4):  # a front may send us to the node hosting the room
            self._link = (ws_url, token)
            self._session = aiohttp.ClientSession()
            self._ws = await self._session.ws_connect(ws_url, heartbeat=None)
            join: dict[str, Any] = {"type": "join", "v": 1, "token": token, "name": self.name}
            if self.mode != "forwarded":
                join["mode"] = self.mode
            await self._ws.send_str(json.dumps(join))
            self._reader = asyncio.ensure_future(self._read())
            self._feedback_task = asyncio.ensure_future(self._send_feedback())
            if await self.joined != "redirect":
                self.joins += 1
                return
            self._feedback_task.cancel()
            await self._session.close()
            self.joined = asyncio.get_running_loop().create_future()
            ws_url = self._link[0]
        raise RuntimeError(f"{self.name}: redirected too often")

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                body = json.loads(message.data)
                kind = body.get("type")
                if kind == "joined":
                    self.participant_id = body.get("participant", "")
                    self.fronts = [f.replace("http", "ws", 1).rstrip("/") + "/ws"
                                   for f in body.get("fronts", [])]
                elif kind == "redirect" and self._link is not None and not self.joined.done():
                    # The room lives on another node: join() goes there, same token.
                    self.redirects += 1
                    self._link = (body["front"].replace("http", "ws", 1).rstrip("/") + "/ws",
                                  self._link[1])
                    self.joined.set_result("redirect")
                    return
                elif kind == "offer":
                    self.largest_offer_bytes = max(self.largest_offer_bytes, len(message.data))
                    await self._answer(body)
                    if not self.joined.done():
                        self.joined.set_result(None)
                elif kind == "error":
                    self._fail(f"{body.get('code')}: {body.get('message')}")
                elif kind == "layers":
                    # Which camera layers the server wants now (the others nobody takes:
                    # the middle one, when every subscriber is on the top). Chrome would
                    # pause the others; the bench goes on sending all three, so that the
                    # server receives three layers, as in a room whose tiles differ.
                    self.layers_messages += 1
                    self.layers_asked = list(body.get("active") or [])
                elif kind == "disconnected" and self.rejoin_when_disconnected:
                    # As the call page does: join again with the same link, new connection.
                    self._rejoining = asyncio.ensure_future(self._rejoin())
                    return
                else:
                    self.unknown_messages += 1  # new server-to-client types: ignored
            if self.rejoin_when_disconnected and self.joined.done():
                self._rejoining = asyncio.ensure_future(self._rejoin())  # its front went away
                return
            self._fail("the server closed the signaling connection")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(f"signaling failed: {exc!r}")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"{self.name}: {reason}"))

    async def _answer(self, offer: dict[str, Any]) -> None:
        assert self._ws is not None
        self.offers += 1
        self.last_offer_at = time.monotonic()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        publish: dict[str, str] = offer.get("publish") or {}
        slots = {"audio": publish.get("microphone"), "video": publish.get("camera")}
        sending = {slots[kind] for kind in self.streams}
        for transceiver in self.pc.getTransceivers():
            self._take_over(transceiver)
            if transceiver.mid in publish.values():
                transceiver.direction = "sendonly" if transceiver.mid in sending else "inactive"
            elif transceiver.kind == "video" and not self.receive_video:
                transceiver.direction = "inactive"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        sdp = self.pc.localDescription.sdp
        # What aiortc cannot say: only the text the server reads changes (we send the
        # RTP ourselves).
        camera = slots["video"]
        if self.simulcast and self.layer_streams and camera is not None and camera in sending:
            sdp, self.layers_sent = _sdp.answer_simulcast(sdp, offer["sdp"], camera)
        if self.transport_cc != "off":
            sdp, transport_cc_id = _sdp.answer_transport_cc(sdp, offer["sdp"])
            self.transport.extension_id = self.receiver.transport_cc_id = transport_cc_id
            self.receiver.transport_feedback = self.transport_cc == "feedback"
            if transport_cc_id and self.transport_cc == "feedback" and self._transport_feedback_task is None:
                self._transport_feedback_task = asyncio.ensure_future(self._send_transport_feedback())
        await self._ws.send_str(json.dumps({"type": "answer", "sdp": sdp,
                                            "revision": offer.get("revision")}))

    def _take_over(self, transceiver: RTCRtpTransceiver) -> None:
        if id(transceiver) not in self._taken:
            self._taken.add(id(transceiver))
            adapter.take_over_transceiver(transceiver, on_receive=self._on_receive,
                                          on_send=self._on_send)
        dtls = transceiver.receiver.transport
        if dtls is not None and id(dtls) not in self._tapped:
            self._tapped.add(id(dtls))
            adapter.tap_transport(dtls, self.receiver.on_rtp, self.receiver.on_rtcp,
                                  self.receiver.on_error)
            self.receiver.arrival = adapter.arrival_clock(dtls)

    def _on_receive(self, negotiated: adapter.NegotiatedRtp, dtls: Any) -> None:
        self.receiver.negotiated(negotiated)
        if id(dtls) not in self._feedback:
            self._feedback[id(dtls)] = adapter.packet_writer(dtls)

    def _on_send(self, negotiated: adapter.NegotiatedRtp, ssrc: int, rtx_ssrc: int,
                 dtls: Any) -> None:
        if negotiated.kind == "video" and self.layer_streams:
            configure_layers(self.layer_streams, negotiated, ssrc, rtx_ssrc, dtls)
            return
        stream = self.streams.get(negotiated.kind)
        if stream is not None and not stream.ready:
            stream.configure(negotiated, ssrc, dtls)

    def _write_feedback(self, packet: bytes) -> None:
        for write in self._feedback.values():
            with contextlib.suppress(ConnectionError, OSError):
                write(packet)

    async def _send_feedback(self) -> None:
        """An empty receiver report and a generous REMB each second, as a browser sends
        (with transport-cc, as Chrome does, no REMB: the server estimates for itself)."""
        while True:
            await asyncio.sleep(FEEDBACK_INTERVAL_S)
            ssrcs = sorted(self.receiver.video_ssrcs)
            if not ssrcs:
                continue
            packet = rtp.rtcp_receiver_report(self._feedback_ssrc, [])
            if not self.receiver.transport_cc_id:
                packet += rtp.rtcp_remb(self._feedback_ssrc, REMB_BPS, ssrcs[:16])
            self._write_feedback(packet)

    async def _send_transport_feedback(self) -> None:
        """transport-cc feedback on what arrived since the last (the server's estimator
        for this connection runs on it)."""
        receiver = self.receiver
        while True:
            await asyncio.sleep(TRANSPORT_FEEDBACK_INTERVAL_S)
            if not receiver.transport_arrivals.pending or not self._feedback:
                continue
            media_ssrc = min(receiver.video_ssrcs, default=0)
            for packet in receiver.transport_arrivals.feedback(self._feedback_ssrc, media_ssrc):
                self._write_feedback(packet)
                self.transport_feedback_sent += 1

    async def close(self) -> None:
        for task in (self._reader, self._feedback_task, self._rejoining, self._transport_feedback_task):
            if task is not None:
                task.cancel()
        try:
            if self._ws is not None:
                await asyncio.wait_for(self._ws.close(), 2)
        except (TimeoutError, OSError, aiohttp.ClientError):
            pass
        if self._session is not None:
            await self._session.close()
        await asyncio.wait_for(self.pc.close(), 5)


# A plain aiortc peer for the naive server (it takes offers) ----------------------------


class OfferingPeer:
    """Offers to the naive server over HTTP: a publisher (sendonly) or a subscriber (recvonly)."""

    def __init__(self, role: str, window: Window, media: EncodedMedia | None) -> None:
        self.role = role
        self.pc = new_peer_connection()
        self.streams: dict[str, OutStream] = (
            {"audio": OutStream("audio", media), "video": OutStream("video", media)} if media else {})
        self.receiver = Receiver(window, None)

    async def connect(self, offer_url: str, post: Poster) -> None:
        direction = "sendonly" if self.role == "publish" else "recvonly"
        for kind in ("audio", "video"):
            transceiver = self.pc.addTransceiver(kind, direction=direction)
            prefer_codecs(transceiver)
            adapter.take_over_transceiver(transceiver, on_receive=self._on_receive,
                                          on_send=self._on_send)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        dtls = self.pc.getTransceivers()[0].receiver.transport
        adapter.tap_transport(dtls, self.receiver.on_rtp, self.receiver.on_rtcp, self.receiver.on_error)
        self.receiver.arrival = adapter.arrival_clock(dtls)
        answer = await post(offer_url, {"role": self.role, "sdp": self.pc.localDescription.sdp})
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    def _on_receive(self, negotiated: adapter.NegotiatedRtp, dtls: Any) -> None:
        self.receiver.negotiated(negotiated)

    def _on_send(self, negotiated: adapter.NegotiatedRtp, ssrc: int, rtx_ssrc: int,
                 dtls: Any) -> None:
        stream = self.streams.get(negotiated.kind)
        if stream is not None and not stream.ready:
            stream.configure(negotiated, ssrc, dtls)

    async def close(self) -> None:
        await asyncio.wait_for(self.pc.close(), 5)
