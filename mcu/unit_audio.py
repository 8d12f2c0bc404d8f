"""G.722 and G.711 on a room unit's sound m-line, Opus everywhere else.

Many room systems offer G.722 (wideband) and G.711 before Opus, or instead of it. The
room forwards and mixes Opus, so what such a unit sends is decoded at its own edge
(mcu/unit.py), resampled to 48 kHz and encoded to Opus (:class:`Transcoder`): the room
then treats it as any microphone. What it receives is the room's mix encoded in its
codec by the room's mixer from the mix's own sound (:class:`NarrowbandEncoder`, used by
mcu/mixing.py): once per codec for every unit that hears the shared mix, and once per
talker on that codec for its mix without its own voice, sent through the C fan-out
like the Opus mix. Units on Opus cost none of it.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass

import av
import numpy as np

from mcu.mixer.audio import level_of
from mcu.mixer.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder
from mcu.mixer.selection import ACTIVE_LEVEL

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
    """What one unit sends, to Opus; and the lobby's cue, from Opus."""

    def __init__(self, codec: str) -> None:
        self.codec = CODECS[codec]
        rate = self.codec.sample_rate
        self._decoder = av.CodecContext.create(self.codec.ffmpeg, "r")
        self._decoder.sample_rate, self._decoder.layout = rate, "mono"
        self._decoder.format = "s16"
        self._up = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        self._opus_out = OpusEncoder()
        self._opus_in = OpusDecoder()
        self._narrow = NarrowbandEncoder(codec)
        self._pending = np.zeros(0, dtype=np.int16)  # 48 kHz samples not yet a whole Opus frame

    def to_opus(self, payload: bytes, quiet_too: bool = True) -> list[tuple[bytes | None, int]]:
        """The unit's packet as Opus packets of 20 ms (none until 20 ms have come), each
        with the RFC 6464 level of its sound: with it the room treats the unit as a
        browser's microphone (C holds its quiet packets back from the mixer, which
        then decodes only the talkers, not every such unit every tick).

        Not ``quiet_too``: a frame too quiet ever to be mixed (ACTIVE_LEVEL) is not
        encoded (None), which is most of a room's units most of the time; the caller
        leaves a gap in its timestamps, as an Opus sender in DTX does."""
        if not payload:  # nothing to decode (and an empty packet would end the decoder's stream)
            return []
        pcm = [frame for frame in self._decoder.decode(av.Packet(payload))]
        pieces = [self._pending]
        for frame in pcm:
            for resampled in self._up.resample(frame):
                pieces.append(resampled.to_ndarray().reshape(-1))
        samples = np.concatenate(pieces)
        out = []
        while len(samples) >= FRAME_SAMPLES:
            frame = samples[:FRAME_SAMPLES]
            level = level_of(frame)
            out.append((self._opus_out.encode(frame) if quiet_too or level < ACTIVE_LEVEL else None, level))
            samples = samples[FRAME_SAMPLES:]
        self._pending = samples
        return out

    def from_opus(self, payload: bytes) -> bytes:
        """One Opus packet as the unit's codec (b"" if it does not decode): the lobby's
        cue, which is made in Opus."""
        pcm = self._opus_in.decode(payload)
        if pcm is None:
            return b""
        return self._narrow.encode(pcm.astype(np.int16))


class NarrowbandEncoder:
    """The mix's 20 ms frames (48 kHz PCM) encoded in one unit codec: resampled to its
    rate and encoded, each frame one RTP payload (160 ticks of its 8 kHz RTP clock)."""

    def __init__(self, codec: str) -> None:
        self.codec = CODECS[codec]
        rate = self.codec.sample_rate
        self._encoder = av.CodecContext.create(self.codec.ffmpeg, "w")
        self._encoder.sample_rate, self._encoder.layout, self._encoder.format = rate, "mono", "s16"
        self._encoder.time_base = fractions.Fraction(1, rate)
        self._down = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OPUS_RATE
        out = []
        for resampled in self._down.resample(frame):
            resampled.pts = self._pts
            resampled.time_base = fractions.Fraction(1, self.codec.sample_rate)
            self._pts += resampled.samples
            out += [bytes(packet) for packet in self._encoder.encode(resampled)]
        return b"".join(out)
