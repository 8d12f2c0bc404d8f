"""The mixing unit of one room: one mixed sound and one composed picture, and recording.

Sources are every participant's microphone and camera, tapped from their producers, and
a screen while it is shared: the composite then shows it large with the cameras in a
strip below, so that a room unit (which has no screen slot) and the recording see it.
Outputs are producers of the room's own ("mix" audio, "composite" video, and the same
in the codecs room units take: the composite in H.264 per size, the mix in G.722/G.711
per codec), which mixed participants subscribe to like any other producer: the
forwarder's consumers then rewrite, gate, retransmit and report on them as usual. Audio
is mix-minus: a listener who is talking gets its own mix without its own voice;
everyone else on its codec shares one encode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from av.video.reformatter import Interpolation, VideoReformatter

from mcu import codecs, rtp
from mcu._fanout import Leg, Track, forward
from mcu.forwarding import Consumer, Producer
from mcu.mixer import AudioMixer, Compositor, MixTick, Recorder, SelectiveDecoder, Vp8Depacketizer, packetize
from mcu.mixer.h264 import H264Depacketizer, H264Encoder, packetize_h264
from mcu.mixer.vp8 import VIDEO_CLOCK
from mcu.stats import WorkerCounters
from mcu.ticks import Ticker
from mcu.udp import CReadTransport
from mcu.unit_audio import CODECS as UNIT_AUDIO_CODECS
from mcu.unit_audio import NarrowbandEncoder

Tap = Callable[[bytes, rtp.RtpView], None]

logger = logging.getLogger(__name__)

MIXER_OWNER = "mixer"
AUDIO_TICK_S = 0.020
# A source's microphone is gated (its quiet packets stay in C, see RoomMixer._gate)
# again this long after it was last played or last sent a packet loud enough to talk.
GATE_OPEN_TICKS = 50  # 1 s
# While nobody watches the composite (nor records it) there are no video ticks; every
# this many audio ticks (100 ms) the mixer looks whether somebody does now.
VIDEO_CHECK_TICKS = 5
OPUS_PAYLOAD_TYPE = 111  # placeholder until a consumer's own negotiated type replaces it
VP8_PAYLOAD_TYPE = 96
# The caption of a shared screen's tile ("Jana Nováková – obrazovka"): the composite is
# what a room unit in a Czech office shows.
SCREEN_CAPTION = "{name} – obrazovka"

# The legs that get the shared payload, and the legs of each subscriber with its own.
_LegGroups = tuple[tuple[Leg, ...], dict[str, tuple[Leg, ...]]]


class MixOutput(Producer):
    """A producer whose packets the mixer makes; PLIs go to the compositor."""

    def __init__(self, producer_id: str, kind: str, counters: WorkerCounters,
                 on_keyframe_request: Callable[[], None] | None = None, codec: str = codecs.VP8) -> None:
        super().__init__(producer_id, MIXER_OWNER, kind, "mix", counters, codec=codec)
        self.ssrc = random.getrandbits(32)
        self.payload_type = OPUS_PAYLOAD_TYPE if kind == "audio" else VP8_PAYLOAD_TYPE
        self._seq = random.getrandbits(16)
        self._on_keyframe_request = on_keyframe_request
        self.feedback = self._feedback
        # The legs grouped for emit(): per set of subscribers with their own payload.
        self._groups: dict[frozenset[str], _LegGroups] = {}
        self._grouped_count = 0

    def _feedback(self, packet: bytes) -> None:
        if self._on_keyframe_request is not None and packet[1] == rtp.RTCP_PSFB:
            self._on_keyframe_request()

    def attach(self, consumer: Consumer) -> None:
        super().attach(consumer)
        self._groups.clear()

    def detach(self, consumer: Consumer) -> None:
        super().detach(consumer)
        self._groups.clear()

    def emit(self, timestamp: int, marker: bool, shared: bytes,
             own: Mapping[str, bytes] | None = None, keyframe: bool = False) -> None:
        """Send one RTP packet's worth of payload to every consumer: ``shared`` to all but
        the subscribers in ``own``, who get theirs (a talker's mix-minus)."""
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets += 1
        # Our clock is the mapping for sender reports: now <-> this timestamp.
        ntp_seconds, ntp_fraction = rtp.ntp_now()
        self.sender_report = (time.monotonic(), ntp_seconds + ntp_fraction / (1 << 32), timestamp)
        extension = b"" if self.kind == "audio" else rtp.abs_send_time_block()
        legs, own_legs = self._legs_for(own)
        # One C send call for each distinct payload, with all the legs that get it.
        self._send(legs, extension, shared, timestamp, marker, keyframe)
        if own:
            for subscriber, payload in own.items():
                these = own_legs.get(subscriber)
                if these:
                    self._send(these, extension, payload, timestamp, marker, keyframe)

    def _legs_for(self, own: Mapping[str, bytes] | None) -> _LegGroups:
        """(the legs that get the shared payload, the legs of each subscriber in ``own``).

        Kept per set of own-payload subscribers until a consumer comes or goes: talkers
        change a few times a minute, ticks come 50 times a second, and building these
        afresh each tick was a Python loop over every consumer."""
        key = frozenset(own) if own else frozenset()
        found = self._groups.get(key)
        if found is None or self._grouped_count != len(self.consumers):
            if self._grouped_count != len(self.consumers):
                self._groups.clear()
                self._grouped_count = len(self.consumers)
            by_subscriber: dict[str, list[Leg]] = {}
            shared: list[Leg] = []
            for consumer in self.consumers:
                if consumer.subscriber_id in key:
                    by_subscriber.setdefault(consumer.subscriber_id, []).append(consumer.leg)
                else:
                    shared.append(consumer.leg)
            if len(self._groups) > 64:  # many talker sets seen: start again rather than grow
                self._groups.clear()
            found = self._groups[key] = (tuple(shared), {k: tuple(v) for k, v in by_subscriber.items()})
        return found

    def _send(self, legs: tuple[Leg, ...], extension: bytes, payload: bytes, timestamp: int, marker: bool,
              keyframe: bool) -> None:
        if not legs or not payload:
            return
        counters = self.counters
        try:
            sent, sent_bytes, errors, wants_keyframe = forward(
                legs, extension, payload, 0, self._seq, timestamp, marker, keyframe, False, len(payload))
        except ValueError:  # too long to send once the extension block is in
            counters.send_errors += len(legs)
            return
        except Exception:
            counters.handler_errors += 1
            logger.exception("mixed legs of %s failed", self.id)
            return
        counters.packets_forwarded += sent
        counters.bytes_forwarded += sent_bytes
        counters.send_errors += errors
        if wants_keyframe:  # a subscriber's decoder waits for one (throttled as any producer's)
            self.request_keyframe()


class NarrowbandMix:
    """The mix in one unit codec (G.722, G.711 µ-law or A-law) for the room units that
    take it (mcu/unit_audio.py): the shared mix encoded once a tick for all of them, and
    a talker's mix without its voice for it alone; each unit's leg in C, as the Opus mix's.
    Its RTP clock is 8 kHz for all three (RFC 3551)."""

    def __init__(self, room_name: str, codec: str, counters: WorkerCounters) -> None:
        self.codec = codec
        self.output = MixOutput(f"{room_name}-mix-{codec.lower()}", "audio", counters)
        self.output.clock_rate = UNIT_AUDIO_CODECS[codec].rtp_clock
        self._shared = NarrowbandEncoder(codec)
        self._own: dict[str, NarrowbandEncoder] = {}  # talkers' (their encoder keeps its state)
        self.ticks = self.encodes = 0

    def listeners(self) -> set[str]:
        return {consumer.subscriber_id for consumer in self.output.consumers}

    def emit(self, mix: MixTick, listeners: set[str]) -> None:
        assert mix.pcm is not None
        shared = self._shared.encode(mix.pcm)
        own: dict[str, bytes] = {}
        for listener, pcm in mix.own_pcm.items():
            if listener in listeners:
                encoder = self._own.get(listener)
                if encoder is None:
                    encoder = self._own[listener] = NarrowbandEncoder(self.codec)
                own[listener] = encoder.encode(pcm)
        self.ticks += 1
        self.encodes += 1 + len(own)
        if not self._own.keys() <= listeners:  # a listener gone: its encoder too
            self._own = {k: v for k, v in self._own.items() if k in listeners}
        # The mix's 48 kHz samples as ticks of the codec's RTP clock (8 kHz: 960 a frame to 160).
        ticks = mix.timestamp * self.output.clock_rate // 48000
        self.output.emit(ticks & 0xFFFFFFFF, False, shared, own)


@dataclass
class H264Size:
    """The composite in H.264 at one size, for the room units that receive that size
    (mcu/unit_sdp.py chooses it from each unit's SDP): one producer they all subscribe
    to, and its encoder, which exists only while one of them receives it."""

    size: tuple[int, int]
    output: MixOutput
    encoder: H264Encoder | None = None
    keyframe: bool = True
    since_keyframe: int = 1 << 30  # the first one may be a key frame at once
    # Kept between frames, as the compositor's per source: a bare reformat builds a new
    # swscale context each call.
    scaler: VideoReformatter = field(default_factory=VideoReformatter)


class RoomMixer:
    """Mixes a room for its mixed participants and for its recording."""

    def __init__(self, room_name: str, counters: WorkerCounters, width: int = 640, height: int = 360,
                 fps: int = 15) -> None:
        self.counters = counters
        self.audio = AudioMixer(max_talkers=3)
        self.compositor = Compositor(width, height, fps=fps, layout="grid")
        self.decoders = SelectiveDecoder()
        # Per source, for the codec its camera sends (a room forwarding H.264 has H.264
        # cameras; the composite is VP8 whatever they send).
        self.depacketizers: dict[str, tuple[str, Vp8Depacketizer | H264Depacketizer]] = {}
        self.fps = fps
        self.room_name = room_name
        self.audio_out = MixOutput(f"{room_name}-mix", "audio", counters)
        # The mix in G.722/G.711 for room units on those (made when a unit first takes it).
        self.narrowband: dict[str, NarrowbandMix] = {}
        self.video_out = MixOutput(f"{room_name}-composite", "video", counters,
                                   on_keyframe_request=self.compositor.request_keyframe)
        # The same composite in H.264 for room units (mcu/unit.py), per size a unit
        # receives (made when a unit first asks for it): each size encoded only while one
        # of them receives it, from the same composed frame as the VP8 one where the size
        # is not larger; units of one size share its encode.
        self.h264_sizes: dict[tuple[int, int], H264Size] = {}
        # The canvas for units that receive more than the room's composite: composed at
        # their size (an upscaled 640x360 would only be bigger, not sharper), only while
        # one of them receives it. Its sources are the compositor's (names: _names).
        self._large: Compositor | None = None
        self._names: dict[str, str] = {}
        self._speaker: str | None = None
        self._h264_frames = random.getrandbits(20)
        self.sources: dict[str, tuple[Producer, Producer]] = {}  # participant -> (mic, camera)
        # Shared screens (participant -> its screen producer), in the order shared: the
        # newest is the one presented. In the compositors a screen is the source
        # screen_source(participant), beside the participant's camera.
        self.screens: dict[str, Producer] = {}
        self.recorder: Recorder | None = None
        self.recording_path: Path | None = None
        # Told (from the event loop, after the tick) when a recording ended because its
        # file could not be written: its path and the error.
        self.on_recording_failed: Callable[[Path, OSError], None] | None = None
        self._picture_id = random.getrandbits(15)
        # The cameras are decoded and the composite composed and encoded only while
        # somebody receives it or it is recorded: a room of audio-only units costs no
        # video work at all.
        self.composing = False
        self.frames_composed = 0
        # Per source, its camera's pictures decoded into the composite (and of them key
        # frames): a unit's test call's proof that its video reaches us (mcu/unit.py).
        self.frames_decoded: dict[str, int] = {}
        self.keyframes_decoded: dict[str, int] = {}
        self._audio_ticker = Ticker(AUDIO_TICK_S, self._audio_tick, name=f"mixer of {room_name}: audio")
        self._video_ticker = Ticker(1 / fps, self._video_tick, name=f"mixer of {room_name}: video")
        # Microphones whose quiet packets C holds back from the taps (participant -> its
        # track), and the audio tick until which each other source's gate stays open.
        self._gated: dict[str, Track] = {}
        self._taps: dict[str, tuple[Tap, Tap]] = {}  # each source's (microphone, camera)
        self._screen_taps: dict[str, Tap] = {}
        self._open_until: dict[str, int] = {}
        self._audio_ticks = 0
        # Participants whose sockets this mixer reads on its audio tick (the room chooses
        # them: read_on_tick()).
        self._tick_read: dict[str, list[CReadTransport]] = {}
        # While the tick reads before the mix, the pictures completed meanwhile wait
        # here to be decoded once the mix is out (a decode takes milliseconds).
        self._pictures_after_mix: list[tuple[str, Producer, Any, str]] | None = None

    # Sources ------------------------------------------------------------------------

    def add_source(self, participant_id: str, name: str, microphone: Producer, camera: Producer) -> None:
        if participant_id in self.sources:
            return
        self.sources[participant_id] = (microphone, camera)
        self._names[participant_id] = name
        self.audio.add_source(participant_id)
        for compositor in self._compositors():
            compositor.add_source(participant_id, name)
        taps = self._taps[participant_id] = (self._audio_tap(participant_id, microphone.tap_track),
                                             self._video_tap(participant_id, camera))
        microphone.add_tap(taps[0])
        camera.add_tap(taps[1])
        self._gate(participant_id)
        self._select_decoders()

    def remove_source(self, participant_id: str) -> None:
        """A participant's microphone and camera leave the mix, and its screen if shared."""
        self.set_screen(participant_id, None)
        producers = self.sources.pop(participant_id, None)
        if producers is None:
            return
        # Only the mixer's own taps: a unit's camera has another (mcu/unit_camera.py).
        for producer, tap in zip(producers, self._taps.pop(participant_id), strict=True):
            producer.remove_tap(tap)
        producers[0].tap_track.tap_level_limit = 127
        self.read_on_tick(participant_id, [])
        self._gated.pop(participant_id, None)
        self._open_until.pop(participant_id, None)
        self.audio.remove_source(participant_id)
        self._drop_video(participant_id)
        self._select_decoders()

    def _drop_video(self, source: str) -> None:
        """A camera or a screen leaves the compositors, with what was kept of it."""
        self._names.pop(source, None)
        for compositor in self._compositors():
            compositor.remove_source(source)
        self.depacketizers.pop(source, None)
        self.frames_decoded.pop(source, None)
        self.keyframes_decoded.pop(source, None)

    def set_screen(self, participant_id: str, screen: Producer | None, name: str = "") -> None:
        """A participant's screen share starts (``screen``) or stops (None)."""
        known = self.screens.pop(participant_id, None)
        source = screen_source(participant_id)
        if known is not None:
            known.remove_tap(self._screen_taps.pop(participant_id))
            self._drop_video(source)
        if screen is not None:
            self.screens[participant_id] = screen
            self._names[source] = SCREEN_CAPTION.format(name=name or self._names.get(participant_id, ""))
            for compositor in self._compositors():
                compositor.add_source(source, self._names[source])
            tap = self._screen_taps[participant_id] = self._video_tap(source, screen)
            screen.add_tap(tap)
        presenting = screen_source(next(reversed(self.screens))) if self.screens else None
        for compositor in self._compositors():
            compositor.set_presentation(presenting)
        self._select_decoders()

    def _video_producer(self, source: str) -> Producer:
        """The producer whose pictures a compositor's source shows: a camera or a screen."""
        owner = screen_owner(source)
        return self.screens[owner] if owner is not None else self.sources[source][1]

    def _compositors(self) -> list[Compositor]:
        return [self.compositor] if self._large is None else [self.compositor, self._large]

    def _select_decoders(self) -> None:
        for newly_shown in self.decoders.select(self.compositor.shown()):
            self._video_producer(newly_shown).request_keyframe()

    # Gating ---------------------------------------------------------------------------
    # Most of a room is quiet most of the time, and each of its packets cost Python (a
    # parse, the tap, the jitter buffer) 50 times a second for nothing: a source that is
    # not played gets no packet quieter than a talker's threshold into Python. C keeps
    # the loudest level it held back, which feeds the choice of talkers each tick, so
    # that choice is what it would be with every packet. A packet that passes (loud
    # enough to talk, or without a level) opens the gate at once, so the talk spurt
    # reaches the jitter buffer whole; the buffer sees the quiet time before it as a
    # sender's DTX pause and starts the spurt at its target depth, as it does then.

    def _gate(self, participant_id: str) -> None:
        track = self.sources[participant_id][0].tap_track
        track.tap_level_limit = self.audio.selector.threshold_level
        track.held_level = 128
        self._gated[participant_id] = track
        self._open_until.pop(participant_id, None)

    def _open_gate(self, participant_id: str) -> None:
        track = self._gated.pop(participant_id, None)
        if track is not None:
            track.tap_level_limit = 127
            self._take_held_level(participant_id, track)
        self._open_until[participant_id] = self._audio_ticks + GATE_OPEN_TICKS

    def _take_held_level(self, participant_id: str, track: Track) -> None:
        held = track.held_level
        if held < 128:
            track.held_level = 128
            self.audio.note_level(participant_id, held)

    def _audio_tap(self, participant_id: str, track: Track) -> Callable[[bytes, rtp.RtpView], None]:
        """The tap of a microphone whose packets C receives on ``track``."""
        def tap(data: bytes, view: rtp.RtpView) -> None:
            if participant_id in self._gated:  # through the gate: loud, or no level
                self._open_gate(participant_id)
            level = view.extensions.get(rtp.EXT_AUDIO_LEVEL)
            # C's receive time of this very packet (a tap runs after receive()): the
            # kernel's when its socket is read on the tick, so no jitter from that.
            self.audio.push(participant_id, view.sequence_number, view.timestamp,
                            data[view.payload_start:view.payload_end],
                            level[0] & 0x7F if level else None, track.last_packet_at)
        return tap

    def _video_tap(self, source: str, video: Producer) -> Tap:
        """The tap of a camera or a screen: ``source`` is its name in the compositors."""
        def tap(data: bytes, view: rtp.RtpView) -> None:
            if not self.composing or source not in self.decoders.selected:
                return  # not on show, or nobody watches: not even depacketized
            codec = video.codec or codecs.VP8
            known = self.depacketizers.get(source)
            if known is None or known[0] != codec:  # the first packet, or renegotiated
                known = self.depacketizers[source] = (
                    codec, H264Depacketizer() if codec == codecs.H264 else Vp8Depacketizer())
            frame = known[1].push(view.sequence_number, view.timestamp, view.marker,
                                  data[view.payload_start:view.payload_end])
            if frame is None:
                return
            if self._pictures_after_mix is not None:
                self._pictures_after_mix.append((source, video, frame, codec))
            else:
                self._decode(source, video, frame, codec)
        return tap

    def _decode(self, source: str, video: Producer, frame: Any, codec: str) -> None:
        """A camera's or a screen's completed picture into the compositors."""
        picture = self.decoders.decode(source, frame.data, codec)
        if picture is not None:
            self.frames_decoded[source] = self.frames_decoded.get(source, 0) + 1
            if frame.keyframe:
                self.keyframes_decoded[source] = self.keyframes_decoded.get(source, 0) + 1
            for compositor in self._compositors():
                compositor.push_frame(source, picture)
        elif frame.after_gap or self.decoders.needs_keyframe(source):
            video.request_keyframe()  # throttled by the producer

    # Listeners ------------------------------------------------------------------------

    def add_listener(self, participant_id: str) -> None:
        self.audio.add_listener(participant_id, participant_id if participant_id in self.sources else None)

    def remove_listener(self, participant_id: str) -> None:
        self.audio.remove_listener(participant_id)
        self.read_on_tick(participant_id, [])

    # Reading on the tick ------------------------------------------------------------
    # A mixed participant's packets wait for the next audio tick in the jitter buffer
    # anyway; read when they come, each costs the worker a wake-up of its own (a room
    # of 60: 2,300 a second). Read here, a mixed room's worker wakes about 60 times a
    # second whatever its size (docs/mixer.md). What else comes on those sockets (RTCP,
    # STUN, their cameras) waits up to one tick too, so the room reads this way only
    # sockets whose media nobody receives forwarded (room.py).

    def read_on_tick(self, participant_id: str, sockets: list[CReadTransport]) -> None:
        """Read these sockets of a participant on the audio tick from now on ([]: none;
        those read so far go back to the event loop)."""
        for sock in self._tick_read.pop(participant_id, []):
            if sock not in sockets:
                sock.read_on_tick(False)
        for sock in sockets:
            sock.read_on_tick(True)
        if sockets:
            self._tick_read[participant_id] = sockets

    @property
    def tick_read(self) -> dict[str, list[CReadTransport]]:
        """Whose sockets are read on the audio tick (participant -> sockets)."""
        return self._tick_read

    def _drain_sockets(self, participants: list[str]) -> None:
        for participant_id in participants:
            for sock in self._tick_read.get(participant_id, ()):  # a packet's handlers may change it
                sock.reader.drain()

    def set_speaker(self, participant_id: str | None) -> None:
        if participant_id in self.sources or participant_id is None:
            self._speaker = participant_id
            for compositor in self._compositors():
                compositor.set_speaker(participant_id)

    # Running --------------------------------------------------------------------------

    @property
    def needed(self) -> bool:
        return bool(self.audio_out.consumers or self.video_out.consumers or self.recorder
                    or any(encode.output.consumers for encode in self.h264_sizes.values()))

    def composite_for(self, codec: str | None, size: tuple[int, int] | None = None) -> MixOutput:
        """The composite a mixed subscriber of that video codec receives; in H.264 at
        ``size`` (the room's composite size if not given)."""
        if codec != codecs.H264:
            return self.video_out
        size = size or (self.compositor.width, self.compositor.height)
        encode = self.h264_sizes.get(size)
        if encode is None:
            output = MixOutput(f"{self.room_name}-composite-h264-{size[0]}x{size[1]}", "video",
                               self.counters, on_keyframe_request=lambda: self._request_h264_keyframe(size),
                               codec=codecs.H264)
            encode = self.h264_sizes[size] = H264Size(size, output)
        return encode.output

    def _request_h264_keyframe(self, size: tuple[int, int]) -> None:
        encode = self.h264_sizes.get(size)
        if encode is not None:
            encode.keyframe = True

    def start(self) -> None:
        if not self._audio_ticker.running:
            self._audio_ticker.start()
            self._watch_composite()

    @property
    def video_ticking(self) -> bool:
        """Whether the video ticks run (only while the composite is watched or recorded)."""
        return self._video_ticker.running

    def _watch_composite(self) -> None:
        """Start the video ticks when somebody watches the composite or it is recorded.
        They stop themselves when nobody does: a room of audio-only units has no 15 Hz
        wakeups for nothing."""
        if self._video_ticker.running or not self._audio_ticker.running or not self.composite_watched():
            return
        self._video_ticker.start()

    def audio_for(self, codec: str | None) -> MixOutput:
        """The mix a listener receives: Opus (``codec`` None), or in a room unit's codec."""
        if codec is None:
            return self.audio_out
        if codec not in UNIT_AUDIO_CODECS:
            raise ValueError(f"no mix in {codec}")
        narrow = self.narrowband.get(codec)
        if narrow is None:
            narrow = self.narrowband[codec] = NarrowbandMix(self.room_name, codec, self.counters)
        return narrow.output

    def _audio_tick(self, index: int) -> None:
        # Those who may be mixed now are read first. The quiet ones (gated) are read once
        # the mix is out: their packets only bring levels (a loud one opens its gate, and
        # a talk spurt waits for two packets before it plays, so it starts on the same
        # tick either way), and the mix is not held back by reading the whole room.
        gated = [p for p in self._tick_read if p in self._gated]
        self._pictures_after_mix = []  # their cameras come on the same sockets
        try:
            self._drain_sockets([p for p in self._tick_read if p not in self._gated])
        finally:
            pictures, self._pictures_after_mix = self._pictures_after_mix, None
        for participant_id, track in self._gated.items():
            self._take_held_level(participant_id, track)
        narrow = [(n, n.listeners()) for n in self.narrowband.values() if n.output.consumers]
        mix = self.audio.tick(pcm=bool(narrow),
                              pcm_for=set().union(*(listeners for _, listeners in narrow)))
        if self.audio_out.consumers:
            self.audio_out.emit(mix.timestamp & 0xFFFFFFFF, False, mix.shared, mix.own)
        for output, listeners in narrow:
            output.emit(mix, listeners)
        if self.recorder is not None:
            self.recorder.write_audio(mix.shared, mix.timestamp)
            self._check_recorder()
        # What can wait until the packets are out.
        for picture in pictures:
            self._decode(*picture)
        self._drain_sockets(gated)
        self._audio_ticks += 1
        for talker in mix.talkers:
            if talker in self._gated or talker in self._open_until:
                self._open_gate(talker)  # played: open while it is, and a while after
        for participant_id, until in list(self._open_until.items()):
            if until < self._audio_ticks:
                self._gate(participant_id)
        if self._audio_ticks % VIDEO_CHECK_TICKS == 0:
            self._watch_composite()

    def composite_watched(self, output: MixOutput | None = None) -> bool:
        """Somebody receives the composite now (a negotiated leg, not paused), or it is
        recorded. A unit that declined video has no leg that sends. ``output``: that
        encoding of it only (the recording is VP8)."""
        if output is None:
            return self.composite_watched(self.video_out) or any(
                self.composite_watched(encode.output) for encode in self.h264_sizes.values())
        return (output is self.video_out and self.recorder is not None) or any(
            consumer.leg.sink is not None and not consumer.leg.paused for consumer in output.consumers)

    def _video_tick(self, index: int) -> None:
        recorder = self.recorder
        if recorder is not None and recorder.wants_keyframe:
            self.compositor.request_keyframe()
        watched = self.composite_watched()
        if watched and not self.composing:
            # Cameras were not decoded meanwhile: start each shown one on a keyframe.
            for source in self.decoders.selected:
                self._video_producer(source).request_keyframe()
            self.compositor.request_keyframe()
            for encode in self.h264_sizes.values():
                encode.keyframe = True
        self.composing = watched
        if not watched:
            self._video_ticker.stop()  # until _watch_composite() sees somebody watch again
            self._end_h264({})
            self._large = None
            return
        units = {size: encode for size, encode in self.h264_sizes.items()
                 if self.composite_watched(encode.output)}
        self._end_h264(units)
        vp8 = self.composite_watched(self.video_out)
        canvas = self._unit_canvas(units)
        frame = self.compositor.compose() if vp8 or canvas is self.compositor else None
        if units:
            unit_frame = frame if canvas is self.compositor and frame is not None else canvas.compose()
            # The units' clock is the mixer's, not a canvas's: a unit's stream goes on at the
            # same pace when its canvas changes (a 720p unit came or went).
            self._h264_frames += 1
            timestamp = round(self._h264_frames * VIDEO_CLOCK / self.fps) & 0xFFFFFFFF
            for encode in units.values():
                self._send_h264(encode, unit_frame, timestamp)
        if not vp8 or frame is None:
            return
        for encoded in self.compositor.encode(frame):
            self.frames_composed += 1
            if recorder is not None:
                recorder.write_video(encoded)
                self._check_recorder()
            self._picture_id = (self._picture_id + 1) & 0x7FFF
            payloads = packetize(encoded.data, self._picture_id)
            for position, payload in enumerate(payloads):
                self.video_out.emit(encoded.timestamp & 0xFFFFFFFF, position == len(payloads) - 1,
                                    payload, keyframe=encoded.keyframe and position == 0)

    def _end_h264(self, watched: Mapping[tuple[int, int], H264Size]) -> None:
        """Sizes nobody receives now lose their encoder (it is made again, starting on a
        key frame, when a unit of that size comes); sizes without a subscriber go."""
        for size, encode in list(self.h264_sizes.items()):
            if size not in watched:
                encode.encoder = None
                if not encode.output.consumers:
                    del self.h264_sizes[size]

    def _unit_canvas(self, units: Mapping[tuple[int, int], H264Size]) -> Compositor:
        """What the units' sizes are made from: the room's compositor when none of them is
        larger (smaller sizes are scaled down from it), else one composing at the largest,
        made when that size first appears with the room's sources in it."""
        largest = max(units, key=lambda size: size[0] * size[1], default=None)
        if largest is None or (largest[0] <= self.compositor.width and largest[1] <= self.compositor.height):
            self._large = None
            return self.compositor
        if self._large is None or (self._large.width, self._large.height) != largest:
            self._large = Compositor(largest[0], largest[1], fps=self.fps, layout=self.compositor.layout)
            for source in [*self.sources, *map(screen_source, self.screens)]:
                self._large.add_source(source, self._names.get(source, ""))
            self._large.set_speaker(self._speaker)
            self._large.set_presentation(self.compositor.presentation)
            # Its tiles fill as the shown cameras' next pictures are decoded; a key frame
            # from each brings a still one in at once.
            for source in self.decoders.selected:
                self._video_producer(source).request_keyframe()
        return self._large

    def _send_h264(self, encode: H264Size, frame: Any, timestamp: int) -> None:
        width, height = encode.size
        if encode.encoder is None:
            encode.encoder = H264Encoder(width, height, self.fps)
            encode.keyframe = True
        if (frame.width, frame.height) != encode.size:
            scaled = encode.scaler.reformat(frame, width=width, height=height, format="yuv420p",
                                            interpolation=Interpolation.AREA)
            scaled.pts, scaled.time_base = frame.pts, frame.time_base
            frame = scaled
        encode.since_keyframe += 1
        # One key frame a second at most, however many units ask (as for VP8).
        keyframe = encode.keyframe and encode.since_keyframe >= self.fps
        if keyframe:
            encode.keyframe = False
        # Real time without B-frames: one access unit out for each frame in, at once.
        for access_unit, _, is_key in encode.encoder.encode(frame, keyframe):
            if is_key:
                encode.since_keyframe = 0
            payloads = packetize_h264(access_unit)
            for position, payload in enumerate(payloads):
                encode.output.emit(timestamp, position == len(payloads) - 1,
                                   payload, keyframe=is_key and position == 0)

    def start_recording(self, path: Path) -> None:
        if self.recorder is not None:
            return
        # OSError (PyAV's file errors are OSErrors too): a folder that cannot be made or
        # written, a full disk. Nothing is left behind then, not even the claimed name.
        path.parent.mkdir(parents=True, exist_ok=True)
        path = claim_recording_path(path)
        try:
            recorder = Recorder(path, video_size=(self.compositor.width, self.compositor.height),
                                fps=self.fps)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self.recorder = recorder
        self.recording_path = path
        self.compositor.request_keyframe()
        self.start()
        self._watch_composite()

    def stop_recording(self) -> Path | None:
        recorder, self.recorder = self.recorder, None
        path, self.recording_path = self.recording_path, None
        if recorder is not None:
            recorder.close()
        return path

    def _check_recorder(self) -> None:
        """A recording whose file failed to write (a full disk) stops here, and its owner
        is told after this tick (which must not see the mixer change under it)."""
        recorder = self.recorder
        if recorder is None or recorder.failed is None:
            return
        path = self.stop_recording()
        logger.warning("mixer of %s: recording %s stopped: %s", self.room_name, path, recorder.failed)
        if self.on_recording_failed is not None and path is not None:
            asyncio.get_running_loop().call_soon(self.on_recording_failed, path, recorder.failed)

    def close(self) -> None:
        self.stop_recording()
        for participant_id in list(self._tick_read):
            self.read_on_tick(participant_id, [])
        self._audio_ticker.stop()
        self._video_ticker.stop()
        for participant_id in [*self.sources, *self.screens]:
            self.remove_source(participant_id)

    def describe(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "screens": list(self.screens),
                "listeners": list(self.audio.listeners),
                "recording": str(self.recording_path) if self.recording_path else None}


def claim_recording_path(path: Path) -> Path:
    """``path``, or ``NAME-2.webm``, ``NAME-3.webm`` ... where it is taken, created empty
    here so that nothing else takes it. The front names a recording by the second it
    starts: one stopped and started again within that second must not overwrite it."""
    candidate, number = path, 1
    while True:
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return candidate
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")


def screen_source(participant_id: str) -> str:
    """A shared screen's name among the compositors' sources (a camera's is its owner's id)."""
    return f"{participant_id}:screen"


def screen_owner(source: str) -> str | None:
    """Whose screen a compositor's source is, or None for a camera."""
    return source[:-len(":screen")] if source.endswith(":screen") else None
