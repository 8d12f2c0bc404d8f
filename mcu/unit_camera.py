"""A room unit's camera for browsers that receive VP8: decoded and encoded again, once.

Units send H.264 (mcu/unit.py). A room that forwards H.264 hands it to browsers as it
came. Most rooms forward VP8, every browser's codec, and their browsers could not show
it. For them the unit's camera is decoded and encoded again in VP8 by this object: once
per unit whatever the number of browsers, one layer at the unit's own size (at most
:data:`MAX_WIDTH` x :data:`MAX_HEIGHT`), and only while some browser's slot shows it (no
slot: not even depacketized). The VP8 stream is a producer of the unit's like any
camera, ranked with the room's VP8 cameras, through the same C fan-out.

It stays on its worker: a room spread over several workers pipes the unit's H.264
camera, and its browsers elsewhere see the unit in VP8 rooms only in the composite.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import av

from mcu import codecs, rtp
from mcu.forwarding import Consumer, Producer
from mcu.mixer.h264 import H264Decoder, H264Depacketizer
from mcu.mixer.vp8 import Vp8Encoder
from mcu.mixer.vp8rtp import packetize
from mcu.stats import WorkerCounters

logger = logging.getLogger(__name__)

VP8_PAYLOAD_TYPE = 96  # ours: each browser's leg writes the payload type it negotiated
MAX_WIDTH, MAX_HEIGHT = 1280, 720  # a unit's 1080p camera is shown at 720p: a bound on CPU
FPS = 30.0  # for the encoder's bit rate; frames are encoded as the unit sends them


class CameraForBrowsers(Producer):
    """The VP8 version of one unit's H.264 ``camera``: a producer that browsers' slots
    show. Its first viewer taps the unit's camera, its last one leaves it untapped (C
    then hands none of its packets to Python for this). ``deliver`` takes each VP8 RTP
    packet into the unit's C fan-out."""

    def __init__(self, unit_id: str, camera: Producer, counters: WorkerCounters,
                 deliver: Callable[[bytes], None]) -> None:
        super().__init__(f"{unit_id}-camera-vp8", unit_id, "video", "camera", counters, codec=codecs.VP8)
        self.camera = camera
        self.deliver = deliver
        self.local_only = True  # see the module's text
        self.payload_type = VP8_PAYLOAD_TYPE
        self.ssrc = secrets.randbits(32) or 1
        # A browser's PLI for it (through request_keyframe): the next frame is a key frame.
        self.feedback = self._keyframe_asked
        self._depacketizer = H264Depacketizer()
        self._decoder = H264Decoder()
        self._encoder: Vp8Encoder | None = None
        self._keyframe = True
        self._pts = 0
        self._seq = secrets.randbits(16)
        self._picture_id = secrets.randbits(15)
        self._ts_offset = secrets.randbits(32)
        self.frames_encoded = 0

    def attach(self, consumer: Consumer) -> None:
        super().attach(consumer)
        if len(self.consumers) == 1:
            self.camera.add_tap(self._tap)

    def detach(self, consumer: Consumer) -> None:
        super().detach(consumer)
        if not self.consumers:
            self.stop()

    def stop(self) -> None:
        """Nobody shows it (or the unit left): untapped; a next viewer starts afresh,
        on a key frame."""
        self.camera.remove_tap(self._tap)
        self._depacketizer, self._decoder, self._keyframe = H264Depacketizer(), H264Decoder(), True

    def _keyframe_asked(self, packet: bytes) -> None:
        self._keyframe = True

    def _tap(self, data: bytes, view: rtp.RtpView) -> None:
        frame = self._depacketizer.push(view.sequence_number, view.timestamp, view.marker,
                                        data[view.payload_start:view.payload_end])
        if frame is None:
            return
        picture = self._decoder.decode(frame.data)
        if picture is None:
            if frame.after_gap or self._decoder.needs_keyframe:
                self.camera.request_keyframe()  # from the unit (throttled by the producer)
            return
        self._encode(picture, frame.timestamp)

    def _encode(self, picture: av.VideoFrame, timestamp: int) -> None:
        width, height = picture.width, picture.height
        if width > MAX_WIDTH or height > MAX_HEIGHT:
            scale = min(MAX_WIDTH / width, MAX_HEIGHT / height)
            width, height = int(width * scale), int(height * scale)
        width, height = width & ~1, height & ~1  # 4:2:0 wants even sizes
        if self._encoder is None or (self._encoder.width, self._encoder.height) != (width, height):
            self._encoder = Vp8Encoder(width, height, fps=FPS)
            self._keyframe = True
        if (picture.width, picture.height) != (width, height) or picture.format.name != "yuv420p":
            picture = picture.reformat(width=width, height=height, format="yuv420p")
        picture.pts = self._pts  # the encoder's own clock; the packets carry the unit's
        self._pts += int(90000 / FPS)
        keyframe, self._keyframe = self._keyframe, False
        for encoded in self._encoder.encode(picture, keyframe=keyframe):
            self._send(encoded.data, (timestamp + self._ts_offset) & 0xFFFFFFFF)

    def _send(self, frame: bytes, timestamp: int) -> None:
        payloads = packetize(frame, self._picture_id)
        self._picture_id = (self._picture_id + 1) & 0x7FFF
        self.frames_encoded += 1
        ssrc = self.ssrc
        assert ssrc is not None
        for index, payload in enumerate(payloads):
            self._seq = (self._seq + 1) & 0xFFFF
            self.deliver(rtp.rtp_header(VP8_PAYLOAD_TYPE, index == len(payloads) - 1, self._seq,
                                        timestamp, ssrc, False) + payload)
