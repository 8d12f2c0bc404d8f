"""Benchmark of the mixing unit: CPU per mixed listener, and per composite.

    python -m bench.mixer

prints one JSON object. Inputs are real media made up front (Opus packets of voiced
tones with noise, VP8 streams of textured moving pictures), so the measured loop is
only what a room would run: pushes and ticks of the mixer, decode/compose/encode of
the compositor. CPU is the process's CPU time (`time.process_time`) over a fixed
number of ticks, as a percentage of one core for the media time those ticks cover.
"""

from __future__ import annotations

import fractions
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np

from mcu.mixer.audio import AudioMixer
from mcu.mixer.composite import Compositor
from mcu.mixer.opus import OpusEncoder
from mcu.mixer.vp8 import SelectiveDecoder
from mcu.unit_audio import CODECS as UNIT_CODECS
from mcu.unit_audio import NarrowbandEncoder, Transcoder

RATE = 48000
FRAME = 960
AUDIO_TICKS = 500  # 10 s of audio per size
WARMUP_TICKS = 50
VIDEO_FPS = 30
VIDEO_FRAMES = 60  # 2 s of composite per size
VIDEO_WARMUP = 10


def _opus(pcm: np.ndarray) -> list[bytes]:
    encoder = OpusEncoder(32000)
    packets = (encoder.encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(len(pcm) // FRAME))
    return [packet for packet in packets if packet]


def _level(pcm: np.ndarray) -> int:
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 127 if rms < 1 else int(min(127, round(-20 * np.log10(rms / 32768))))


def _voice(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced, syllable-modulated tone with harmonics and noise: speech-like load."""
    t = np.arange(int(seconds * RATE)) / RATE
    sig = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)  # four syllables a second
    noise = rng.normal(0, 0.05, len(t))
    return (4000 * (sig * envelope + noise)).astype(np.int16)


def _room_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A quiet participant: microphone noise at about -70 dBov."""
    return rng.normal(0, 10, int(seconds * RATE)).astype(np.int16)


def bench_audio(
    n: int,
    talkers: int,
    voices: list[tuple[list[bytes], int]],
    quiet: tuple[list[bytes], int],
) -> dict:
    mixer = AudioMixer(max_talkers=3)
    for i in range(n):
        mixer.add_source(i)
        mixer.add_listener(i, i)
    cpu = 0.0
    for tick in range(WARMUP_TICKS + AUDIO_TICKS):
        if tick == WARMUP_TICKS:
            cpu = time.process_time()
        arrival = tick * 0.02
        for i in range(n):
            packets, level = voices[i] if i < talkers else quiet
            payload = packets[tick % len(packets)]
            mixer.push(i, tick & 0xFFFF, tick * FRAME, payload, level, arrival)
        mixer.tick()
    used = time.process_time() - cpu
    pct = used / (AUDIO_TICKS * FRAME / RATE) * 100
    return {
        "n": n,
        "talkers": talkers,
        "cpu_pct_per_listener": round(pct / n, 3),
        "cpu_pct_room": round(pct, 2),
        "encodes_per_tick": round(mixer.stats.encodes / mixer.stats.ticks, 2),
        "decodes_per_tick": round(mixer.stats.decodes / mixer.stats.ticks, 2),
    }


def _cpu_pct_per_tick(run: Callable[[Any], object], inputs: Sequence[Any]) -> float:
    """% of one core that ``run(input)`` called once a tick costs, over AUDIO_TICKS ticks."""
    started = time.process_time()
    for tick in range(AUDIO_TICKS):
        run(inputs[tick % len(inputs)])
    return round((time.process_time() - started) / (AUDIO_TICKS * FRAME / RATE) * 100, 3)


def bench_unit_codecs(pcm: np.ndarray) -> dict:
    """Room units on G.722/G.711, per codec, as % of a core: the mix they receive, encoded
    once a tick from the mix's PCM for all of them that are not talking (and once more
    per talker: its own mix), against each unit's own Opus decode and encode, which is
    what each unit cost before the mixer made it; and what each unit's own sound costs
    (decoded, resampled, encoded to Opus for the room), which stays per unit."""
    frames = [pcm[i * FRAME:(i + 1) * FRAME] for i in range(len(pcm) // FRAME)]
    opus = _opus(pcm)
    out = {}
    for codec in UNIT_CODECS:
        transcoder = Transcoder(codec)
        its_sound = [transcoder.from_opus(packet) for packet in opus]  # what a unit would send
        out[codec] = {
            "mix_encode_cpu_pct": _cpu_pct_per_tick(NarrowbandEncoder(codec).encode, frames),
            "per_unit_opus_transcode_cpu_pct": _cpu_pct_per_tick(transcoder.from_opus, opus),
            "per_unit_sound_to_opus_cpu_pct": _cpu_pct_per_tick(transcoder.to_opus, its_sound),
        }
    return out


def _vp8_source(seed: int, count: int, size: tuple[int, int]) -> list[bytes]:
    """A camera-like stream: a textured still background and a moving bright block."""
    rng = np.random.default_rng(seed)
    w, h = size
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = w, h
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, VIDEO_FPS)
    codec.bit_rate = 600_000
    codec.thread_count = 1
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    background = base.repeat(8, axis=0).repeat(8, axis=1)
    background = (background * 0.5 + np.array(rng.integers(0, 128, 3))).astype(np.uint8)
    out: list[bytes] = []
    for i in range(count):
        img = background.copy()
        x = (i * 9) % (w - 120)
        y = h // 3 + int(40 * np.sin(i / 5))
        img[y : y + 100, x : x + 100] = (240, 220, 200)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def bench_composite(size: tuple[int, int], sources: list[list[bytes]]) -> dict:
    comp = Compositor(*size, fps=VIDEO_FPS, layout="grid", max_tiles=len(sources))
    decoders = SelectiveDecoder()
    for i in range(len(sources)):
        comp.add_source(i, f"Site {i + 1}")
    decoders.select(comp.shown())
    encoded = 0
    phases = {"decode": 0.0, "compose": 0.0, "encode": 0.0}
    clock = time.process_time
    for f in range(VIDEO_WARMUP + VIDEO_FRAMES):
        if f == VIDEO_WARMUP:
            encoded = 0
            phases = dict.fromkeys(phases, 0.0)
        t0 = clock()
        for i, stream in enumerate(sources):
            picture = decoders.decode(i, stream[f % len(stream)])
            if picture is not None:
                comp.push_frame(i, picture)
        t1 = clock()
        frame = comp.compose()  # what tick() does, in two timed halves
        t2 = clock()
        encoded += sum(len(p.data) for p in comp.encode(frame))
        t3 = clock()
        phases["decode"] += t1 - t0
        phases["compose"] += t2 - t1
        phases["encode"] += t3 - t2
    seconds = VIDEO_FRAMES / VIDEO_FPS
    return {
        "cpu_pct": round(sum(phases.values()) / seconds * 100, 2),
        "ms_per_frame": {k: round(v / VIDEO_FRAMES * 1000, 2) for k, v in phases.items()},
        "kbit_s": round(encoded * 8 / seconds / 1000),
    }


def main() -> None:
    rng = np.random.default_rng(1)
    pcm_voices = [_voice(f, 2.0, rng) for f in (140.0, 210.0, 260.0)]
    pcm_quiet = _room_noise(2.0, rng)
    voices = [(_opus(p), _level(p)) for p in pcm_voices]
    quiet = (_opus(pcm_quiet), _level(pcm_quiet))
    runs = [bench_audio(n, 3, voices, quiet) for n in (10, 20, 50)]
    unit_codecs = bench_unit_codecs(pcm_voices[0])

    tiles = 9
    video = [_vp8_source(i, VIDEO_WARMUP + VIDEO_FRAMES, (640, 360)) for i in range(tiles)]
    sizes = (("720p", (1280, 720)), ("360p", (640, 360)))
    composite = {name: bench_composite(size, video) for name, size in sizes}
    # The same 360p room when senders send about their tile's size (a lower simulcast
    # layer, or a constraint asked of the sender): what decoding at the shown size saves.
    small = [_vp8_source(i, VIDEO_WARMUP + VIDEO_FRAMES, (320, 180)) for i in range(tiles)]
    small_sources = bench_composite((640, 360), small)

    print(
        json.dumps(
            {
                "runs": runs,
                "unit_codecs": unit_codecs,
                "composite_cpu_pct": {k: v["cpu_pct"] for k, v in composite.items()},
                "composite": {
                    "layout": "grid 3x3",
                    "sources": f"{tiles} x VP8 640x360 at {VIDEO_FPS} fps, decoded",
                    "fps": VIDEO_FPS,
                    "kbit_s": {k: v["kbit_s"] for k, v in composite.items()},
                    "ms_per_frame": {k: v["ms_per_frame"] for k, v in composite.items()},
                    "360p_with_320x180_sources_cpu_pct": small_sources["cpu_pct"],
                },
                "audio": {
                    "tick_ms": 20,
                    "ticks": AUDIO_TICKS,
                    "talker_level_dbov": -voices[0][1],
                    "quiet_level_dbov": -quiet[1],
                },
                "cpu": "time.process_time, % of one core",
                "command": "python -m bench.mixer",
            }
        )
    )


if __name__ == "__main__":
    main()
