"""RTP-level forwarding: a producer (a track sent up to us) fans out to consumers.

A consumer is one receive slot of one subscriber, showing one producer at a time (the
room re-points it: mcu/slots.py). Per consumer we rewrite
SSRC, payload type, sequence number and timestamp, gate video on a keyframe, keep a
history to answer NACKs, and produce sender reports that keep audio and video in sync.
The per-packet part of that runs in C (mcu/_fanout.c: a producer's :class:`Track`, a
consumer's :class:`Leg`); these classes are the control side. Nothing here decodes
media or knows aiortc.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from mcu import codecs, rtp
from mcu._fanout import CODEC_NONE, Leg, Sink, Track, packet_time
from mcu.stats import WorkerCounters

logger = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL_S = 1.0  # at most one PLI a second per producer
# A packet NACKed upstream again within this time is not asked for twice: several
# subscribers miss the same packet lost on a pipe, and one resend reaches them all.
UPSTREAM_NACK_REPEAT_S = 0.05
# Padding copies the newest packets of a leg, this many: the subscriber still holds them
# (a probe's copies must not arrive as late packets it would count as lost and found).
PADDING_HISTORY = 16
# Sender reports go once a second: a receiver report answers one of the last few.
REPORTS_REMEMBERED = 4
RTT_GAIN = 0.125  # the weight of a new round-trip sample (RFC 6298's alpha)
MAX_RTT_S = 2.0  # the most the estimator takes (mcu/_fanout.c): more is a broken report

Writer = Callable[[bytes], None]


def smoothed_round_trip(smoothed: float | None, sample: float) -> float:
    """A connection's round trip, smoothed as TCP does (RFC 6298), so that one report
    held up on the way does not swing what depends on it."""
    sample = min(sample, MAX_RTT_S)
    return sample if smoothed is None else (1 - RTT_GAIN) * smoothed + RTT_GAIN * sample


class Producer:
    """One incoming track (audio, camera video or screen video) of one participant.

    Its packets go through C (:func:`mcu._fanout.receive`, called by the participant):
    the statistics and the legs live in :attr:`track`; this object is the control side.
    """

    def __init__(self, producer_id: str, owner_id: str, kind: str, source: str,
                 counters: WorkerCounters, codec: str = codecs.VP8) -> None:
        self.id = producer_id
        self.owner_id = owner_id
        self.kind = kind
        self.source = source  # "microphone", "camera" or "screen"
        self.counters = counters
        video = kind == "video"
        self.track = Track(video=video, codec=codecs.C_CODECS[codec] if video else CODEC_NONE)
        self.consumers: list[Consumer] = []
        self.clock_rate = 48000 if kind == "audio" else 90000
        self.ssrc: int | None = None
        self.rtx_payload_type: int | None = None
        # Feedback to the publisher goes through this (set once negotiated).
        self.feedback: Writer | None = None
        self.feedback_ssrc = random.getrandbits(32)
        # Last sender report: (arrival on our monotonic clock, NTP seconds as float, RTP ts).
        self.sender_report: tuple[float, float, int] | None = None
        self.sender_report_lsr = 0
        self.last_keyframe_request = -KEYFRAME_REQUEST_INTERVAL_S
        self.sharing = False  # screen slots: the owner said a screen share is on
        # Made on this worker for its own subscribers (a unit's camera in VP8,
        # mcu/unit_camera.py): not piped to other workers.
        self.local_only = False
        # Piped in from another worker (mcu/pipe.py): what our subscribers miss was lost
        # on the pipe, and the origin keeps a history to resend it. A room unit's camera
        # that negotiated generic NACK (mcu/unit.py) is asked too: a packet lost on the
        # way from it reaches no leg. Browsers' cameras are not NACKed (yet).
        self.nacks_upstream = False
        self._nacked_upstream: dict[int, float] = {}  # sequence number -> when asked
        self.bitrate_bps = 0.0  # measured by the room every control interval
        # Readers of every packet besides the consumers (the room's mixer).
        self.taps: list[Callable[[bytes, rtp.RtpView], None]] = []
        self._octets_seen = 0
        # Simulcast (mcu/simulcast.py): a camera sent as several layers has a producer per
        # layer, low to high, each with its own SSRC and statistics; this one is then
        # their group, which the room ranks and the slots show, and its own track is
        # unused. A layer knows its group and its RID.
        self.layers: list[Producer] = []
        self.group: Producer | None = None
        self.rid: str | None = None
        self.layer_wanted_at: list[float] = []  # per layer: when a consumer last took it

    @property
    def codec(self) -> str | None:
        """The video codec of its payload (``vp8``/``h264``; None for audio): C finds its
        keyframes by it, and sends it only on legs of the same codec."""
        return codecs.C_NAMES.get(self.track.codec)

    @codec.setter
    def codec(self, value: str) -> None:
        if self.kind == "video":
            self.track.codec = codecs.C_CODECS[value]

    # Receive statistics (for receiver reports and the operator's view), kept by C.

    @property
    def payload_type(self) -> int | None:
        return None if self.track.payload_type < 0 else self.track.payload_type

    @payload_type.setter
    def payload_type(self, value: int | None) -> None:
        self.track.payload_type = -1 if value is None else value

    @property
    def packets(self) -> int:
        if self.layers:
            return sum(layer.track.packets for layer in self.layers)
        return self.track.packets

    @packets.setter
    def packets(self, value: int) -> None:
        self.track.packets = value

    @property
    def octets(self) -> int:
        if self.layers:
            return sum(layer.track.octets for layer in self.layers)
        return self.track.octets

    @property
    def highest_seq(self) -> int | None:
        return None if self.track.highest_seq < 0 else self.track.highest_seq

    @property
    def base_seq(self) -> int | None:
        return None if self.track.base_seq < 0 else self.track.base_seq

    @property
    def last_packet_at(self) -> float:
        if self.layers:
            return max(layer.track.last_packet_at for layer in self.layers)
        return self.track.last_packet_at

    @property
    def muted(self) -> bool:
        """Set by the owner or a host: nothing is forwarded."""
        return self.track.muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self.track.muted = value

    @property
    def active(self) -> bool:
        return self.packets > 0

    @property
    def tap_track(self) -> Track:
        """The track the taps read: a simulcast camera's top layer."""
        return self.layers[-1].track if self.layers else self.track

    def add_tap(self, tap: Callable[[bytes, rtp.RtpView], None]) -> None:
        self.taps.append(tap)
        self.tap_track.tapped = True

    def remove_tap(self, tap: Callable[[bytes, rtp.RtpView], None]) -> None:
        if tap in self.taps:
            self.taps.remove(tap)
        self.tap_track.tapped = bool(self.taps)

    # Simulcast layers -----------------------------------------------------------------

    def set_layers(self, rids: list[str]) -> None:
        """The publisher sends these layers (low to high) of this camera; [] for one."""
        if [layer.rid for layer in self.layers] == rids:
            return
        for layer in self.layers:
            layer.track.legs = ()
        self.track.tapped = False
        self.layers = []
        for rid in rids:
            layer = Producer(f"{self.id}~{rid}", self.owner_id, self.kind, self.source,
                             self.counters, codec=self.codec or codecs.VP8)
            layer.group, layer.rid = self, rid
            layer.payload_type = self.payload_type
            layer.rtx_payload_type = self.rtx_payload_type
            layer.clock_rate = self.clock_rate
            layer.feedback = self.feedback
            layer.feedback_ssrc = self.feedback_ssrc
            layer.muted = self.muted
            layer.taps = self.taps  # the same list: the taps read the top layer
            self.layers.append(layer)
        self.layer_wanted_at = [time.monotonic()] * len(rids)
        self.tap_track.tapped = bool(self.taps)
        for consumer in self.consumers:  # what was attached before the layers were known
            consumer.layer = consumer.target_layer = None
            consumer.leg.target = None
            consumer.leg.source = self.layer_track(None)
            consumer.leg.started = False
        self.relink()

    def layer_track(self, layer: int | None) -> Track:
        """The track of one layer (None: the top one; the only one without simulcast)."""
        if not self.layers:
            return self.track
        top = len(self.layers) - 1
        return self.layers[top if layer is None else max(0, min(layer, top))].track

    def layer_index(self, track: Track | None) -> int | None:
        for index, layer in enumerate(self.layers):
            if layer.track is track:
                return index
        return None

    def relink(self) -> None:
        """Give each track the legs that send it or wait for its keyframe."""
        if self.group is not None:
            # A layer: its track carries the group's slots on it and the legs attached to
            # the layer itself (a pipe to another worker sends each layer on a leg of its
            # own, mcu/pipe.py), so the group links them all.
            self.group.relink()
            return
        if not self.layers:
            self.track.legs = tuple(c.leg for c in self.consumers)
            return
        self.track.legs = ()  # a layered camera's own track carries nothing: its layers do
        for layer in self.layers:
            track = layer.track
            track.legs = tuple(c.leg for c in self.consumers
                               if c.leg.source is track or c.leg.target is track) \
                + tuple(c.leg for c in layer.consumers)

    def run_taps(self, data: bytes) -> None:
        """Pass one received packet (forwarded already) to the taps; C reports a packet
        for them only while the track is not muted."""
        view = rtp.parse_rtp(data)
        for tap in self.taps:
            try:
                tap(data, view)
            except Exception:  # a bad packet for the mixer must not stop forwarding
                self.counters.handler_errors += 1
                logger.exception("tap on %s failed", self.id)

    def take_activity(self) -> float:
        """Mean loudness (0-127) since the last call, and start a new interval."""
        track = self.track
        mean = track.activity_sum / track.activity_packets if track.activity_packets else 0.0
        track.activity_sum = track.activity_packets = 0
        return 0.0 if track.muted else mean

    def measure_bitrate(self, interval_s: float) -> float:
        for layer in self.layers:
            layer.measure_bitrate(interval_s)
        octets = self.octets
        self.bitrate_bps = (octets - self._octets_seen) * 8 / interval_s if interval_s > 0 else 0.0
        self._octets_seen = octets
        return self.bitrate_bps

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        # When it came, not when it was read: a socket may be read on a tick (mcu/udp.py).
        self.sender_report = (packet_time(), ntp_timestamp / (1 << 32), rtp_timestamp)
        self.sender_report_lsr = (ntp_timestamp >> 16) & 0xFFFFFFFF

    def request_keyframe(self) -> None:
        if self.layers:  # the group: every layer (each is asked at most once a second)
            for layer in self.layers:
                layer.request_keyframe()
            return
        now = time.monotonic()
        if self.kind != "video" or now - self.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL_S:
            return
        if self.feedback is None or self.ssrc is None:
            return
        self.last_keyframe_request = now
        self.counters.keyframe_requests += 1
        try:
            self.feedback(rtp.rtcp_pli(self.feedback_ssrc, self.ssrc))
        except (ConnectionError, OSError):
            self.counters.send_errors += 1

    def request_retransmission(self, lost: list[int]) -> None:
        """NACK packets (by our sequence numbers) upstream, where that is done at all."""
        if not self.nacks_upstream or not lost or self.feedback is None or self.ssrc is None:
            return
        now = time.monotonic()
        asked = self._nacked_upstream
        repeat = UPSTREAM_NACK_REPEAT_S
        fresh = [seq for seq in lost if now - asked.get(seq, -repeat) >= repeat]
        if not fresh:
            return
        if len(asked) > 512:  # forget old requests; sequence numbers come round again
            self._nacked_upstream = asked = {s: t for s, t in asked.items()
                                             if now - t < UPSTREAM_NACK_REPEAT_S}
        for seq in fresh:
            asked[seq] = now
        try:
            self.feedback(rtp.rtcp_nack(self.feedback_ssrc, self.ssrc, fresh))
        except (ConnectionError, OSError):
            self.counters.send_errors += 1

    def receiver_report_block(self) -> tuple[int, int, int, int, int, int, int] | None:
        track = self.track
        if self.ssrc is None or track.highest_seq < 0:
            return None
        extended = track.cycles + track.highest_seq
        expected = extended - track.base_seq + 1
        lost = max(0, expected - track.packets)
        fraction = min(255, (lost * 256) // expected) if expected > 0 else 0
        lsr, dlsr = 0, 0
        if self.sender_report is not None:
            lsr = self.sender_report_lsr
            dlsr = int((time.monotonic() - self.sender_report[0]) * 65536) & 0xFFFFFFFF
        return (self.ssrc, fraction, lost, extended, 0, lsr, dlsr)

    def attach(self, consumer: Consumer) -> None:
        """Send to ``consumer`` from now on: the layer its ``layer`` names (the top one
        if None)."""
        self.consumers.append(consumer)
        consumer.leg.target = None
        consumer.leg.source = self.layer_track(consumer.layer)
        consumer.target_layer = None
        self.relink()

    def detach(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            consumer.leg.source = consumer.leg.target = None
            self.relink()


class Consumer:
    """One receive slot of a subscriber: the producer it shows now, forwarded on that
    subscriber's connection.

    The slot (its m-line, SSRC and sequence space at the subscriber) is fixed; the
    producer behind it changes as speakers and last-N change (:meth:`switch_to`), so a
    room of hundreds needs no more m-lines than a room of ten. The per-packet state
    (rewrite offsets, counters, NACK history) lives in a C :class:`~mcu._fanout.Leg`,
    which :func:`mcu._fanout.receive` updates as it sends.
    """

    def __init__(self, consumer_id: str, kind: str, subscriber_id: str,
                 counters: WorkerCounters, codec: str = codecs.VP8) -> None:
        self.id = consumer_id
        self.producer: Producer | None = None  # None: the slot shows nobody now
        self.subscriber_id = subscriber_id
        self.counters = counters
        self.kind = kind
        video = kind == "video"
        self.leg = Leg(video=video, codec=codecs.C_CODECS[codec] if video else CODEC_NONE)
        self.leg.next_seq = random.getrandbits(15)
        self.leg.ts_offset = random.getrandbits(32)
        # Set when the subscriber's connection has negotiated this leg (configure()).
        self.rtx_ssrc = 0
        self.rtx_payload_type: int | None = None
        # Our own RTCP and retransmissions go through ``write``; forwarded packets
        # through the leg's sink. Both None: not sending.
        self.write: Writer | None = None
        self.rtx_seq = random.getrandbits(15)
        self._pad_cursor = 0  # which of the newest packets the next padding copies
        self.remb_bps: int | None = None
        self.remb_group: int | None = None
        self.fraction_lost = 0
        # When each of our last sender reports left, by its NTP time's middle 32 bits (a
        # receiver report names the one it answers by these: RFC 3550 6.4.1).
        self._reports_sent: dict[int, float] = {}
        # Simulcast: the layer of the producer it sends (None: the top one), and the one
        # it moves to at that layer's next keyframe (None: staying).
        self.layer: int | None = None
        self.target_layer: int | None = None

    @property
    def ssrc(self) -> int:
        return self.leg.ssrc

    @property
    def codec(self) -> str | None:
        """The video codec this leg was negotiated for (None for audio)."""
        return codecs.C_NAMES.get(self.leg.codec)

    @codec.setter
    def codec(self, value: str) -> None:
        wanted = codecs.C_CODECS[value]
        if self.kind == "video" and self.leg.codec != wanted:
            self.leg.codec = wanted
            self.leg.started = False  # the subscriber's decoder starts on a keyframe
            if self.producer is not None and not self.accepts(self.producer):
                self.switch_to(None)  # never another codec's bytes on this leg

    def accepts(self, producer: Producer) -> bool:
        """Whether this leg can show ``producer``: same kind, and for video same codec
        (forwarding does not transcode)."""
        return producer.kind == self.kind and producer.track.codec == self.leg.codec

    @property
    def payload_type(self) -> int:
        return self.leg.payload_type

    @property
    def paused(self) -> bool:
        return self.leg.paused

    @property
    def packets(self) -> int:
        return self.leg.packets

    @property
    def octets(self) -> int:
        return self.leg.octets

    def configure(self, ssrc: int, rtx_ssrc: int, payload_type: int,
                  rtx_payload_type: int | None, write: Writer, sink: Sink) -> None:
        self.leg.ssrc, self.rtx_ssrc = ssrc, rtx_ssrc
        self.leg.payload_type, self.rtx_payload_type = payload_type, rtx_payload_type
        self.write = write
        self.leg.sink = sink

    def disconnect(self) -> None:
        """Send nothing more on this leg."""
        self.write = None
        self.leg.sink = None

    def switch_to(self, producer: Producer | None) -> None:
        """Show another producer (or none) in this slot.

        The subscriber keeps seeing one stream on one SSRC: the C leg re-bases sequence
        numbers and timestamps on the new source's first packet (for video, a keyframe,
        which we ask the new producer for at once).
        """
        if producer is self.producer:
            return
        if producer is not None and not self.accepts(producer):
            raise ValueError(f"slot {self.id} ({self.codec}) cannot show {producer.id} ({producer.codec})")
        if self.producer is not None:
            self.producer.detach(self)
        self.producer = producer
        self.leg.started = False
        self.leg.rebase_ts = True
        if producer is not None:
            producer.attach(self)
            if self.leg.clock_rate != producer.clock_rate:
                self.leg.clock_rate = producer.clock_rate
            self.request_keyframe()

    @property
    def source(self) -> Producer | None:
        """What it sends now: its producer, or the layer of it it is on."""
        producer = self.producer
        if producer is None or not producer.layers:
            return producer
        return self._layer_producer(self.layer)

    def _layer_producer(self, layer: int | None) -> Producer:
        assert self.producer is not None and self.producer.layers
        layers = self.producer.layers
        return layers[len(layers) - 1 if layer is None else max(0, min(layer, len(layers) - 1))]

    def request_keyframe(self) -> None:
        """Ask for a keyframe of what this slot sends (and of the layer it moves to)."""
        producer = self.producer
        if producer is None:
            return
        if not producer.layers:
            producer.request_keyframe()
            return
        self._layer_producer(self.layer).request_keyframe()
        if self.target_layer is not None:
            self._layer_producer(self.target_layer).request_keyframe()

    def set_layer(self, layer: int) -> None:
        """Move to another simulcast layer of its producer: at once if nothing is being
        sent yet, else at that layer's next keyframe (asked for now), sending the layer it
        has until then."""
        producer = self.producer
        if producer is None or not producer.layers:
            return
        layer = max(0, min(layer, len(producer.layers) - 1))
        current = len(producer.layers) - 1 if self.layer is None else self.layer
        if layer == (self.target_layer if self.target_layer is not None else current):
            return
        track = producer.layer_track(layer)
        if layer == current:  # back to the one it has: no switch waiting
            self.target_layer = None
            self.leg.target = None
        elif not self.leg.started or self.leg.paused:
            self.layer, self.target_layer = layer, None
            self.leg.target = None
            self.leg.source = track
            self.leg.started = False
            self.leg.rebase_ts = True
        else:
            self.target_layer = layer
            self.leg.target = track
        producer.relink()
        self.request_keyframe()

    def switched(self) -> None:
        """C moved the leg to its target layer (at a keyframe): take note."""
        producer = self.producer
        if producer is None or not producer.layers:
            return
        index = producer.layer_index(self.leg.source)
        if index is not None and self.leg.target is None:
            self.layer, self.target_layer = index, None
            producer.relink()

    def pause(self) -> None:
        self.leg.paused = True

    def resume(self) -> None:
        if self.leg.paused:
            self.leg.paused = False
            self.leg.started = False  # re-gate on a keyframe and re-base the sequence numbers
            self.request_keyframe()

    def retransmit(self, lost: list[int]) -> list[int]:
        """Answer a NACK from our own history (as RTX where negotiated).

        Returns the packets never sent on this leg, by the producer's sequence numbers:
        for a producer piped in from another worker they were lost on the pipe, and can
        be asked for there (:meth:`Producer.request_retransmission`).
        """
        self.counters.nacks_received += 1
        if self.kind != "video" or self.write is None:
            return []
        missing = []
        for seq in lost:
            packet = self.leg.sent(seq, restamp=True)  # a new transport-wide number
            if packet is None:
                if self.leg.started:
                    missing.append((seq - self.leg.seq_offset) & 0xFFFF)
                continue
            if self.rtx_payload_type is not None:
                packet = self._wrap_rtx(packet, seq)
            try:
                self.write(packet)
                self.counters.retransmissions += 1
            except (ConnectionError, OSError):
                self.counters.send_errors += 1
        return missing

    @property
    def can_pad(self) -> bool:
        """Whether :meth:`pad` has something to send: a video leg with RTX that is
        sending."""
        return (self.kind == "video" and self.rtx_payload_type is not None and self.write is not None
                and self.leg.started and not self.leg.paused)

    def pad(self, budget: int) -> int:
        """Send about ``budget`` bytes of padding (a padding probe, mcu/congestion.py):
        RTX copies of the newest packets this leg sent, which the subscriber has (its
        jitter buffer drops the copies), each with a transport-wide number of its own so
        its feedback covers them. Returns the bytes sent."""
        if not self.can_pad:
            return 0
        newest = (self.leg.next_seq - 1) & 0xFFFF
        sent = 0
        for _ in range(PADDING_HISTORY):  # the history may have gaps (another layer's)
            if sent >= budget:
                break
            self._pad_cursor = (self._pad_cursor + 1) % PADDING_HISTORY
            seq = (newest - self._pad_cursor) & 0xFFFF
            packet = self.leg.sent(seq, restamp=True)
            if packet is None:
                continue
            packet = self._wrap_rtx(packet, seq)
            try:
                self.write(packet)
            except (ConnectionError, OSError):
                self.counters.send_errors += 1
                return sent
            self.counters.padding_packets += 1
            sent += len(packet)
        return sent

    def _wrap_rtx(self, packet: bytes, original_seq: int) -> bytes:
        # RFC 4588: same header with the RTX payload type, SSRC and sequence number; the
        # payload starts with the original sequence number.
        view = rtp.parse_rtp(packet)
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        assert self.rtx_payload_type is not None
        header = bytearray(packet[:view.payload_start])
        header[1] = (header[1] & 0x80) | self.rtx_payload_type
        header[2:4] = self.rtx_seq.to_bytes(2, "big")
        header[8:12] = self.rtx_ssrc.to_bytes(4, "big")
        header[0] &= ~0x20 & 0xFF  # the padding is not carried over
        return bytes(header) + original_seq.to_bytes(2, "big") + packet[view.payload_start:view.payload_end]

    def sender_report(self) -> bytes | None:
        """A sender report in our timestamp space, on the publisher's NTP timeline.

        Extrapolating the publisher's own (NTP, RTP) pair keeps the relation between its
        audio and video exactly, which is what lip-sync at the subscriber needs.
        """
        # Until a new source's first packet re-bases our timestamps, the producer's
        # clock does not map onto ours.
        source = self.source
        if self.packets == 0 or self.write is None or source is None or not self.leg.started:
            return None
        now = time.monotonic()
        report = source.sender_report
        if report is not None:
            arrived, ntp_seconds, rtp_ts = report
            elapsed = now - arrived
            ntp = ntp_seconds + elapsed
            rtp_now = rtp_ts + int(elapsed * source.clock_rate) + self.leg.ts_offset
            ntp_pair = (int(ntp) & 0xFFFFFFFF, int((ntp % 1) * (1 << 32)) & 0xFFFFFFFF)
        else:
            ntp_pair = rtp.ntp_now()
            rtp_now = self.leg.last_ts + int((now - source.last_packet_at) * source.clock_rate)
        lsr = ((ntp_pair[0] & 0xFFFF) << 16) | (ntp_pair[1] >> 16)
        self._reports_sent[lsr] = now
        if len(self._reports_sent) > REPORTS_REMEMBERED:
            del self._reports_sent[next(iter(self._reports_sent))]
        return rtp.rtcp_sender_report(self.leg.ssrc, ntp_pair, rtp_now, self.leg.packets, self.leg.octets)

    def round_trip(self, lsr: int, dlsr: int) -> float | None:
        """The round trip a receiver report block shows (its LSR and DLSR fields), in
        seconds: now, less when the report it answers left, less how long the receiver
        held it. None when it answers no report of ours (none yet, or one forgotten)."""
        sent = self._reports_sent.get(lsr) if lsr else None
        if sent is None:
            return None
        # Timed by its arrival: a mixed participant's socket is read on the mixer's tick.
        rtt = packet_time() - sent - dlsr / 65536
        # DLSR counts in 1/65536 s and the receiver's clock ticks its own way: on a
        # loopback a few tens of microseconds below zero is a round trip of about none.
        return max(0.0, rtt) if rtt > -0.001 else None
