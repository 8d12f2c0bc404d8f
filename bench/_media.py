"""Pre-encoded media for bench.sfu: encoded once, then sent as RTP payloads by every publisher.

VP8 640x360 at 30 fps, about 450 kbit/s, a keyframe every 30 frames (a moving test
pattern), packetized per RFC 7741 with a one-byte payload descriptor; Opus 20 ms mono at
32 kbit/s (a tone with a little noise, so that no two packets in a loop are equal, which
the delay measurement relies on to match received packets to sent ones).

For simulcast (bench.sfu --simulcast) the same pictures are also encoded at a half and a
quarter of the resolution, as a browser's lower layers are, at the bitrates the call
page gives its layers scaled to the full layer's (mcu/simulcast.py NOMINAL_BPS).
"""

from __future__ import annotations

import fractions
import math
from dataclasses import dataclass

import av
import numpy as np

from mcu import simulcast

VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS = 640, 360, 30
VIDEO_BITRATE = 450_000
KEYFRAME_INTERVAL = 30  # frames
VP8_CHUNK = 1100  # bytes of VP8 data per RTP packet at most
AUDIO_RATE = 48000
AUDIO_FRAME = 960  # 20 ms
AUDIO_BITRATE = 32_000


@dataclass(frozen=True)
class VideoLayer:
    """One simulcast layer of the video: the same pictures at 1/``scale_down`` the size."""

    rid: str
    scale_down: int
    frames: list[list[bytes]]  # per frame: its RTP payloads
    keyframes: list[bool]

    @property
    def kbps(self) -> float:
        return sum(len(p) for frame in self.frames for p in frame) * 8 * VIDEO_FPS / len(self.frames) / 1000


@dataclass(frozen=True)
class EncodedMedia:
    """RTP payloads ready to send, looped by the publishers."""

    video_frames: list[list[bytes]]  # per frame: its RTP payloads (descriptor included)
    video_keyframes: list[bool]
    audio_frames: list[bytes]  # one Opus packet per 20 ms
    audio_level: int  # RFC 6464 level of the tone, -dBov
    # Simulcast layers, low to high; the top one is video_frames itself. Empty: not encoded.
    layers: tuple[VideoLayer, ...] = ()

    @property
    def video_kbps(self) -> float:
        octets = sum(len(p) for frame in self.video_frames for p in frame)
        return octets * 8 * VIDEO_FPS / len(self.video_frames) / 1000

    @property
    def video_pps(self) -> float:
        return sum(len(frame) for frame in self.video_frames) * VIDEO_FPS / len(self.video_frames)


def vp8_payloads(frame: bytes) -> list[bytes]:
    """RFC 7741: 1-byte descriptor, S=1 and PID 0 on the first packet, chunks after."""
    chunks = [frame[i:i + VP8_CHUNK] for i in range(0, len(frame), VP8_CHUNK)] or [b""]
    return [(b"\x10" if i == 0 else b"\x00") + chunk for i, chunk in enumerate(chunks)]


def _test_pattern(index: int, texture: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                  scale_down: int = 1) -> np.ndarray:
    """A yuv420p picture: a scrolling blocky texture over a moving ramp, and a moving disc;
    ``scale_down``: the full picture averaged down, as a browser's lower layers are."""
    shift = (index * 3) % VIDEO_WIDTH
    luma = 0.5 * texture[:, shift:shift + VIDEO_WIDTH] + 0.5 * ((xx + 2 * index) % 256)
    centre_x = (index * 5) % VIDEO_WIDTH
    luma[(yy - VIDEO_HEIGHT // 2) ** 2 + (xx - centre_x) ** 2 < 60 ** 2] = 235
    if scale_down > 1:
        height, width = VIDEO_HEIGHT // scale_down, VIDEO_WIDTH // scale_down
        luma = luma.reshape(height, scale_down, width, scale_down).mean(axis=(1, 3))
    height, width = luma.shape
    image = np.full((height * 3 // 2, width), 128, np.uint8)
    image[:height] = luma.astype(np.uint8)
    return image


def encode_video(frames: int, scale_down: int = 1,
                 bitrate: int = VIDEO_BITRATE) -> tuple[list[list[bytes]], list[bool]]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = VIDEO_WIDTH // scale_down, VIDEO_HEIGHT // scale_down
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, VIDEO_FPS)
    codec.framerate = VIDEO_FPS
    codec.bit_rate = bitrate
    codec.gop_size = KEYFRAME_INTERVAL
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                     "keyint_min": str(KEYFRAME_INTERVAL)}
    rng = np.random.default_rng(7)
    small = rng.integers(0, 255, (VIDEO_HEIGHT // 8, 2 * VIDEO_WIDTH // 8)).astype(np.float32)
    texture = np.kron(small, np.ones((8, 8), np.float32))
    yy, xx = np.mgrid[0:VIDEO_HEIGHT, 0:VIDEO_WIDTH]
    packets: list[av.Packet] = []
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(_test_pattern(index, texture, xx, yy, scale_down),
                                           format="yuv420p")
        frame.pts = index
        if index % KEYFRAME_INTERVAL == 0:
            frame.pict_type = av.video.frame.PictureType.I
        packets += codec.encode(frame)
    packets += codec.encode(None)
    payloads = [vp8_payloads(bytes(p)) for p in packets]
    keyframes = [bool(p.is_keyframe) for p in packets]
    if not keyframes or not keyframes[0]:
        raise RuntimeError("the VP8 encoder did not start with a keyframe")
    return payloads, keyframes


def encode_audio(frames: int, frequency: float = 441.3) -> tuple[list[bytes], int]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_RATE
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = AUDIO_BITRATE
    codec.time_base = fractions.Fraction(1, AUDIO_RATE)
    codec.options = {"application": "voip", "frame_duration": "20"}
    rng = np.random.default_rng(11)
    t = np.arange(frames * AUDIO_FRAME) / AUDIO_RATE
    signal = 0.25 * np.sin(2 * math.pi * frequency * t) + rng.normal(0, 0.01, len(t))
    pcm = (signal * 32767).astype(np.int16)
    out: list[bytes] = []
    for index in range(frames):
        frame = av.AudioFrame.from_ndarray(pcm[None, index * AUDIO_FRAME:(index + 1) * AUDIO_FRAME],
                                           format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = index * AUDIO_FRAME
        out += [bytes(p) for p in codec.encode(frame)]
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    level = 127 if rms < 1 else int(min(127, round(-20 * math.log10(rms / 32768))))
    return out, level


def encode_media(seconds: float = 10.0, layers: bool = False) -> EncodedMedia:
    """Encode ``seconds`` of each (a whole number of keyframe intervals of video);
    ``layers``: the simulcast layers too (mcu/simulcast.py RIDS, low to high)."""
    video_frames = max(1, round(seconds * VIDEO_FPS / KEYFRAME_INTERVAL)) * KEYFRAME_INTERVAL

    def encoded(scale_down: int, bitrate: int) -> tuple[list[list[bytes]], list[bool]]:
        video, keyframes = encode_video(video_frames, scale_down, bitrate)
        # Loop on a keyframe: drop whatever the encoder flushed past the last full interval.
        # Every layer has a keyframe at the same frames: the server moves a subscriber
        # to another layer at that layer's keyframe.
        return video[:video_frames], keyframes[:video_frames]

    video, keyframes = encoded(1, VIDEO_BITRATE)
    encoded_layers: list[VideoLayer] = []
    if layers:
        top_bps = simulcast.NOMINAL_BPS[-1]
        for rid, scale_down, nominal_bps in zip(simulcast.RIDS, simulcast.SCALE_DOWN,
                                                simulcast.NOMINAL_BPS, strict=True):
            frames, keys = (video, keyframes) if scale_down == 1 else encoded(
                scale_down, round(VIDEO_BITRATE * nominal_bps / top_bps))
            encoded_layers.append(VideoLayer(rid, scale_down, frames, keys))
    audio, level = encode_audio(round(seconds * AUDIO_RATE / AUDIO_FRAME))
    return EncodedMedia(video, keyframes, audio, level, tuple(encoded_layers))
