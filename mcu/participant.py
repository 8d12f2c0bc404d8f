"""One participant's connection: negotiation, its packet path, and its RTCP.

Each participant has one peer connection. The server makes every offer: the first has
the participant's publish slots (audio, camera, screen; received by us) and its fixed
receive slots (send-only legs: a few voices, last-N cameras, one screen; mcu/slots.py).
The room re-points the receive slots as people speak, join and leave, and tells the
client with a ``slots`` message: only the participant's own changes (a mode switch)
need another offer. One offer is outstanding at a time per participant.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc import RTCSessionDescription

from mcu import aiortc_adapter as adapter
from mcu import codecs, rtp, simulcast, twcc
from mcu._fanout import (
    RECEIVED_SWITCHED,
    RECEIVED_TAPPED,
    RECEIVED_UNKNOWN,
    RECEIVED_WANTS_KEYFRAME,
    Arrivals,
    Inbound,
    SendSideEstimator,
    Sink,
    Track,
    packet_time,
    parse_feedback,
    receive,
    split_rtcp,
)
from mcu.congestion import PROBE_DURATION_S, PacketResult, PaddingProbe
from mcu.forwarding import Consumer, Producer, smoothed_round_trip
from mcu.udp import CReadTransport

if TYPE_CHECKING:
    from mcu.room import Room

logger = logging.getLogger(__name__)

PUBLISH_SLOTS = (("audio", "microphone"), ("video", "camera"), ("video", "screen"))
RTCP_INTERVAL_S = 1.0
DEFAULT_REMB_BPS = 1_500_000
# A simulcast camera is not held down to its weakest subscriber (each gets a layer that
# fits): its publisher may send all layers at their full rates.
SIMULCAST_REMB_BPS = 2_500_000
PADDING_STEP_S = 0.02  # how often a padding probe sends its next few copies


class NegotiationError(Exception):
    """The participant's answer could not be applied; ``code`` is the protocol's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Offer:
    sdp: str
    revision: int
    publish: dict[str, str]  # source -> mid of the participant's publish slot
    tracks: dict[str, dict[str, str]]  # mid -> who and what we forward on it


_ids = itertools.count(1)
_slots = itertools.count()


class Participant:
    unit = False  # a browser or aiortc client, not a room unit on SIP (mcu/unit.py)

    def __init__(self, room: Room, name: str, role: str, mode: str = "forwarded",
                 participant_id: str | None = None, room_codec: str = codecs.VP8,
                 video_codecs: list[str] | None = None) -> None:
        # The front names participants (unique across its workers); alone, we do.
        self.id = participant_id or f"p{next(_ids)}"
        self.room = room
        self.name = name
        self.role = role
        self.mode = mode  # "forwarded": slots of voices and cameras; "mixed": one mix and one composite
        # The room's forwarding codec and what this client can do (its join said so):
        # each video m-line offers one codec (codecs.participant_codec). What it
        # publishes is in the room's codec if it can; what it receives too, except the
        # VP8 composite of mixed mode (a mode switch renegotiates its receive slots).
        self.room_codec = room_codec
        self.video_codecs = codecs.supported_codecs(video_codecs)
        self.publish_codec = codecs.participant_codec(room_codec, self.video_codecs)
        self.video_codec = codecs.participant_codec(room_codec, self.video_codecs, mode)
        self.joined_at = time.time()
        self.counters = room.worker.counters
        self.pc = adapter.new_peer_connection(room.worker.config.ice_servers)
        self.producers: dict[str, Producer] = {}  # source -> producer
        self.consumers: dict[str, Consumer] = {}  # consumer id -> receive slot
        self.slots: dict[str, list[Consumer]] = {}  # "voice" / "camera" / "screen" -> slots in order
        self._shows: dict[str, dict[str, str] | None] = {}  # consumer id -> what its slot shows
        self._producer_by_ssrc: dict[int, Producer] = {}
        self._tracks: dict[int, Track] = {}  # the same, for the C packet path
        self._packet_counters = self.counters.packet_path
        self._producer_by_mid: dict[str, Producer] = {}
        self._rtx_to_media: dict[int, int] = {}
        self._consumer_by_ssrc: dict[int, Consumer] = {}
        self._leg_by_mid: dict[str, Consumer] = {}
        self._publish_mids: dict[str, str] = {}
        self._pending_publish: list[tuple[str, Any]] = []  # until mids are assigned
        self._pending_legs: list[tuple[Consumer, Any]] = []
        self._leg_transceivers: list[Any] = []  # every receive slot's, in order
        self.remb_estimates: dict[int, int] = {}  # REMB group -> bits per second
        # transport-cc (mcu/twcc.py), when the client's answer agreed to it: its extension
        # ID (0: not negotiated, REMB it is). One connection, so one of each: what it
        # sent us and when (our feedback is made of it), and our estimate of its downlink.
        self.transport_cc_id = 0
        self._arrivals = Arrivals(0)
        self.estimator = SendSideEstimator()
        self.rtt_s: float | None = None  # measured from its receiver reports; None: not yet
        # The SSRCs of the video legs its estimate covers, as of the last negotiation of a
        # leg (file_estimate() files it under them once a control step).
        self._video_leg_ssrcs: list[int] | None = None
        # Each transport's received media once keyed: decrypted, forwarded and its
        # feedback estimated in C (mcu/_fanout.c, Inbound), by the transport's id.
        self._inbounds: dict[int, Inbound] = {}
        self.transport_feedback_sent = 0
        self.probe: PaddingProbe | None = None  # the last padding probe of its downlink
        self.probing: tuple[str, int] | None = None  # the step up (slot, layer) it is for
        self.last_probe_at = 0.0
        self._padding: asyncio.Task[None] | None = None
        self.over_estimate_since: dict[int, float] = {}  # REMB group -> since when (lastn.py)
        self.last_video_change = time.monotonic()  # when a video leg was last paused/resumed
        self._tapped: set[int] = set()
        self._writers: dict[int, Callable[[bytes], None]] = {}
        self._sinks: dict[int, tuple[Sink, Any]] = {}  # id(DTLS transport) -> (sink, transport)
        self._revision = 0
        self._awaiting_answer: int | None = None
        self._dirty = False
        self._offering = False  # renegotiate() is making or sending an offer
        self._offered = False  # an offer went out: slot changes are told with "slots" messages
        self._restart_offer: Offer | None = None  # the ICE restart offer awaiting its answer
        self._restart_checks: asyncio.Future[None] | None = None  # its answer's checks
        self.ice_restarts = 0  # restarts that found a new path
        # Simulcast (mcu/simulcast.py): whether our offers ask for camera layers; the
        # height of each receive slot's tile on the page (mid -> pixels, told by the
        # page); the layers we last told the page to send.
        self.simulcast = (room.worker.config.simulcast and not room.echo
                          and self.publish_codec in simulcast.CODECS)
        self.tile_heights: dict[str, float] = {}  # consumer id -> pixels
        self.last_layer_change = time.monotonic()  # a slot stepped to another layer
        self.last_layer_up = 0.0
        self.layers_over_since: float | None = None  # what the videos carry is above the estimate
        self.layer_probe_s = simulcast.PROBE_S  # doubled after a failed probe (mcu/room.py)
        self.sent_layers: list[str] | None = None
        self.layers_told_at = 0.0
        self._messages: set[asyncio.Future[None]] = set()
        self._lock = asyncio.Lock()
        self.rtcp_started = False  # once the first answer is in (the worker's tick sends)
        self.slot = next(_slots)  # which of the worker's ticks sends our RTCP
        self.closed = False
        # Set by signaling: send a fresh offer to this participant's client, and any
        # other message of the participant protocol (a dict with a "type") to it.
        self.send_offer: Callable[[Offer], Awaitable[None]] | None = None
        self.send_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.on_closed: Callable[[Participant], None] | None = None
        # Called once a publish slot's codec is settled: aiortc does that when DTLS has
        # connected, some time after the answer (the worker then pipes the track on).
        self.on_publishing: Callable[[Producer], None] | None = None
        # Called once, when the media connection first comes up (ICE and DTLS).
        self.on_connected: Callable[[], None] | None = None

        @self.pc.on("connectionstatechange")
        async def _state_changed() -> None:
            if self.pc.connectionState == "connected" and self.on_connected is not None:
                connected, self.on_connected = self.on_connected, None
                connected()
            if self.pc.connectionState in ("failed", "closed") and not self.closed:
                logger.info("participant %s connection %s", self.id, self.pc.connectionState)
                await self.room.leave(self, reason="connection_" + self.pc.connectionState)

    # Negotiation ----------------------------------------------------------------------

    async def create_offer(self) -> Offer:
        async with self._lock:
            if self.closed:
                raise NegotiationError("closed", "the participant has left")
            # Changes from here on need the next offer: this one may be built before them.
            self._dirty = False
            self._ensure_transceivers()
            self.room.assign_slots([self])
            offer = await self.pc.createOffer()
            await self.pc.setLocalDescription(offer)
            self._tap_new_transports()
            self._revision += 1
            self._awaiting_answer = self._revision
            # aiortc's offer has neither transport-cc nor simulcast: the client's gets them.
            sdp = twcc.offer_transport_cc(self.pc.localDescription.sdp)
            if self.simulcast:
                sdp = simulcast.offer_layers(sdp, self._publish_mids["camera"])
            return Offer(sdp=sdp, revision=self._revision,
                         publish=dict(self._publish_mids), tracks=self._track_map())

    async def accept_answer(self, sdp: str, revision: int | None = None) -> None:
        async with self._lock:
            if self._awaiting_answer is None:
                raise NegotiationError("unexpected_answer", "no offer is waiting for an answer")
            if revision is not None and revision != self._awaiting_answer:
                raise NegotiationError("stale_answer",
                                       f"answer is for offer {revision}, expected {self._awaiting_answer}")
            try:
                adapter.check_answer(sdp)
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:  # aiortc raises ValueError/InvalidStateError/...
                raise NegotiationError("bad_sdp", f"the answer SDP was rejected: {exc}") from None
            self._awaiting_answer = None
            self.rtcp_started = True
            self._set_transport_cc(twcc.answer_transport_cc(sdp))
            if self.simulcast:
                rids = simulcast.answered_layers(sdp, self._publish_mids["camera"])
                camera = self.producers["camera"]
                before = [layer.rid for layer in camera.layers]
                camera.set_layers(rids if len(rids) > 1 else [])
                if [layer.rid for layer in camera.layers] != before and camera.payload_type is not None \
                        and self.on_publishing is not None:
                    # Negotiated before its layers were known (or they changed): what is
                    # piped to other workers follows (one pipe leg per layer, mcu/pipe.py).
                    self.on_publishing(camera)
            restart, self._restart_offer = self._restart_offer, None
        if restart is not None:
            # Checks take up to ICE_RESTART_TIMEOUT_S: the answer is taken meanwhile.
            self._restart_checks = asyncio.ensure_future(self._finish_ice_restart(sdp))
        if self._dirty:
            await self.renegotiate()

    async def renegotiate(self) -> None:
        """Send a new offer, now or as soon as the outstanding one is answered."""
        if self.closed:
            return
        if self._awaiting_answer is not None or self._offering or self.send_offer is None:
            self._dirty = True
            return
        # Checked and set with no await between: a second call (another join, say) waits
        # for the answer instead of sending a second offer the client would handle at the
        # same time as the first.
        self._offering = True
        try:
            offer = await self.create_offer()
            # What the slots show now, not when the offer was made: from here on every
            # change is told by a "slots" message, so the client is never left behind.
            offer.tracks = self._track_map()
            self._offered = True
            await self.send_offer(offer)
        finally:
            self._offering = False

    async def restart_ice(self) -> None:
        """The client lost its path (a network gone for a few seconds, or another network):
        send an offer with new ICE credentials on the same connection. The answer's
        candidates are checked when it comes (``accept_answer``); DTLS, SRTP, the slots
        and the participant stay as they are.

        Asked again before the answer came (the client's socket may have been replaced
        meanwhile), the same offer goes out again.
        """
        if self.closed or self.send_offer is None:
            raise NegotiationError("closed", "the participant has left")
        while self._offering:  # an ordinary offer is on its way out: this one follows it
            await asyncio.sleep(0.02)
        restart = self._restart_offer
        if restart is not None and self._awaiting_answer == restart.revision:
            restart.tracks = self._track_map()  # the slots may show others by now
            await self.send_offer(restart)
            return
        self._offering = True
        try:
            checks, self._restart_checks = self._restart_checks, None
            if checks is not None and not checks.done():  # the last restart found no path yet
                checks.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checks
            try:
                adapter.begin_ice_restart(self.pc)
            except ConnectionError as exc:
                raise NegotiationError("ice_restart_failed", f"cannot restart ICE: {exc}") from None
            # An offer still unanswered is superseded: the client may never have seen it.
            self._awaiting_answer = None
            offer = await self.create_offer()
            offer.tracks = self._track_map()
            self._offered = True
            self._restart_offer = offer
            await self.send_offer(offer)
        finally:
            self._offering = False

    async def _finish_ice_restart(self, answer_sdp: str) -> None:
        if not await adapter.finish_ice_restart(self.pc, answer_sdp):
            logger.info("participant %s: ICE restart found no working path", self.id)
            return
        self.ice_restarts += 1
        logger.info("participant %s: ICE restarted", self.id)
        self._refresh_sinks()  # the nominated pair changed: send on it from now on
        # Decoders on both sides saw a gap as long as the outage: fresh pictures.
        for producer in self.producers.values():
            producer.request_keyframe()
        for consumer in self.consumers.values():
            consumer.request_keyframe()

    def _ensure_transceivers(self) -> None:
        # Publish slots come first, once.
        if not self.producers:
            for kind, source in PUBLISH_SLOTS:
                producer = Producer(f"{self.id}-{source}", self.id, kind, source, self.counters,
                                    codec=self.publish_codec)
                transceiver = self.pc.addTransceiver(kind, direction="recvonly")
                _prefer_codecs(transceiver, kind, self.publish_codec)
                adapter.take_over_transceiver(
                    transceiver, on_send=None,
                    on_receive=lambda negotiated, dtls, p=producer: self._producer_negotiated(
                        p, negotiated, dtls))
                self.producers[source] = producer
                self._pending_publish.append((source, transceiver))
        # Receive slots: created once for the mode's layout (a mode switch may add some),
        # never one per producer, so the session does not grow with the room.
        for purpose, count in self.room.slot_layout(self).items():
            kind = "audio" if purpose == "voice" else "video"
            slots = self.slots.setdefault(purpose, [])
            while len(slots) < count:
                consumer = Consumer(f"{self.id}:{purpose}{len(slots)}", kind, self.id, self.counters,
                                    codec=self.video_codec)
                transceiver = self.pc.addTransceiver(kind, direction="sendonly")
                _prefer_codecs(transceiver, kind, self.video_codec)
                self._pending_legs.append((consumer, transceiver))
                self._leg_transceivers.append(transceiver)
                adapter.take_over_transceiver(
                    transceiver, on_receive=None,
                    on_send=lambda negotiated, ssrc, rtx_ssrc, dtls, c=consumer: self._consumer_negotiated(
                        c, negotiated, ssrc, rtx_ssrc, dtls))
                self.consumers[consumer.id] = consumer
                self._shows[consumer.id] = None
                self._consumer_by_ssrc[adapter.sender_ssrc(transceiver)] = consumer
                slots.append(consumer)

    def set_video_codec(self, codec: str) -> bool:
        """Offer ``codec`` on the video receive slots from the next offer on (a mode
        switch to or from the VP8 composite). True if it changed: the caller renegotiates.

        The publish slots keep theirs (the others go on seeing this camera). The
        consumers take the new codec once the answer settles it
        (:meth:`_consumer_negotiated`): until then the client still expects the old one.
        """
        if codec == self.video_codec:
            return False
        self.video_codec = codec
        for transceiver in self._leg_transceivers:
            if transceiver.kind == "video":
                _prefer_codecs(transceiver, "video", codec)
        return True

    def _tap_new_transports(self) -> None:
        # mids are assigned by setLocalDescription; record them now.
        for source, transceiver in self._pending_publish:
            self._publish_mids[source] = transceiver.mid
            self._producer_by_mid[transceiver.mid] = self.producers[source]
        self._pending_publish = []
        for consumer, transceiver in self._pending_legs:
            self._leg_by_mid[transceiver.mid] = consumer
        self._pending_legs = []
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if id(dtls) not in self._tapped:
                self._tapped.add(id(dtls))
                inbound = Inbound(self._tracks, self._packet_counters, self._arrivals,
                                  self._after_receive, self._on_rtcp, self._on_malformed_feedback)
                self._inbounds[id(dtls)] = inbound
                adapter.tap_transport(dtls, self._on_rtp, self._on_rtcp, self._on_handler_error,
                                      self._on_datagram_dropped, inbound)
        self._arm_feedback()

    def _arm_feedback(self) -> None:
        """Let each transport's Inbound take its transport-cc feedback in C, matched with
        what its sink sent, when transport-cc was agreed and no padding probe is out (a
        probe judges each feedback's packets here, in Python: _on_transport_feedback)."""
        probing = self.probe is not None and self.probe.open
        for key, inbound in self._inbounds.items():
            entry = self._sinks.get(key)
            if self.transport_cc_id and not probing and not self.closed and entry is not None:
                inbound.arm(self.estimator, entry[0])
            else:
                inbound.arm(None, None)

    @property
    def transport_feedback_received(self) -> int:
        """Well-formed transport-cc feedback packets from the client (read in C, by its
        connection's Inbound or by _on_transport_feedback)."""
        return self.estimator.feedbacks

    def _set_transport_cc(self, extension_id: int) -> None:
        # aiortc dropped the lines from the answer it applied (they are not in its
        # tables): what the client agreed to is read from the text.
        self.transport_cc_id = extension_id
        self._arrivals.extension_id = extension_id
        for sink, _ in self._sinks.values():
            sink.transport_cc_id = extension_id
        self._arm_feedback()

    def _writer(self, dtls: Any) -> Callable[[bytes], None]:
        writer = self._writers.get(id(dtls))
        if writer is None:
            writer = self._writers[id(dtls)] = adapter.packet_writer(dtls, self._sink(dtls))
        return writer

    def _sink(self, dtls: Any) -> Sink:
        entry = self._sinks.get(id(dtls))
        if entry is None:
            sink = Sink()
            sink.transport_cc_id = self.transport_cc_id
            entry = self._sinks[id(dtls)] = (sink, dtls)
            adapter.on_dtls_state(dtls, lambda: adapter.bind_sink(sink, dtls))
            adapter.bind_sink(sink, dtls)
            self._arm_feedback()
        return entry[0]

    def _refresh_sinks(self) -> None:
        for sink, dtls in self._sinks.values():
            adapter.bind_sink(sink, dtls)

    def _producer_negotiated(self, producer: Producer, negotiated: adapter.NegotiatedRtp,
                             dtls: Any) -> None:
        producer.payload_type = negotiated.payload_type
        producer.rtx_payload_type = negotiated.rtx_payload_type
        producer.clock_rate = negotiated.clock_rate
        codec = codecs.codec_of_mime(negotiated.codec)
        if producer.kind == "video" and codec is not None and codec != producer.codec:
            producer.codec = codec
            for consumer in list(producer.consumers):  # legs of the old codec let go
                if not consumer.accepts(producer):
                    consumer.switch_to(None)
        producer.feedback = self._writer(dtls)
        for layer in producer.layers:
            layer.payload_type, layer.rtx_payload_type = producer.payload_type, producer.rtx_payload_type
            layer.clock_rate, layer.feedback = producer.clock_rate, producer.feedback
            if layer.kind == "video" and codec is not None:
                layer.codec = codec
        for ssrc in negotiated.ssrcs if not producer.layers else ():  # layers: by their RID
            producer.ssrc = ssrc
            self._producer_by_ssrc[ssrc] = producer
            self._tracks[ssrc] = producer.track
        self._rtx_to_media.update(negotiated.rtx_ssrcs)
        if self.on_publishing is not None:
            self.on_publishing(producer)

    def _consumer_negotiated(self, consumer: Consumer, negotiated: adapter.NegotiatedRtp,
                             ssrc: int, rtx_ssrc: int, dtls: Any) -> None:
        codec = codecs.codec_of_mime(negotiated.codec)
        if consumer.kind == "video" and codec is not None:
            consumer.codec = codec  # lets go of a producer of the codec it had before
        consumer.configure(ssrc, rtx_ssrc, negotiated.payload_type,
                           negotiated.rtx_payload_type, self._writer(dtls), self._sink(dtls))
        self._video_leg_ssrcs = None
        consumer.request_keyframe()

    def point_slots(self, plan: Mapping[str, list[Producer | None]], names: Mapping[str, str]) -> bool:
        """Show these producers in the slots (per purpose, in slot order); tell the client
        if anything changed. ``names``: owner id -> display name. True if it changed."""
        changed = False
        for purpose, producers in plan.items():
            for consumer, producer in zip(self.slots.get(purpose, ()), producers, strict=False):
                if producer is not None and not consumer.accepts(producer):
                    # The room ranks per codec (mcu/room.py); a slot whose codec is being
                    # renegotiated may still differ for a moment: it shows nobody then.
                    producer = None
                if consumer.producer is producer and (producer is not None
                                                      or self._shows[consumer.id] is None):
                    continue
                consumer.switch_to(producer)
                self._shows[consumer.id] = None if producer is None else {
                    "participant": producer.owner_id, "name": names.get(producer.owner_id, ""),
                    "kind": consumer.kind, "source": producer.source}
                changed = True
        if changed and self._offered and self.send_message is not None and not self.closed:
            # Made now, sent in order: the client applies each map whole.
            self._send_soon({"type": "slots", "slots": self.slot_map()})
        return changed

    def slot_map(self) -> dict[str, dict[str, str] | None]:
        """Every receive slot's mid -> what it shows now (None: nobody)."""
        return {mid: self._shows[consumer.id] for mid, consumer in self._leg_by_mid.items()}

    def _track_map(self) -> dict[str, dict[str, str]]:
        return {mid: shows for mid, shows in self.slot_map().items() if shows is not None}

    def _send_soon(self, message: dict[str, Any]) -> None:
        assert self.send_message is not None
        task = asyncio.ensure_future(self.send_message(message))
        self._messages.add(task)
        task.add_done_callback(self._messages.discard)

    # Packet path ----------------------------------------------------------------------

    def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        # Checked, counted and forwarded in C; what comes back is for Python to do.
        status = receive(self._tracks, data, self._packet_counters, self._arrivals)
        if status:
            self._after_receive(status, data)

    def _after_receive(self, status: int, data: bytes) -> None:
        if status & RECEIVED_UNKNOWN:  # not counted yet
            try:
                producer = self._learn_ssrc(rtp.parse_rtp(data))
            except rtp.MalformedPacket:  # C found it well formed; parse_rtp should agree
                producer = None
            if producer is None:
                self.counters.packets_received += 1
                self.counters.packets_unroutable += 1
                return
            status = receive(self._tracks, data, self._packet_counters, self._arrivals)
        if status & (RECEIVED_WANTS_KEYFRAME | RECEIVED_TAPPED | RECEIVED_SWITCHED):
            producer = self._producer_by_ssrc[int.from_bytes(data[8:12], "big")]
            if status & RECEIVED_WANTS_KEYFRAME:
                producer.request_keyframe()
            if status & RECEIVED_SWITCHED and producer.group is not None:
                for consumer in producer.group.consumers:
                    if consumer.target_layer is not None:
                        consumer.switched()
            if status & RECEIVED_TAPPED:
                producer.run_taps(data)

    def _learn_ssrc(self, view: rtp.RtpView) -> Producer | None:
        # Browsers that leave SSRCs out of the SDP still send the mid extension, and the
        # layers of a simulcast camera their RID (an RTX stream its repaired RID).
        if view.ssrc in self._rtx_to_media:
            return None
        mid = view.extensions.get(rtp.EXT_MID)
        if mid is None:
            return None
        producer = self._producer_by_mid.get(mid.decode("ascii", "replace"))
        if producer is None:
            return None
        if producer.layers:
            if simulcast.EXT_REPAIRED_RID in view.extensions:
                self._rtx_to_media[view.ssrc] = 0  # not NACKed, so nothing to repair: dropped
                return None
            rid = view.extensions.get(simulcast.EXT_RID, b"").decode("ascii", "replace")
            producer = next((layer for layer in producer.layers if layer.rid == rid), None)
            if producer is None:
                return None
        if view.payload_type == producer.payload_type:
            if producer.ssrc is not None and producer.ssrc != view.ssrc:  # a new SSRC for it
                self._producer_by_ssrc.pop(producer.ssrc, None)
                self._tracks.pop(producer.ssrc, None)
            producer.ssrc = view.ssrc
            self._producer_by_ssrc[view.ssrc] = producer
            self._tracks[view.ssrc] = producer.track
            return producer
        return None

    def _on_rtcp(self, data: bytes) -> None:
        data, feedback = split_rtcp(data)
        for packet in feedback:
            self._on_transport_feedback(packet)
        if not data:
            return
        try:
            packets = adapter.parse_rtcp(data)
        except ValueError:
            self.counters.rtcp_malformed += 1
            return
        for packet in packets:
            if isinstance(packet, adapter.RtcpSr):
                producer = self._producer_by_ssrc.get(packet.ssrc)
                if producer is not None:
                    info = packet.sender_info
                    producer.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)
                self._on_reception_reports(packet.reports)
            elif isinstance(packet, adapter.RtcpRr):
                self._on_reception_reports(packet.reports)
            elif isinstance(packet, adapter.RtcpPsfb):
                if packet.fmt in (rtp.RTCP_PSFB_PLI, rtp.RTCP_PSFB_FIR):
                    consumer = self._consumer_by_ssrc.get(packet.media_ssrc)
                    if consumer is not None:
                        consumer.request_keyframe()
                elif packet.fmt == rtp.RTCP_PSFB_REMB:
                    if self.transport_cc_id:  # our own estimate from its feedback rules
                        continue
                    try:
                        bitrate, ssrcs = adapter.unpack_remb(packet.fci)
                    except ValueError:
                        self.counters.rtcp_malformed += 1
                        continue
                    self._on_remb(bitrate, ssrcs)
            elif isinstance(packet, adapter.RtcpRtpfb) and packet.fmt == rtp.RTCP_RTPFB_NACK:
                consumer = self._consumer_by_ssrc.get(packet.media_ssrc)
                if consumer is not None:
                    missing = consumer.retransmit(adapter.nack_lost(packet))
                    source = consumer.source  # the layer it sends, for a layered camera
                    if missing and source is not None:  # lost on a pipe: ask there
                        source.request_retransmission(missing)

    def _on_transport_feedback(self, packet: bytes) -> None:
        if not self.transport_cc_id:
            return
        for sink, _ in self._sinks.values():  # one connection: one sink (a loop: per feedback)
            if sink.transport_cc_id:
                break
        else:
            return
        try:  # read, matched and estimated in C, straight from the bytes
            estimate = self.estimator.on_packet(packet_time(), sink, packet)
        except ValueError:
            self.counters.rtcp_malformed += 1
            return
        if estimate is None:  # none of these numbers is ours (or still known)
            return
        if self.probe is not None and self.probe.open:  # the probe judges packet by packet
            _, _, base, _, _, arrivals = parse_feedback(packet)  # read well just above
            sent = sink.sent_range(base, len(arrivals))
            self.probe.on_feedback([PacketResult(what[0], what[1], None if arrived is None else arrived / 1e6)
                                    for what, arrived in zip(sent, arrivals, strict=True)
                                    if what is not None])
        if self.probe is None or not self.probe.open:  # judged (or failed while out):
            self._arm_feedback()  # the next feedback is the Inbound's again

    def _on_malformed_feedback(self) -> None:
        self.counters.rtcp_malformed += 1

    def file_estimate(self) -> None:
        """Put the transport-cc estimate where a REMB puts its, as one estimate for all
        our video legs (it is one for the whole connection): last-N and the layer choice
        read it there (mcu/lastn.py, mcu/room.py). The room's control step calls this
        before it decides, so the estimate is filed twice a second instead of at each of
        the ten feedbacks a second that update it: with a grid of legs, filing was most
        of what handling a feedback cost. Nothing to file when no feedback came since."""
        if not self.estimator.changed:
            return
        self.estimator.changed = 0
        ssrcs = self._video_leg_ssrcs
        if ssrcs is None:
            ssrcs = self._video_leg_ssrcs = [c.ssrc for c in self.consumers.values()
                                             if c.kind == "video" and c.write is not None]
        if ssrcs:
            self._on_remb(round(self.estimator.estimate_bps), ssrcs)

    def start_probe(self, target_bps: float, carried_bps: float) -> bool:
        """Pad what this subscriber receives from ``carried_bps`` up to ``target_bps``
        for a moment, to learn whether its link takes a higher layer
        (mcu/congestion.py; mcu/room.py judges ``probe``). False: it cannot be probed
        that way (no transport-cc feedback to judge by, no video leg with RTX to pad
        with) or a probe is still out."""
        now = time.monotonic()
        out = self.probe is not None and self.probe.verdict(now) is None
        if not self.transport_cc_id or self.closed or out:
            return False
        consumer = next((c for c in self.consumers.values() if c.can_pad), None)
        if consumer is None:
            return False
        self.probe = PaddingProbe(now, target_bps, self.estimator.base_delay_s)
        self._arm_feedback()  # its feedback to Python, where the probe judges it
        padding_bps = max(0.0, target_bps - carried_bps)
        self._padding = asyncio.ensure_future(self._pad(self.probe, consumer, padding_bps))
        return True

    async def _pad(self, probe: PaddingProbe, consumer: Consumer, bps: float) -> None:
        # Paced in small steps: a burst would show a queue where the link has none.
        budget, last = 0.0, probe.started_at
        while probe.open and not self.closed:
            await asyncio.sleep(PADDING_STEP_S)
            now = time.monotonic()
            if now - probe.started_at >= PROBE_DURATION_S:
                return
            if not consumer.can_pad:  # the leg stopped (paused, gone): nothing to judge by
                probe.failed = True
                return
            budget += bps * (now - last) / 8
            last = now
            if budget > 0:  # a copy may overshoot a step's share: the next steps make up
                budget -= consumer.pad(int(budget))

    def _on_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        # One estimate covers the streams it lists: they form a group (see mcu/lastn.py).
        group = hash(tuple(sorted(ssrcs)))
        self.remb_estimates[group] = bitrate
        regrouped = False
        for ssrc in ssrcs:
            consumer = self._consumer_by_ssrc.get(ssrc)
            if consumer is not None:
                consumer.remb_bps = bitrate
                if consumer.remb_group != group:
                    consumer.remb_group = group
                    regrouped = True
        # A group is left behind only when a leg moves to another: the usual estimate, for
        # the same legs (each transport-cc feedback), has nothing to clear up.
        if regrouped:
            live = {c.remb_group for c in self.consumers.values()}
            for stale in [g for g in self.remb_estimates if g not in live]:
                del self.remb_estimates[stale]

    def _on_reception_reports(self, reports: list[Any]) -> None:
        for report in reports:
            consumer = self._consumer_by_ssrc.get(report.ssrc)
            if consumer is not None:
                consumer.fraction_lost = report.fraction_lost
                rtt = consumer.round_trip(report.lsr, report.dlsr)
                if rtt is not None:  # every leg is on one bundled transport: one path
                    self.rtt_s = smoothed_round_trip(self.rtt_s, rtt)
                    self.estimator.rtt_s = self.rtt_s

    def _on_datagram_dropped(self) -> None:
        self.counters.datagrams_dropped_unkeyed += 1

    def queued_datagrams(self) -> int:
        """Datagrams waiting for aiortc's DTLS transport (bounded by the adapter)."""
        transports = {id(t.receiver.transport): t.receiver.transport
                      for t in self.pc.getTransceivers()}
        return sum(adapter.queued_datagrams(dtls) for dtls in transports.values())

    def _on_handler_error(self, exc: BaseException) -> None:
        self.counters.handler_errors += 1
        logger.error("participant %s: error in the packet path: %r", self.id, exc)

    def send_rtcp(self) -> None:
        """Sender reports for our legs; receiver reports and REMB for the publisher.

        Called every RTCP_INTERVAL_S by the worker's tick (mcu/room.py), not by a timer
        of our own: on this kind of VM every timer wake-up of the process costs more
        CPU than the reports it sends (docs/benchmarks.md).
        """
        if self.closed or not self.rtcp_started:
            return
        self._refresh_sinks()
        for consumer in list(self.consumers.values()):
            report = consumer.sender_report()
            if report is not None and consumer.write is not None:
                try:
                    consumer.write(report)
                except (ConnectionError, OSError):
                    self.counters.send_errors += 1
        for producer in self.producers.values():
            self._send_publisher_feedback(producer)

    def send_transport_feedback(self) -> None:
        """transport-cc feedback for what the client sent us since the last call, so its
        own send-side estimator can work. Called each worker tick (100 ms, mcu/room.py):
        feedback much rarer than that leaves a browser's estimate sluggish."""
        if not self.transport_cc_id or self.closed or not self._arrivals.pending:
            return
        producer = next((p for p in self.producers.values() if p.feedback is not None), None)
        if producer is None:  # no way to send yet: the arrivals wait (a browser's first
            return  # probes come before our writer exists, and matter most)
        media_ssrc = next((p.ssrc for p in self.producers.values() if p.ssrc is not None), 0)
        for packet in self._arrivals.feedback(producer.feedback_ssrc, media_ssrc):
            try:
                producer.feedback(packet)
                self.transport_feedback_sent += 1
            except (ConnectionError, OSError):
                self.counters.send_errors += 1

    def _send_publisher_feedback(self, producer: Producer) -> None:
        streams = [layer for layer in producer.layers if layer.ssrc is not None] or [producer]
        blocks = [block for block in (stream.receiver_report_block() for stream in streams)
                  if block is not None]
        if not blocks or producer.feedback is None:
            return
        packet = rtp.rtcp_receiver_report(producer.feedback_ssrc, blocks)
        if producer.kind == "video":
            if producer.layers:
                bitrate = SIMULCAST_REMB_BPS
            else:
                # Ask for what the weakest subscriber can take, within sane bounds.
                estimates = [c.remb_bps for c in producer.consumers if c.remb_bps and not c.paused]
                bitrate = min(estimates) if estimates else DEFAULT_REMB_BPS
                bitrate = max(150_000, min(bitrate, 2_500_000))
            packet += rtp.rtcp_remb(producer.feedback_ssrc, bitrate, [block[0] for block in blocks])
        try:
            producer.feedback(packet)
        except (ConnectionError, OSError):
            self.counters.send_errors += 1

    def tell_layers(self, active: list[str]) -> None:
        """Tell the page which camera layers to send (the others are paused there)."""
        if active == self.sent_layers or self.send_message is None or self.closed:
            return
        self.sent_layers = active
        self.layers_told_at = time.monotonic()
        self._send_soon({"type": "layers", "source": "camera", "active": active})

    def set_tiles(self, heights: Mapping[str, float]) -> None:
        """The page's tile heights in device pixels, by receive slot mid (0: hidden)."""
        self.tile_heights = {self._leg_by_mid[mid].id: max(0.0, float(height))
                             for mid, height in heights.items() if mid in self._leg_by_mid}

    def tick_readable_sockets(self) -> list[CReadTransport]:
        """The sockets its media arrives on that the room's mixer may read on its tick
        (mcu/udp.py): the connection's host candidates'."""
        return [] if self.closed else adapter.host_sockets(self.pc)

    # Lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._restart_checks is not None:
            self._restart_checks.cancel()
        if self._padding is not None:
            self._padding.cancel()
        for consumer in self.consumers.values():
            consumer.switch_to(None)
            consumer.disconnect()
        self._video_leg_ssrcs = None
        for producer in self.producers.values():
            producer.feedback = None
        for sink, _ in self._sinks.values():
            sink.unbind()
        self._arm_feedback()  # closed: disarmed
        await self.pc.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def quality(self) -> dict[str, Any]:
        """Connection quality as the server sees it: loss both ways, bitrates, estimate."""
        sent_loss = [c.fraction_lost / 256 for c in self.consumers.values() if c.packets]
        received = [p for p in self.producers.values() if p.packets]
        blocks = [p.receiver_report_block() for p in received]
        lost = sum(b[2] for b in blocks if b)
        expected = sum(b[3] - (p.base_seq or 0) + 1 for p, b in zip(received, blocks, strict=True) if b)
        estimates = [c.remb_bps for c in self.consumers.values() if c.remb_bps]
        estimator = "transport-cc" if self.transport_cc_id else "remb"
        if self.transport_cc_id and self.transport_feedback_received and not estimates:
            estimates = [self.estimator.estimate_bps]  # no video leg to file it under yet
        return {
            "loss_up_pct": round(100 * lost / expected, 1) if expected > 0 else 0.0,
            "loss_down_pct": round(100 * max(sent_loss), 1) if sent_loss else 0.0,
            "bitrate_up_kbps": round(sum(p.bitrate_bps for p in received) / 1000),
            "estimate_down_kbps": round(max(estimates) / 1000) if estimates else None,
            "estimator": estimator,
            "rtt_ms": round(self.rtt_s * 1000, 1) if self.rtt_s is not None else None,
            "videos_paused": sum(1 for c in self.consumers.values()
                                 if c.kind == "video" and c.producer is not None and c.paused),
        }

    def media_counts(self) -> dict[str, int]:
        """Packets this participant sent us and we sent it, by kind: what the server
        itself saw of a self-test call (its verdict does not rest on the page's word)."""
        counts = {"audio_in": 0, "video_in": 0, "audio_out": 0, "video_out": 0}
        for producer in self.producers.values():
            counts[f"{producer.kind}_in"] += producer.packets
        for consumer in self.consumers.values():
            counts[f"{consumer.kind}_out"] += consumer.leg.packets
        return counts

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "role": self.role, "mode": self.mode,
            "joined_at": self.joined_at, "video_codec": self.publish_codec,
            "connection": self.pc.connectionState,
            "producers": {s: {"packets": p.packets, "active": p.active} for s, p in self.producers.items()},
            "consumers": len(self.consumers),
        }


def _prefer_codecs(transceiver: Any, kind: str, video_codec: str = codecs.VP8) -> None:
    # Forwarding does not transcode: one codec per m-line, the same on the publisher's
    # and the subscriber's side. Opus for audio; for video ``video_codec`` with RTX (for
    # H.264 only constrained baseline in packetization mode 1: mcu/codecs.py).
    capabilities = adapter.RTCRtpSender.getCapabilities(kind)
    if kind == "audio":
        chosen = [c for c in capabilities.codecs if c.mimeType.lower() == "audio/opus"]
    else:
        chosen = [c for c in capabilities.codecs if _is_offered(c, video_codec)]
        chosen += [c for c in capabilities.codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(chosen)


def _is_offered(capability: Any, video_codec: str) -> bool:
    if capability.mimeType.lower() != codecs.MIME_TYPES[video_codec]:
        return False
    if video_codec != codecs.H264:
        return True
    parameters = capability.parameters
    return (str(parameters.get("profile-level-id", "")).lower() == codecs.H264_PROFILE_LEVEL_ID
            and str(parameters.get("packetization-mode", "")) == codecs.H264_PACKETIZATION_MODE)
