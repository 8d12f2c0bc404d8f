"""Rooms on a media worker and the participants in them.

Each participant has one peer connection. The server makes every offer: the first has
the participant's publish slots (audio, camera, screen; received by us) and one
send-only leg per producer it subscribes to; later offers add legs as others join or
start sharing a screen. One offer is outstanding at a time per participant.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCSessionDescription

from mcu import aiortc_adapter as adapter
from mcu import rtp
from mcu.forwarding import Consumer, Producer
from mcu.lastn import VideoLeg, choose_videos
from mcu.mixing import RoomMixer
from mcu.speaker import SpeakerDetector
from mcu.stats import WorkerCounters

logger = logging.getLogger(__name__)

PUBLISH_SLOTS = (("audio", "microphone"), ("video", "camera"), ("video", "screen"))
RTCP_INTERVAL_S = 1.0
CONTROL_INTERVAL_S = 0.5
DEFAULT_REMB_BPS = 1_500_000


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


@dataclass
class MediaConfig:
    ice_servers: list[Any] = field(default_factory=list)  # RTCIceServer
    last_n: int = 9  # most camera videos one subscriber receives
    probe_interval_s: float = 8.0  # quiet time before a paused video is tried again


_ids = itertools.count(1)


class Participant:
    def __init__(self, room: Room, name: str, role: str, mode: str = "forwarded") -> None:
        self.id = f"p{next(_ids)}"
        self.room = room
        self.name = name
        self.role = role
        self.mode = mode  # "forwarded": a leg per producer; "mixed": one mix and one composite
        self.joined_at = time.time()
        self.counters = room.worker.counters
        self.pc = adapter.new_peer_connection(room.worker.config.ice_servers)
        self.producers: dict[str, Producer] = {}  # source -> producer
        self.consumers: dict[str, Consumer] = {}  # producer id -> consumer
        self._producer_by_ssrc: dict[int, Producer] = {}
        self._producer_by_mid: dict[str, Producer] = {}
        self._rtx_to_media: dict[int, int] = {}
        self._consumer_by_ssrc: dict[int, Consumer] = {}
        self._leg_by_mid: dict[str, Consumer] = {}
        self._publish_mids: dict[str, str] = {}
        self._pending_publish: list[tuple[str, Any]] = []  # until mids are assigned
        self._pending_legs: list[tuple[Consumer, Any]] = []
        self.remb_estimates: dict[int, int] = {}  # REMB group -> bits per second
        self.last_video_change = time.monotonic()  # when a video leg was last paused/resumed
        self._tapped: set[int] = set()
        self._writers: dict[int, Callable[[bytes], None]] = {}
        self._revision = 0
        self._awaiting_answer: int | None = None
        self._dirty = False
        self._lock = asyncio.Lock()
        self._rtcp_task: asyncio.Task[None] | None = None
        self.closed = False
        # Set by signaling: send a fresh offer to this participant's client.
        self.send_offer: Callable[[Offer], Awaitable[None]] | None = None
        self.on_closed: Callable[[Participant], None] | None = None

        @self.pc.on("connectionstatechange")
        async def _state_changed() -> None:
            if self.pc.connectionState in ("failed", "closed") and not self.closed:
                logger.info("participant %s connection %s", self.id, self.pc.connectionState)
                await self.room.leave(self, reason="connection_" + self.pc.connectionState)

    # Negotiation ----------------------------------------------------------------------

    async def create_offer(self) -> Offer:
        async with self._lock:
            if self.closed:
                raise NegotiationError("closed", "the participant has left")
            self._ensure_transceivers()
            offer = await self.pc.createOffer()
            await self.pc.setLocalDescription(offer)
            self._tap_new_transports()
            self._revision += 1
            self._awaiting_answer = self._revision
            self._dirty = False
            return Offer(sdp=self.pc.localDescription.sdp, revision=self._revision,
                         publish=dict(self._publish_mids), tracks=self._track_map())

    async def accept_answer(self, sdp: str, revision: int | None = None) -> None:
        async with self._lock:
            if self._awaiting_answer is None:
                raise NegotiationError("unexpected_answer", "no offer is waiting for an answer")
            if revision is not None and revision != self._awaiting_answer:
                raise NegotiationError("stale_answer",
                                       f"answer is for offer {revision}, expected {self._awaiting_answer}")
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:  # aiortc raises ValueError/InvalidStateError/...
                raise NegotiationError("bad_sdp", f"the answer SDP was rejected: {exc}") from None
            self._awaiting_answer = None
            if self._rtcp_task is None:
                self._rtcp_task = asyncio.ensure_future(self._run_rtcp())
        if self._dirty:
            await self.renegotiate()

    async def renegotiate(self) -> None:
        """Send a new offer, now or as soon as the outstanding one is answered."""
        if self.closed:
            return
        if self._awaiting_answer is not None or self.send_offer is None:
            self._dirty = True
            return
        offer = await self.create_offer()
        await self.send_offer(offer)

    def _ensure_transceivers(self) -> None:
        # Publish slots come first, once.
        if not self.producers:
            for kind, source in PUBLISH_SLOTS:
                producer = Producer(f"{self.id}-{source}", self.id, kind, source, self.counters)
                transceiver = self.pc.addTransceiver(kind, direction="recvonly")
                _prefer_codecs(transceiver, kind)
                adapter.take_over_transceiver(
                    transceiver, on_send=None,
                    on_receive=lambda negotiated, dtls, p=producer: self._producer_negotiated(
                        p, negotiated, dtls))
                self.producers[source] = producer
                self._pending_publish.append((source, transceiver))
        # Legs of producers that are gone stop sending, and wait to be reused.
        free: dict[str, list[Any]] = {"audio": [], "video": []}
        for transceiver in self.pc.getTransceivers():
            leg = self._leg_by_mid.get(transceiver.mid or "")
            if leg is not None and leg.producer.id not in self.consumers:
                transceiver.direction = "inactive"
                free[transceiver.kind].append(transceiver)
        # One send-only leg per producer we should receive and do not yet: an idle
        # m-line of the same kind if there is one, so churn does not grow the session.
        for producer in self.room.producers_for(self):
            if producer.id in self.consumers:
                continue
            consumer = Consumer(f"{self.id}<{producer.id}", producer, self.id, self.counters)
            if free[producer.kind]:
                transceiver = free[producer.kind].pop(0)
                transceiver.direction = "sendonly"
                transceiver.sender.replaceTrack(None)  # a new track id: the client sees a new track
                consumer.continue_after(self._leg_by_mid[transceiver.mid])
                self._leg_by_mid[transceiver.mid] = consumer
            else:
                transceiver = self.pc.addTransceiver(producer.kind, direction="sendonly")
                _prefer_codecs(transceiver, producer.kind)
                self._pending_legs.append((consumer, transceiver))
            adapter.take_over_transceiver(
                transceiver, on_receive=None,
                on_send=lambda negotiated, ssrc, rtx_ssrc, dtls, c=consumer: self._consumer_negotiated(
                    c, negotiated, ssrc, rtx_ssrc, dtls))
            self.consumers[producer.id] = consumer
            producer.consumers.append(consumer)
            self._consumer_by_ssrc[adapter.sender_ssrc(transceiver)] = consumer

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
                adapter.tap_transport(dtls, self._on_rtp, self._on_rtcp, self._on_handler_error)

    def _writer(self, dtls: Any) -> Callable[[bytes], None]:
        writer = self._writers.get(id(dtls))
        if writer is None:
            writer = self._writers[id(dtls)] = adapter.packet_writer(dtls)
        return writer

    def _producer_negotiated(self, producer: Producer, negotiated: adapter.NegotiatedRtp,
                             dtls: Any) -> None:
        producer.payload_type = negotiated.payload_type
        producer.rtx_payload_type = negotiated.rtx_payload_type
        producer.clock_rate = negotiated.clock_rate
        producer.feedback = self._writer(dtls)
        for ssrc in negotiated.ssrcs:
            producer.ssrc = ssrc
            self._producer_by_ssrc[ssrc] = producer
        self._rtx_to_media.update(negotiated.rtx_ssrcs)

    def _consumer_negotiated(self, consumer: Consumer, negotiated: adapter.NegotiatedRtp,
                             ssrc: int, rtx_ssrc: int, dtls: Any) -> None:
        consumer.configure(ssrc, rtx_ssrc, negotiated.payload_type,
                           negotiated.rtx_payload_type, self._writer(dtls))
        if consumer.kind == "video":
            consumer.producer.request_keyframe()

    def _track_map(self) -> dict[str, dict[str, str]]:
        tracks = {}
        for mid, consumer in self._leg_by_mid.items():
            if consumer.producer.id not in self.consumers:
                continue
            owner = self.room.participants.get(consumer.producer.owner_id)
            tracks[mid] = {"participant": consumer.producer.owner_id,
                           "name": owner.name if owner else "",
                           "kind": consumer.kind, "source": consumer.producer.source}
        return tracks

    # Packet path ----------------------------------------------------------------------

    def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        counters = self.counters
        counters.packets_received += 1
        try:
            view = rtp.parse_rtp(data)
        except rtp.MalformedPacket:
            counters.packets_malformed += 1
            return
        producer = self._producer_by_ssrc.get(view.ssrc)
        if producer is None:
            producer = self._learn_ssrc(view)
            if producer is None:
                counters.packets_unroutable += 1
                return
        if view.payload_type != producer.payload_type:
            # RTX from the publisher (we do not NACK publishers yet) or a stray type.
            counters.packets_unroutable += 1
            return
        producer.receive(data, view)

    def _learn_ssrc(self, view: rtp.RtpView) -> Producer | None:
        # Browsers that leave SSRCs out of the SDP still send the mid extension.
        if view.ssrc in self._rtx_to_media:
            return None
        mid = view.extensions.get(rtp.EXT_MID)
        if mid is None:
            return None
        producer = self._producer_by_mid.get(mid.decode("ascii", "replace"))
        if producer is not None and view.payload_type == producer.payload_type:
            producer.ssrc = view.ssrc
            self._producer_by_ssrc[view.ssrc] = producer
            return producer
        return None

    def _on_rtcp(self, data: bytes) -> None:
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
                        consumer.producer.request_keyframe()
                elif packet.fmt == rtp.RTCP_PSFB_REMB:
                    try:
                        bitrate, ssrcs = adapter.unpack_remb(packet.fci)
                    except ValueError:
                        self.counters.rtcp_malformed += 1
                        continue
                    self._on_remb(bitrate, ssrcs)
            elif isinstance(packet, adapter.RtcpRtpfb) and packet.fmt == rtp.RTCP_RTPFB_NACK:
                consumer = self._consumer_by_ssrc.get(packet.media_ssrc)
                if consumer is not None:
                    consumer.retransmit(packet.lost)

    def _on_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        # One estimate covers the streams it lists: they form a group (see mcu/lastn.py).
        group = hash(tuple(sorted(ssrcs)))
        self.remb_estimates[group] = bitrate
        for ssrc in ssrcs:
            consumer = self._consumer_by_ssrc.get(ssrc)
            if consumer is not None:
                consumer.remb_bps = bitrate
                consumer.remb_group = group
        live = {c.remb_group for c in self.consumers.values()}
        for stale in [g for g in self.remb_estimates if g not in live]:
            del self.remb_estimates[stale]

    def _on_reception_reports(self, reports: list[Any]) -> None:
        for report in reports:
            consumer = self._consumer_by_ssrc.get(report.ssrc)
            if consumer is not None:
                consumer.fraction_lost = report.fraction_lost

    def _on_handler_error(self, exc: BaseException) -> None:
        self.counters.handler_errors += 1
        logger.error("participant %s: error in the packet path: %r", self.id, exc)

    async def _run_rtcp(self) -> None:
        """Sender reports for our legs; receiver reports and REMB for the publisher."""
        try:
            while not self.closed:
                await asyncio.sleep(RTCP_INTERVAL_S)
                for consumer in list(self.consumers.values()):
                    report = consumer.sender_report()
                    if report is not None and consumer.write is not None:
                        try:
                            consumer.write(report)
                        except (ConnectionError, OSError):
                            self.counters.send_errors += 1
                for producer in self.producers.values():
                    self._send_publisher_feedback(producer)
        except asyncio.CancelledError:
            pass

    def _send_publisher_feedback(self, producer: Producer) -> None:
        block = producer.receiver_report_block()
        if block is None or producer.feedback is None or producer.ssrc is None:
            return
        packet = rtp.rtcp_receiver_report(producer.feedback_ssrc, [block])
        if producer.kind == "video":
            # Ask for what the weakest subscriber can take, within sane bounds.
            estimates = [c.remb_bps for c in producer.consumers if c.remb_bps and not c.paused]
            bitrate = min(estimates) if estimates else DEFAULT_REMB_BPS
            bitrate = max(150_000, min(bitrate, 2_500_000))
            packet += rtp.rtcp_remb(producer.feedback_ssrc, bitrate, [producer.ssrc])
        try:
            producer.feedback(packet)
        except (ConnectionError, OSError):
            self.counters.send_errors += 1

    # Lifecycle ------------------------------------------------------------------------

    def drop_consumer(self, producer: Producer) -> Consumer | None:
        consumer = self.consumers.pop(producer.id, None)
        if consumer is not None:
            producer.detach(consumer)
            consumer.write = None
            self._consumer_by_ssrc = {s: c for s, c in self._consumer_by_ssrc.items() if c is not consumer}
        return consumer

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
        for consumer in self.consumers.values():
            consumer.producer.detach(consumer)
            consumer.write = None
        for producer in self.producers.values():
            producer.feedback = None
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
        return {
            "loss_up_pct": round(100 * lost / expected, 1) if expected > 0 else 0.0,
            "loss_down_pct": round(100 * max(sent_loss), 1) if sent_loss else 0.0,
            "bitrate_up_kbps": round(sum(p.bitrate_bps for p in received) / 1000),
            "estimate_down_kbps": round(max(estimates) / 1000) if estimates else None,
            "videos_paused": sum(1 for c in self.consumers.values() if c.kind == "video" and c.paused),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "role": self.role, "mode": self.mode,
            "joined_at": self.joined_at,
            "connection": self.pc.connectionState,
            "producers": {s: {"packets": p.packets, "active": p.active} for s, p in self.producers.items()},
            "consumers": len(self.consumers),
        }


def _prefer_codecs(transceiver: Any, kind: str) -> None:
    # Forwarding needs one codec everywhere: Opus for audio, VP8 (+RTX) for video.
    capabilities = adapter.RTCRtpSender.getCapabilities(kind)
    wanted = ("audio/opus",) if kind == "audio" else ("video/vp8", "video/rtx")
    transceiver.setCodecPreferences(
        [c for c in capabilities.codecs if c.mimeType.lower() in wanted])


class Room:
    """Participants on this worker who see and hear each other.

    An ``echo`` room sends each participant its own media back: the self-test call.
    A control loop, not the packet path, decides who speaks and which videos each
    subscriber gets (last-N within its bandwidth estimate).
    """

    def __init__(self, worker: MediaWorker, name: str, echo: bool = False) -> None:
        self.worker = worker
        self.name = name
        self.echo = echo
        self.participants: dict[str, Participant] = {}
        self.created_at = time.time()
        self.locked = False
        self.last_n = worker.config.last_n
        self.speakers = SpeakerDetector()
        self.mixer: RoomMixer | None = None  # only while someone listens mixed or it records
        # Signaling listens here: ("speaker" | "left" | "participants", details).
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()  # renegotiations under way
        self._control_task: asyncio.Task[None] | None = None

    def producers_for(self, participant: Participant) -> list[Producer]:
        if participant.mode == "mixed":
            mixer = self.ensure_mixer()
            return [mixer.audio_out, mixer.video_out]
        chosen = []
        for other in self.participants.values():
            if (other is participant) != self.echo:
                continue
            for producer in other.producers.values():
                # Screen legs exist only while someone shares a screen.
                if producer.source != "screen" or producer.sharing:
                    chosen.append(producer)
        return chosen

    def join(self, name: str, role: str, mode: str = "forwarded") -> Participant:
        participant = Participant(self, name, role, mode)
        self.participants[participant.id] = participant
        if self._control_task is None:
            self._control_task = asyncio.ensure_future(self._run_control())
        return participant

    def announce_join(self, participant: Participant) -> None:
        """After the participant's first offer: its producers exist now."""
        if self.mixer is not None:
            self._mix_source(participant)
        if participant.mode == "mixed":
            self.ensure_mixer().add_listener(participant.id)
        self._renegotiate_others(participant.id)
        self._emit("participants", {})

    def _renegotiate_others(self, except_id: str | None) -> None:
        for participant in list(self.participants.values()):
            if (participant.id != except_id or self.echo) and participant.mode == "forwarded":
                self._spawn(participant.renegotiate())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def leave(self, participant: Participant, reason: str = "left") -> None:
        if self.participants.pop(participant.id, None) is None:
            return
        for other in self.participants.values():
            for producer in participant.producers.values():
                other.drop_consumer(producer)
        self.speakers.forget(participant.id)
        if self.mixer is not None:
            self.mixer.remove_source(participant.id)
            self.mixer.remove_listener(participant.id)
            for output in (self.mixer.audio_out, self.mixer.video_out):
                participant.drop_consumer(output)
            self._release_mixer()
        await participant.close()
        self._emit("left", {"participant": participant.id, "reason": reason})
        if self.participants:
            self._renegotiate_others(None)
            self._emit("participants", {})
        else:
            self.close()

    def close(self) -> None:
        if self._control_task is not None:
            self._control_task.cancel()
        if self.mixer is not None:  # finishes a recording even when the room ends abruptly
            self.mixer.close()
            self.mixer = None
        if self.worker.rooms.get(self.name) is self:
            del self.worker.rooms[self.name]

    # Moderation ------------------------------------------------------------------------

    def set_muted(self, participant: Participant, source: str, muted: bool) -> None:
        """Stop (or resume) forwarding one of a participant's tracks, whatever it sends."""
        producer = participant.producers[source]
        if producer.muted != muted:
            producer.muted = muted
            self._emit("participants", {})

    def set_sharing(self, participant: Participant, sharing: bool) -> None:
        producer = participant.producers["screen"]
        if producer.sharing == sharing:
            return
        producer.sharing = sharing
        if not sharing:
            for other in self.participants.values():
                other.drop_consumer(producer)
        self._renegotiate_others(participant.id)
        self._emit("participants", {})

    # Mixing and recording ------------------------------------------------------------

    def ensure_mixer(self) -> RoomMixer:
        if self.mixer is None:
            self.mixer = RoomMixer(self.name, self.worker.counters)
            for participant in self.participants.values():
                self._mix_source(participant)
                if participant.mode == "mixed":
                    self.mixer.add_listener(participant.id)
            self.mixer.start()
        return self.mixer

    def _mix_source(self, participant: Participant) -> None:
        if self.mixer is not None and participant.producers:
            self.mixer.add_source(participant.id, participant.name,
                                  participant.producers["microphone"], participant.producers["camera"])

    def _release_mixer(self) -> None:
        if self.mixer is not None and not self.mixer.needed and not any(
                p.mode == "mixed" for p in self.participants.values()):
            self.mixer.close()
            self.mixer = None

    def set_mode(self, participant: Participant, mode: str) -> None:
        """Switch a participant between separate streams and one mixed picture and sound."""
        if participant.mode == mode:
            return
        for producer_id in list(participant.consumers):
            participant.drop_consumer(participant.consumers[producer_id].producer)
        participant.mode = mode
        if mode == "mixed":
            self.ensure_mixer().add_listener(participant.id)
        elif self.mixer is not None:
            self.mixer.remove_listener(participant.id)
            self._release_mixer()
        self._spawn(participant.renegotiate())
        self._emit("participants", {})

    def start_recording(self, path: Path) -> None:
        self.ensure_mixer().start_recording(path)
        self._emit("participants", {})

    def stop_recording(self) -> Path | None:
        path = self.mixer.stop_recording() if self.mixer is not None else None
        self._release_mixer()
        self._emit("participants", {})
        return path

    @property
    def recording(self) -> bool:
        return self.mixer is not None and self.mixer.recorder is not None

    def describe_participants(self) -> list[dict[str, Any]]:
        return [{"id": p.id, "name": p.name, "role": p.role, "mode": p.mode,
                 "audio_muted": p.producers["microphone"].muted,
                 "video_muted": p.producers["camera"].muted,
                 "screen": p.producers["screen"].sharing}
                for p in self.participants.values() if p.producers]

    def _emit(self, event: str, details: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, details)
            except Exception:
                logger.exception("room %s: event listener failed", self.name)

    # Control loop -------------------------------------------------------------------

    async def _run_control(self) -> None:
        interval = CONTROL_INTERVAL_S
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    self.control_step(interval)
                except Exception:
                    logger.exception("room %s: control step failed", self.name)
        except asyncio.CancelledError:
            pass

    def control_step(self, interval: float) -> None:
        activity = {}
        for participant in self.participants.values():
            for producer in participant.producers.values():
                producer.measure_bitrate(interval)
            if participant.producers:
                activity[participant.id] = participant.producers["microphone"].take_activity()
        if self.speakers.update(activity):
            if self.mixer is not None:
                self.mixer.set_speaker(self.speakers.active)
            self._emit("speaker", {"active": self.speakers.active,
                                   "speaking": sorted(self.speakers.speaking)})
        if not self.echo:
            self._choose_videos()

    def _choose_videos(self) -> None:
        now = time.monotonic()
        probe_after = self.worker.config.probe_interval_s
        for subscriber in self.participants.values():
            consumers = [c for c in subscriber.consumers.values() if c.kind == "video"]
            if not consumers:
                continue
            legs = [VideoLeg(c.producer.id, c.producer.owner_id, c.producer.source == "screen",
                             c.producer.bitrate_bps, not c.paused, c.remb_group)
                    for c in consumers]
            may_probe = now - subscriber.last_video_change >= probe_after
            chosen = choose_videos(legs, self.speakers.recent, self.last_n,
                                   subscriber.remb_estimates, may_probe)
            changed = False
            for consumer in consumers:
                if consumer.producer.id in chosen and consumer.paused:
                    consumer.resume()
                    changed = True
                elif consumer.producer.id not in chosen and not consumer.paused:
                    consumer.pause()
                    changed = True
            if changed:
                subscriber.last_video_change = now


class MediaWorker:
    """All rooms of this process; the control API signaling talks to."""

    def __init__(self, config: MediaConfig | None = None) -> None:
        self.config = config or MediaConfig()
        self.rooms: dict[str, Room] = {}
        self.counters = WorkerCounters()

    def room(self, name: str, echo: bool = False) -> Room:
        """The room of that name, opened on first use."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(self, name, echo=echo)
        return room

    @property
    def participant_count(self) -> int:
        return sum(len(room.participants) for room in self.rooms.values())

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                await room.leave(participant)
