"""The mixing unit of one room: one mixed sound and one composed picture, and recording.

Sources are every participant's microphone and camera, tapped from their producers.
Outputs are two producers of the room's own ("mix" audio, "composite" video), which
mixed participants subscribe to like any other producer: the forwarder's consumers then
rewrite, gate, retransmit and report on them as usual. Audio is mix-minus: a listener
who is talking gets its own mix without its own voice; everyone else shares one encode.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcu import codecs, rtp
from mcu.forwarding import Consumer, Producer, forward_to_all
from mcu.mixer import AudioMixer, Compositor, Recorder, SelectiveDecoder, Vp8Depacketizer, packetize
from mcu.mixer.h264 import H264Depacketizer, H264Encoder, packetize_h264
from mcu.mixer.pacer import run_ticks
from mcu.stats import WorkerCounters

logger = logging.getLogger(__name__)

MIXER_OWNER = "mixer"
AUDIO_TICK_S = 0.020
OPUS_PAYLOAD_TYPE = 111  # placeholder until a consumer's own negotiated type replaces it
VP8_PAYLOAD_TYPE = 96


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

    def _feedback(self, packet: bytes) -> None:
        if self._on_keyframe_request is not None and packet[1] == rtp.RTCP_PSFB:
            self._on_keyframe_request()

    def emit(self, timestamp: int, marker: bool, payload_for: Callable[[Consumer], bytes],
             keyframe: bool = False) -> None:
        """Send one RTP packet's worth of payload to every consumer (it may differ per consumer)."""
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets += 1
        # Our clock is the mapping for sender reports: now <-> this timestamp.
        ntp_seconds, ntp_fraction = rtp.ntp_now()
        self.sender_report = (time.monotonic(), ntp_seconds + ntp_fraction / (1 << 32), timestamp)
        extension = b"" if self.kind == "audio" else rtp.abs_send_time_block()
        view = rtp.RtpView(self.payload_type, marker, self._seq, timestamp, self.ssrc, 0, 0, {})
        # Most listeners share one payload (the mix), a talker has its own: one send call
        # for each distinct payload, with all the legs that get it.
        groups: dict[int, tuple[bytes, list[Consumer]]] = {}
        for consumer in self.consumers:
            payload = payload_for(consumer)
            if payload:
                groups.setdefault(id(payload), (payload, []))[1].append(consumer)
        for payload, consumers in groups.values():
            try:
                forward_to_all(tuple(consumers), view, extension, payload, keyframe)
            except Exception:
                self.counters.handler_errors += 1
                logger.exception("mixed legs %s failed", [c.id for c in consumers])


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
        self.audio_out = MixOutput(f"{room_name}-mix", "audio", counters)
        self.video_out = MixOutput(f"{room_name}-composite", "video", counters,
                                   on_keyframe_request=self.compositor.request_keyframe)
        # The same composite in H.264, for room units (mcu/unit.py): encoded only while
        # one of them receives it, from the same composed frame as the VP8 one.
        self.video_out_h264 = MixOutput(f"{room_name}-composite-h264", "video", counters,
                                        on_keyframe_request=self._request_h264_keyframe,
                                        codec=codecs.H264)
        self._h264: H264Encoder | None = None
        self._h264_keyframe = True
        self._h264_since_keyframe = 1 << 30  # the first one may be a key frame at once
        self.sources: dict[str, tuple[Producer, Producer]] = {}  # participant -> (mic, camera)
        self.recorder: Recorder | None = None
        self.recording_path: Path | None = None
        self._picture_id = random.getrandbits(15)
        # The cameras are decoded and the composite composed and encoded only while
        # somebody receives it or it is recorded: a room of audio-only units costs no
        # video work at all.
        self.composing = False
        self.frames_composed = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    # Sources ------------------------------------------------------------------------

    def add_source(self, participant_id: str, name: str, microphone: Producer, camera: Producer) -> None:
        if participant_id in self.sources:
            return
        self.sources[participant_id] = (microphone, camera)
        self.audio.add_source(participant_id)
        self.compositor.add_source(participant_id, name)
        microphone.add_tap(self._audio_tap(participant_id))
        camera.add_tap(self._video_tap(participant_id, camera))
        self._select_decoders()

    def remove_source(self, participant_id: str) -> None:
        producers = self.sources.pop(participant_id, None)
        if producers is None:
            return
        for producer in producers:
            producer.clear_taps()
        self.audio.remove_source(participant_id)
        self.compositor.remove_source(participant_id)
        self.depacketizers.pop(participant_id, None)
        self._select_decoders()

    def _select_decoders(self) -> None:
        for newly_shown in self.decoders.select(self.compositor.shown()):
            self.sources[newly_shown][1].request_keyframe()

    def _audio_tap(self, participant_id: str) -> Callable[[bytes, rtp.RtpView], None]:
        def tap(data: bytes, view: rtp.RtpView) -> None:
            level = view.extensions.get(rtp.EXT_AUDIO_LEVEL)
            self.audio.push(participant_id, view.sequence_number, view.timestamp,
                            data[view.payload_start:view.payload_end],
                            level[0] & 0x7F if level else None, time.monotonic())
        return tap

    def _video_tap(self, participant_id: str, camera: Producer) -> Callable[[bytes, rtp.RtpView], None]:
        def tap(data: bytes, view: rtp.RtpView) -> None:
            if not self.composing or participant_id not in self.decoders.selected:
                return  # not on show, or nobody watches: not even depacketized
            codec = camera.codec or codecs.VP8
            known = self.depacketizers.get(participant_id)
            if known is None or known[0] != codec:  # the first packet, or renegotiated
                known = self.depacketizers[participant_id] = (
                    codec, H264Depacketizer() if codec == codecs.H264 else Vp8Depacketizer())
            frame = known[1].push(view.sequence_number, view.timestamp, view.marker,
                                  data[view.payload_start:view.payload_end])
            if frame is None:
                return
            picture = self.decoders.decode(participant_id, frame.data, codec)
            if picture is not None:
                self.compositor.push_frame(participant_id, picture)
            elif frame.after_gap or self.decoders.needs_keyframe(participant_id):
                camera.request_keyframe()  # throttled by the producer
        return tap

    # Listeners ------------------------------------------------------------------------

    def add_listener(self, participant_id: str) -> None:
        self.audio.add_listener(participant_id, participant_id if participant_id in self.sources else None)

    def remove_listener(self, participant_id: str) -> None:
        self.audio.remove_listener(participant_id)

    def set_speaker(self, participant_id: str | None) -> None:
        if participant_id in self.sources or participant_id is None:
            self.compositor.set_speaker(participant_id)

    # Running --------------------------------------------------------------------------

    @property
    def needed(self) -> bool:
        return bool(self.audio_out.consumers or self.video_out.consumers
                    or self.video_out_h264.consumers or self.recorder)

    def composite_for(self, codec: str | None) -> MixOutput:
        """The composite a mixed subscriber of that video codec receives."""
        return self.video_out_h264 if codec == codecs.H264 else self.video_out

    def _request_h264_keyframe(self) -> None:
        self._h264_keyframe = True

    def start(self) -> None:
        if self._tasks:
            return
        self._stop.clear()
        self._tasks = [
            asyncio.ensure_future(run_ticks(AUDIO_TICK_S, self._audio_tick, stop=self._stop)),
            asyncio.ensure_future(run_ticks(1 / self.fps, self._video_tick, stop=self._stop)),
        ]

    def _audio_tick(self, index: int) -> None:
        mix = self.audio.tick()
        if self.recorder is not None:
            self.recorder.write_audio(mix.shared, mix.timestamp)
        if self.audio_out.consumers:
            self.audio_out.emit(mix.timestamp & 0xFFFFFFFF, False,
                                lambda consumer: mix.packet_for(consumer.subscriber_id))

    def composite_watched(self, output: MixOutput | None = None) -> bool:
        """Somebody receives the composite now (a negotiated leg, not paused), or it is
        recorded. A unit that declined video has no leg that sends. ``output``: that
        encoding of it only (the recording is VP8)."""
        if output is None:
            return self.composite_watched(self.video_out) or self.composite_watched(self.video_out_h264)
        return (output is self.video_out and self.recorder is not None) or any(
            consumer.leg.sink is not None and not consumer.leg.paused for consumer in output.consumers)

    def _video_tick(self, index: int) -> None:
        recorder = self.recorder
        if recorder is not None and recorder.wants_keyframe:
            self.compositor.request_keyframe()
        watched = self.composite_watched()
        if watched and not self.composing:
            # Cameras were not decoded meanwhile: start each shown one on a keyframe.
            for participant_id in self.decoders.selected:
                self.sources[participant_id][1].request_keyframe()
            self.compositor.request_keyframe()
            self._h264_keyframe = True
        self.composing = watched
        if not watched:
            return
        frame = self.compositor.compose()
        if self.composite_watched(self.video_out_h264):
            self._send_h264(frame)
        if not self.composite_watched(self.video_out):
            return
        for encoded in self.compositor.encode(frame):
            self.frames_composed += 1
            if recorder is not None:
                recorder.write_video(encoded)
            self._picture_id = (self._picture_id + 1) & 0x7FFF
            payloads = packetize(encoded.data, self._picture_id)
            for position, payload in enumerate(payloads):
                self.video_out.emit(encoded.timestamp & 0xFFFFFFFF, position == len(payloads) - 1,
                                    lambda consumer, p=payload: p,
                                    keyframe=encoded.keyframe and position == 0)

    def _send_h264(self, frame: Any) -> None:
        if self._h264 is None:
            self._h264 = H264Encoder(self.compositor.width, self.compositor.height, self.fps)
            self._h264_keyframe = True
        self._h264_since_keyframe += 1
        # One key frame a second at most, however many units ask (as for VP8).
        keyframe = self._h264_keyframe and self._h264_since_keyframe >= self.fps
        if keyframe:
            self._h264_keyframe = False
        for access_unit, timestamp, is_key in self._h264.encode(frame, keyframe):
            if is_key:
                self._h264_since_keyframe = 0
            payloads = packetize_h264(access_unit)
            for position, payload in enumerate(payloads):
                self.video_out_h264.emit(timestamp & 0xFFFFFFFF, position == len(payloads) - 1,
                                         lambda consumer, p=payload: p,
                                         keyframe=is_key and position == 0)

    def start_recording(self, path: Path) -> None:
        if self.recorder is not None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(path, video_size=(self.compositor.width, self.compositor.height),
                                 fps=self.fps)
        self.recording_path = path
        self.compositor.request_keyframe()
        self.start()

    def stop_recording(self) -> Path | None:
        recorder, self.recorder = self.recorder, None
        path, self.recording_path = self.recording_path, None
        if recorder is not None:
            recorder.close()
        return path

    def close(self) -> None:
        self.stop_recording()
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        for participant_id in list(self.sources):
            self.remove_source(participant_id)

    def describe(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "listeners": list(self.audio.listeners),
                "recording": str(self.recording_path) if self.recording_path else None}
