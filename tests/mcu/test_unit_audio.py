"""A room unit's G.722/G.711 sound: to Opus for the room, and the mix in its codec."""

from __future__ import annotations

import numpy as np
import pytest

from mcu.mixer.opus import FRAME_SAMPLES, OpusDecoder
from mcu.unit_audio import CODECS, NarrowbandEncoder, Transcoder

RATE = 48000


def tone(frequency: float, frames: int) -> list[np.ndarray]:
    t = np.arange(frames * FRAME_SAMPLES) / RATE
    pcm = (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    return [pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] for i in range(frames)]


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / RATE)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("codec", list(CODECS))
def test_the_mix_in_a_unit_codec_and_back_to_opus_keeps_the_tone(codec: str) -> None:
    encoder = NarrowbandEncoder(codec)
    payloads = [encoder.encode(frame) for frame in tone(700, 50)]
    # One 20 ms payload a frame once the resampler is primed: 160 bytes in all three
    # (G.711: 8 bits at 8 kHz; G.722: 64 kbit/s).
    assert all(len(p) == 160 for p in payloads[2:])
    # What the unit would decode, as the room hears it: through the unit's Transcoder.
    transcoder = Transcoder(codec)
    taken = [both for payload in payloads for both in transcoder.to_opus(payload)]
    opus = [packet for packet, _ in taken]
    # Each with its level: a tone at 8000 of 32768 peak is about -15 dBov.
    assert all(abs(level - 15) <= 2 for _, level in taken[5:]), [level for _, level in taken]
    decoder = OpusDecoder()
    pcm = np.concatenate([decoder.decode(packet) for packet in opus][-25:])
    assert abs(peak_hz(pcm) - 700) < 10


def test_an_empty_or_garbage_payload_from_a_unit_does_not_end_its_sound() -> None:
    transcoder = Transcoder("G722")
    encoder = NarrowbandEncoder("G722")
    sound = [encoder.encode(frame) for frame in tone(440, 40)]
    assert transcoder.to_opus(b"") == []
    transcoder.to_opus(bytes(range(256)) * 2)  # decodes to noise, or to nothing: no error
    taken = [packet for payload in sound for packet, _ in transcoder.to_opus(payload)]
    assert len(taken) >= 35  # still one Opus packet per 20 ms after those
    assert all(isinstance(p, bytes) and p for p in taken)
    quiet = Transcoder("PCMU")  # µ-law silence: the lowest level
    levels = [level for _ in range(5) for _, level in quiet.to_opus(b"\xff" * 160)]
    assert len(levels) >= 4 and set(levels) == {127}


def test_quiet_frames_nobody_forwards_are_not_encoded() -> None:
    encoder = NarrowbandEncoder("PCMA")
    loud = [encoder.encode(frame) for frame in tone(440, 10)]
    quiet = [encoder.encode(frame // 800) for frame in tone(440, 10)]  # about -73 dBov
    transcoder = Transcoder("PCMA")
    taken = [both for payload in loud + quiet for both in transcoder.to_opus(payload, quiet_too=False)]
    assert len(taken) >= 17
    encoded = [packet is not None for packet, _ in taken]
    levels = [level for _, level in taken]
    # The talk is encoded; what follows it, too quiet to be mixed, is not (the frame that
    # holds both may be either).
    assert all(encoded[1:8]) and not any(encoded[-8:]), (encoded, levels)
    assert all(level >= 70 for level in levels[-8:])
    # Forwarded to somebody: everything is encoded.
    again = Transcoder("PCMA")
    assert all(packet for payload in quiet for packet, _ in again.to_opus(payload))
