"""The mixer's Opus codecs: libopus called directly, and PyAV where it cannot be."""

from __future__ import annotations

import numpy as np
import pytest

from mcu.mixer import libopus
from mcu.mixer import opus as opus_module
from mcu.mixer.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder, plc_packet
from tests.mixer.mixer_media import band_energy, decode_opus, opus_packets, tone

TONE = opus_packets(tone(440, 1.0))


@pytest.fixture(params=["libopus", "pyav"])
def backend(request, monkeypatch) -> str:
    """Each test runs on both: direct libopus, and the PyAV fallback."""
    if request.param == "pyav":
        monkeypatch.setattr(opus_module.libopus, "available", lambda: False)
    return request.param


def test_libopus_is_found_beside_pyav() -> None:
    # The wheel of PyAV ships libopus; the service must not fall back in practice.
    assert libopus.available()


def test_decoder_gives_20_ms_of_the_tone_and_conceals_a_loss(backend: str) -> None:
    decoder = OpusDecoder()
    assert (decoder._direct is not None) == (backend == "libopus")
    out = [decoder.decode(packet) for packet in TONE[:40]]
    assert all(pcm is not None and pcm.dtype == np.int16 and pcm.shape == (FRAME_SAMPLES,) for pcm in out)
    assert band_energy(np.concatenate(out[10:]), 440) > 0.9
    concealed = decoder.decode(plc_packet(TONE[39][0]))
    assert concealed is not None and concealed.shape == (FRAME_SAMPLES,)
    assert band_energy(concealed, 440) > 0.5  # PLC follows the pitch
    assert decoder.errors == 0


def test_both_backends_decode_the_same_samples() -> None:
    direct = OpusDecoder()
    assert direct._direct is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(opus_module.libopus, "available", lambda: False)
        through_pyav = OpusDecoder()
    for packet in TONE[:20]:
        a, b = direct.decode(packet), through_pyav.decode(packet)
        assert a is not None and b is not None
        assert int(np.max(np.abs(a.astype(np.int32) - b))) <= 1


def test_garbage_is_refused_counted_and_the_decoder_goes_on(backend: str) -> None:
    decoder = OpusDecoder()
    for packet in TONE[:5]:
        decoder.decode(packet)
    bad = bytes([0x03, 0x00])  # code 3 with no frames: not an Opus packet
    assert decoder.decode(bad) is None
    assert decoder.errors == 1
    after = [decoder.decode(packet) for packet in TONE[5:30]]
    assert all(pcm is not None for pcm in after)
    assert band_energy(np.concatenate(after[5:]), 440) > 0.9


def test_encoder_makes_one_packet_a_frame_that_decodes_to_the_input(backend: str) -> None:
    encoder = OpusEncoder(32000)
    pcm = tone(1000, 1.0)
    packets = [encoder.encode(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(50)]
    assert all(0 < len(p) < 200 for p in packets)
    assert all(opus_module.packet_samples(p) == FRAME_SAMPLES for p in packets)
    decoded = decode_opus(packets)
    assert len(decoded) == 50 * FRAME_SAMPLES
    assert band_energy(decoded[-24000:], 1000) > 0.9
    # About 32 kbit/s: the bitrate is set on the encoder (VBR around it).
    assert 20_000 < sum(map(len, packets)) * 8 < 45_000


def test_encoder_reads_a_view_into_a_longer_array(backend: str) -> None:
    encoder = OpusEncoder(32000)
    pcm = tone(500, 0.1)
    assert encoder.encode(pcm[FRAME_SAMPLES:2 * FRAME_SAMPLES])  # not the array's start
