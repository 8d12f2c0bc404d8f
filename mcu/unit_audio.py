"""G.722 and G.711 on a room unit's sound m-line, Opus everywhere else.

Many room systems offer G.722 (wideband) and G.711 before Opus, or instead of it. The
room forwards and mixes Opus only, so a unit that speaks one of these has its sound
transcoded at its own edge (mcu/unit.py): what it sends is decoded, resampled to 48 kHz
and encoded to Opus (the room then treats it as any microphone); what it receives, the
room's mix, is decoded from Opus, resampled and encoded to its codec. A few hundred
microseconds of CPU each 20 ms per such unit (docs/sip.md has the figures); units on
Opus cost none of it.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass

import av
import numpy as np

from mcu.mixer.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder

OPUS_RATE = 48000


@dataclass(frozen=True)
class Narrowband:
    """How one codec is carried: its FFmpeg name, its sample rate, its RTP clock."""

    ffmpeg: str
    sample_rate: int
    rtp_clock: int  # G.722's is 8000 though it samples at 16 kHz (RFC 3551 4.5.2)


CODECS = {"G722": Narrowband("g722", 16000, 8000), "PCMU": Narrowband("pcm_mulaw", 8000, 8000),
          "PCMA": Narrowband("pcm_alaw", 8000, 8000)}


class Transcoder:
    """Both directions for one unit."""

    def __init__(self, codec: str) -> None:
        self.codec = CODECS[codec]
        rate = self.codec.sample_rate
        self._decoder = av.CodecContext.create(self.codec.ffmpeg, "r")
        self._decoder.sample_rate, self._decoder.layout = rate, "mono"
        self._decoder.format = "s16"
        self._encoder = av.CodecContext.create(self.codec.ffmpeg, "w")
        self._encoder.sample_rate, self._encoder.layout, self._encoder.format = rate, "mono", "s16"
        self._encoder.time_base = fractions.Fraction(1, rate)
        self._up = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        self._down = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._opus_out = OpusEncoder()
        self._opus_in = OpusDecoder()
        self._pending = np.zeros(0, dtype=np.int16)  # 48 kHz samples not yet a whole Opus frame
        self._pts = 0

    def to_opus(self, payload: bytes) -> list[bytes]:
        """The unit's packet as Opus packets of 20 ms (none until 20 ms have come)."""
        pcm = [frame for frame in self._decoder.decode(av.Packet(payload))]
        pieces = [self._pending]
        for frame in pcm:
            for resampled in self._up.resample(frame):
                pieces.append(resampled.to_ndarray().reshape(-1))
        samples = np.concatenate(pieces)
        out = []
        while len(samples) >= FRAME_SAMPLES:
            out.append(self._opus_out.encode(samples[:FRAME_SAMPLES]))
            samples = samples[FRAME_SAMPLES:]
        self._pending = samples
        return out

    def from_opus(self, payload: bytes) -> bytes:
        """One Opus packet of the mix as the unit's codec (b"" if it does not decode)."""
        pcm = self._opus_in.decode(payload)
        if pcm is None:
            return b""
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = OPUS_RATE
        out = []
        for resampled in self._down.resample(frame):
            resampled.pts = self._pts
            resampled.time_base = fractions.Fraction(1, self.codec.sample_rate)
            self._pts += resampled.samples
            out += [bytes(packet) for packet in self._encoder.encode(resampled)]
        return b"".join(out)
