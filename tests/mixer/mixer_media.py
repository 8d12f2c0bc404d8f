"""Real media for the mixer tests: Opus tones and VP8 colour patterns made with PyAV.

The inputs are encoded here with PyAV directly, not with the code under test.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

RATE = 48000
FRAME = 960


def tone(freq: float, seconds: float, amplitude: float = 6000.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)


def opus_packets(pcm: np.ndarray) -> list[bytes]:
    """Encode mono int16 PCM into 20 ms Opus packets, as a browser would send them."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = RATE
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = 48000
    codec.time_base = fractions.Fraction(1, RATE)
    codec.options = {"application": "audio", "frame_duration": "20"}
    packets: list[bytes] = []
    for i in range(len(pcm) // FRAME):
        frame = av.AudioFrame.from_ndarray(
            pcm[None, i * FRAME : (i + 1) * FRAME], format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = i * FRAME
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets


def decode_opus(packets: list[bytes]) -> np.ndarray:
    """What a receiving browser would play: decode a listener's packets in order."""
    codec = av.CodecContext.create("opus", "r")
    codec.sample_rate = RATE
    codec.layout = "mono"
    codec.format = "s16"
    out = []
    for p in packets:
        for frame in codec.decode(av.Packet(p)):
            out.append(frame.to_ndarray().reshape(-1).astype(np.float32))
    return np.concatenate(out)


def band_energy(pcm: np.ndarray, freq: float, width: float = 30.0) -> float:
    """Share of the signal's energy within `width` Hz of `freq` (0..1)."""
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
    total = spectrum.sum() or 1.0
    return float(spectrum[np.abs(freqs - freq) <= width].sum() / total)


def level_of(pcm: np.ndarray) -> int:
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 127 if rms < 1 else int(min(127, round(-20 * np.log10(rms / 32768))))


def vp8_frames(
    colour: tuple[int, int, int], count: int, size: tuple[int, int] = (320, 240), fps: int = 30
) -> list[bytes]:
    """VP8 frames of a solid colour with a moving white bar, first one a keyframe."""
    w, h = size
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = w, h
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = 500_000
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    frames = []
    img = np.empty((h, w, 3), dtype=np.uint8)
    for i in range(count):
        img[:] = colour
        x = (i * 7) % (w - 16)
        img[: h // 8, x : x + 16] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frames += [bytes(p) for p in codec.encode(frame)]
    return frames
