"""Opus packets and codecs for the mixer: TOC parsing, a concealing decoder, an encoder.

Everything here works on plain bytes and int16 numpy arrays of mono 48 kHz PCM, so
the jitter buffer and the mixer never see PyAV objects. The codecs call libopus
directly (`libopus.py`: a tick's decodes and encodes are the mixer's fixed cost) and
go through PyAV only where that library cannot be loaded.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

from . import libopus

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, the tick of the mixer
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

# Frame size in 48 kHz samples for each of the 32 TOC configurations (RFC 6716, 3.1).
_SILK = (480, 960, 1920, 2880)
_HYBRID = (480, 960)
_CELT = (120, 240, 480, 960)
_CONFIG_SAMPLES = tuple(
    _SILK[c % 4] if c < 12 else _HYBRID[c % 2] if c < 16 else _CELT[c % 4] for c in range(32)
)
MAX_PACKET_SAMPLES = 5760  # 120 ms, the longest packet Opus allows


def packet_samples(payload: bytes) -> int:
    """Duration of an Opus packet in 48 kHz samples, from its TOC byte alone.

    Lets the jitter buffer account for time without decoding. Returns 0 for a packet
    that cannot be Opus (empty, or a frame count that the format forbids).
    """
    if not payload:
        return 0
    toc = payload[0]
    per_frame = _CONFIG_SAMPLES[toc >> 3]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        if len(payload) < 2:
            return 0
        count = payload[1] & 0x3F
    total = per_frame * count
    return total if 0 < total <= MAX_PACKET_SAMPLES else 0


def plc_packet(last_toc: int) -> bytes:
    """A TOC-only packet: libopus decodes a frame of length 0 as a lost frame.

    This is how the decoder's real packet loss concealment (pitch-following, decaying)
    is reached through FFmpeg, whose API has no "decode nothing" call.
    """
    return bytes([last_toc & 0xFC])


class OpusDecoder:
    """A mono 48 kHz libopus decoder that never raises on bad input.

    `decode` returns int16 PCM or None when the payload could not be decoded (garbage,
    truncated); the caller conceals such a frame like a lost one.
    """

    def __init__(self) -> None:
        self._direct = libopus.Decoder() if libopus.available() else None
        self._codec = self._open() if self._direct is None else None
        self.errors = 0

    @staticmethod
    def _open() -> av.AudioCodecContext:
        codec = av.CodecContext.create("libopus", "r")
        codec.sample_rate = SAMPLE_RATE
        codec.layout = "mono"  # libopus downmixes a stereo sender for us
        codec.format = "s16"
        return codec

    def decode(self, payload: bytes) -> np.ndarray | None:
        if self._direct is not None:
            pcm = self._direct.decode(payload)
            if pcm is None:
                self.errors += 1
                # As below: no state of a stream that went wrong is carried on.
                self._direct.reset()
            return pcm
        assert self._codec is not None
        try:
            frames = self._codec.decode(av.Packet(payload))
        except (av.FFmpegError, ValueError):
            self.errors += 1
            # A decoder that saw garbage may hold a damaged state; start afresh.
            self._codec = self._open()
            return None
        if not frames:
            return None
        if len(frames) == 1:
            return frames[0].to_ndarray()[0]
        return np.concatenate([f.to_ndarray()[0] for f in frames])


class OpusEncoder:
    """A mono 48 kHz libopus encoder: one 20 ms int16 frame in, one packet out."""

    def __init__(self, bitrate: int = 32000, complexity: int | None = None) -> None:
        self._direct: libopus.Encoder | None = None
        self._codec: av.AudioCodecContext | None = None
        self._pts = 0
        if libopus.available():
            # 10 is what FFmpeg's wrapper asks for unless told otherwise.
            self._direct = libopus.Encoder(bitrate, 10 if complexity is None else complexity)
            return
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = SAMPLE_RATE
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = bitrate
        codec.time_base = TIME_BASE
        options = {"application": "voip", "frame_duration": "20"}
        if complexity is not None:
            options["compression_level"] = str(complexity)
        codec.options = options
        self._codec = codec

    def encode(self, pcm: np.ndarray) -> bytes:
        if self._direct is not None:
            return self._direct.encode(pcm)
        assert self._codec is not None
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += pcm.shape[-1]
        packets = self._codec.encode(frame)
        # libopus with a fixed 20 ms frame returns exactly one packet per frame; join
        # defensively so a surprise never desynchronises the tick.
        if len(packets) == 1:
            return bytes(packets[0])
        return b"".join(bytes(p) for p in packets)
