"""The audio mixer: a few loudest sources, mix-minus for talkers, one shared encode.

Per 20 ms tick:

1. every source's jitter buffer advances one tick; only the selected talkers (by
   RFC 6464 level, see `selection.py`) are decoded, so silent sources cost a lookup;
2. the decoded talkers are summed in int32 and clipped to int16;
3. the full mix is encoded once and shared by every listener that is not a talker;
   each talker that is also a listener gets its own mix without its voice, encoded
   separately (at most `max_talkers` extra encodes per tick, whatever the room size).
   A mix that is one voice alone is that voice's packet (no encode); a mix of nobody
   is the shared encoder's packet for silence, encoded only until it stops changing.

The caller sends `MixTick.shared` to many listeners as the same bytes and
`MixTick.own[listener]` to the few talkers, rewriting only RTP headers per listener.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable
from dataclasses import dataclass, field

import numpy as np

from .jitter import SILENT_LEVEL, JitterBuffer, OpusPlayout
from .opus import FRAME_SAMPLES, OpusEncoder
from .selection import TalkerSelector

SourceId = Hashable
ListenerId = Hashable

_FADE_OUT = np.linspace(1.0, 0.0, FRAME_SAMPLES, dtype=np.float32)
_ENCODER_IDLE_TICKS = 250  # keep a talker's own encoder 5 s after it stops talking


@dataclass(frozen=True, slots=True)
class MixTick:
    """One tick of output. `timestamp` counts 48 kHz samples since the first tick."""

    timestamp: int
    shared: bytes
    own: dict[ListenerId, bytes]
    talkers: tuple[SourceId, ...]  # mixed this tick, loudest first
    pcm: np.ndarray | None = None  # the shared mix, when `keep_pcm` is set or it was asked for
    # The PCM of the listeners asked for (tick's `pcm_for`) whose mix is their own now
    # (talkers: the mix without their voice), for encoders of other codecs.
    own_pcm: dict[ListenerId, np.ndarray] = field(default_factory=dict)

    def packet_for(self, listener: ListenerId) -> bytes:
        return self.own.get(listener, self.shared)

    def is_shared(self, listener: ListenerId) -> bool:
        return listener not in self.own


@dataclass(slots=True)
class MixerStats:
    ticks: int = 0
    decodes: int = 0
    encodes: int = 0


@dataclass(slots=True)
class _Source:
    playout: OpusPlayout
    has_levels: bool = False  # RFC 6464 levels seen; else we measure from decoded PCM
    measured_level: int = SILENT_LEVEL


@dataclass
class AudioMixer:
    max_talkers: int = 3
    bitrate: int = 32000
    keep_pcm: bool = False
    selector: TalkerSelector = field(default_factory=TalkerSelector)
    stats: MixerStats = field(default_factory=MixerStats)

    def __post_init__(self) -> None:
        self.selector.max_talkers = self.max_talkers
        self._sources: dict[SourceId, _Source] = {}
        self._listeners: dict[ListenerId, SourceId | None] = {}
        self._listeners_of: dict[SourceId, list[ListenerId]] = {}  # source -> listeners it is
        self._shared_encoder = OpusEncoder(self.bitrate)
        # What a talker alone in the mix hears: one silent frame, encoded once.
        self._silence = OpusEncoder(self.bitrate).encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))
        self._own_encoders: dict[SourceId, OpusEncoder] = {}
        self._own_last_used: dict[SourceId, int] = {}
        self._mixed: list[SourceId] = []  # selected and mixed in the previous tick
        self._tick = 0
        # Sources that sent packets without a level (and none with): decoded every tick.
        self._unlevelled: dict[SourceId, None] = {}
        # Sources whose playout is idle (see OpusPlayout.idle) -> the tick it last advanced.
        self._idle: dict[SourceId, int] = {}
        self._last_silence: bytes | None = None  # the shared encoder's last packet of silence
        self._settled_silence: bytes | None = None  # ... once it no longer changes

    # -- membership ----------------------------------------------------------------
    def add_source(self, source: SourceId, buffer: JitterBuffer | None = None) -> None:
        if source not in self._sources:
            self._sources[source] = _Source(OpusPlayout(buffer))
            self.selector.add(source)

    def remove_source(self, source: SourceId) -> None:
        self._sources.pop(source, None)
        self._unlevelled.pop(source, None)
        self._idle.pop(source, None)
        self.selector.remove(source)
        self._own_encoders.pop(source, None)
        self._own_last_used.pop(source, None)
        if source in self._mixed:
            self._mixed.remove(source)

    def add_listener(self, listener: ListenerId, source: SourceId | None = None) -> None:
        """A mixed listener; `source` is its own audio source, left out of its mix."""
        self.remove_listener(listener)
        self._listeners[listener] = source
        if source is not None:
            self._listeners_of.setdefault(source, []).append(listener)

    def remove_listener(self, listener: ListenerId) -> None:
        source = self._listeners.pop(listener, None)
        others = self._listeners_of.get(source) if source is not None else None
        if others is not None:
            others.remove(listener)
            if not others:
                del self._listeners_of[source]

    @property
    def sources(self) -> list[SourceId]:
        return list(self._sources)

    @property
    def listeners(self) -> list[ListenerId]:
        return list(self._listeners)

    def playout(self, source: SourceId) -> OpusPlayout:
        return self._sources[source].playout

    # -- input ---------------------------------------------------------------------
    def push(
        self,
        source: SourceId,
        seq: int,
        ts: int,
        payload: bytes,
        audio_level: int | None,
        arrival: float,
    ) -> bool:
        """Queue one RTP payload of `source`; False if it was not taken."""
        src = self._sources.get(source)
        if src is None:
            return False
        if source in self._idle:
            self._wake(source, src)
        if not src.playout.push(seq, ts, payload, arrival, audio_level):
            return False
        if audio_level is not None:
            if not src.has_levels:
                src.has_levels = True
                self._unlevelled.pop(source, None)
            self.selector.observe(source, audio_level)
        elif not src.has_levels and source not in self._unlevelled:
            self._unlevelled[source] = None  # measured from its sound (until a level comes)
        return True

    def note_level(self, source: SourceId, audio_level: int) -> None:
        """The level of `source`'s packets that were not pushed (held back before the
        mixer as too quiet for a talker): it counts for the choice of talkers as theirs
        would have."""
        if source in self._sources:
            self.selector.observe(source, audio_level)

    # -- output --------------------------------------------------------------------
    def tick(self, pcm: bool = False, pcm_for: Collection[ListenerId] = ()) -> MixTick:
        """One tick's mix: Opus for every listener; with ``pcm`` the shared mix as PCM too,
        and for the listeners in ``pcm_for`` whose mix is their own, that one as PCM
        (room units on G.722/G.711 get it encoded in their codec: mcu/mixing.py)."""
        selector = self.selector
        for source in self._unlevelled:
            # Without level headers the only way to know is to listen: decode it and
            # feed its measured level to the selector like a header would.
            selector.observe(source, self._sources[source].measured_level)
        selected = selector.update()
        # A talker that just left the selection is played once more, faded out, so
        # that its voice does not stop with a click.
        leaving = [s for s in self._mixed if s not in selected and s in self._sources]

        mixed: list[SourceId] = []
        frames: list[np.ndarray] = []
        # Each mixed source's own packet when its tick is one whole packet played as it
        # came: a mix of that source alone is that packet, with no encode (in a meeting
        # one person talks most of the time, and a talker's mix-minus is often one voice).
        whole: list[bytes | None] = []
        unlevelled = self._unlevelled
        idle = self._idle
        for source, src in self._sources.items():
            if not (source in selected or source in leaving or source in unlevelled):
                # Most of a room, most of the time: no frame at all, and while its buffer
                # stays empty not even a step (`_wake` catches up at its next packet).
                if source not in idle:
                    src.playout.advance()
                    if src.playout.idle:
                        idle[source] = self._tick
                continue
            if source in idle:
                self._wake(source, src)
            frame = src.playout.pull(True)
            if frame.pcm is None:
                continue
            self.stats.decodes += 1
            if source in unlevelled:
                src.measured_level = level_of(frame.pcm)
                if source not in selected:
                    continue
            if source in leaving:
                frames.append((frame.pcm * _FADE_OUT).astype(np.int16))
                whole.append(None)
            else:
                frames.append(frame.pcm)
                whole.append(frame.packet)
            mixed.append(source)

        # The sum of two or more voices, in int32 (numpy's stack/sum/clip helpers cost
        # more in Python than the adding itself for three 960-sample frames).
        total: np.ndarray | None = None
        if len(frames) > 1:
            total = np.add(frames[0], frames[1], dtype=np.int32)
            for more in frames[2:]:
                np.add(total, more, out=total)
        encodes = 0
        shared_pcm: np.ndarray | None = None
        if not frames:
            shared, encoded = self._silent_mix()
            encodes += encoded
        elif len(frames) == 1 and whole[0] is not None:
            shared = whole[0]
        else:
            shared_pcm = frames[0] if total is None else _clip16(total)
            shared = self._shared_encoder.encode(shared_pcm)
            # The encoder has left silence: its packet for silence settles anew after.
            self._settled_silence = self._last_silence = None
            encodes += 1
        if (self.keep_pcm or pcm) and shared_pcm is None:
            shared_pcm = _SILENT_FRAME if not frames else (
                frames[0] if total is None else _clip16(total))

        own: dict[ListenerId, bytes] = {}
        own_pcm: dict[ListenerId, np.ndarray] = {}
        for i, source in enumerate(mixed):  # the few mixed sources, not every listener
            listeners = self._listeners_of.get(source)
            if not listeners:
                continue
            if pcm_for and any(listener in pcm_for for listener in listeners):
                minus_pcm = _SILENT_FRAME if len(frames) == 1 else frames[1 - i] if len(frames) == 2 \
                    else _clip16(total - frames[i])  # type: ignore[operator]
                for listener in listeners:
                    if listener in pcm_for:
                        own_pcm[listener] = minus_pcm
            if len(frames) == 1:
                packet = self._silence
            elif len(frames) == 2 and whole[1 - i] is not None:
                packet = whole[1 - i]  # the one other voice, as it came
            else:
                assert total is not None
                minus = frames[1 - i] if len(frames) == 2 else _clip16(total - frames[i])
                packet = self._own_encoder(source).encode(minus)
                encodes += 1
            for listener in listeners:
                own[listener] = packet
        self._expire_own_encoders()

        self.stats.ticks += 1
        self.stats.encodes += encodes
        # Only the selected ones: a talker faded out this tick has left; counted again as
        # "mixed" it would leave again every tick, decoded and faded each time for good.
        self._mixed = [s for s in mixed if s not in leaving]
        timestamp = self._tick * FRAME_SAMPLES
        self._tick += 1
        return MixTick(
            timestamp,
            shared,
            own,
            tuple(selected),
            shared_pcm if self.keep_pcm or pcm else None,
            own_pcm,
        )

    def _wake(self, source: SourceId, src: _Source) -> None:
        """Catch an idle source up on the ticks it was not advanced."""
        src.playout.buffer.skip_idle(self._tick - 1 - self._idle.pop(source))

    def _silent_mix(self) -> tuple[bytes, bool]:
        """The shared mix of a tick with nobody in it.

        The shared encoder keeps encoding silence until its packet for it stops changing
        (a few frames after the last voice: the tail of the stream decays in its own
        encoder, no jump to another stream); from then on that packet is sent again and
        nothing is encoded. A room where nobody talks, most rooms most of the time, then
        costs no codec work at all, and listeners still get a packet every 20 ms. Digital
        silence is not cheap to encode either: about 200 µs a frame at complexity 10,
        three times a speech frame.
        """
        if self._settled_silence is not None:
            return self._settled_silence, False
        packet = self._shared_encoder.encode(_SILENT_FRAME)
        if packet == self._last_silence:
            self._settled_silence = packet
        self._last_silence = packet
        return packet, True

    def _own_encoder(self, source: SourceId) -> OpusEncoder:
        encoder = self._own_encoders.get(source)
        if encoder is None:
            encoder = self._own_encoders[source] = OpusEncoder(self.bitrate)
        self._own_last_used[source] = self._tick
        return encoder

    def _expire_own_encoders(self) -> None:
        if self._tick % 50:
            return
        for source, used in list(self._own_last_used.items()):
            if self._tick - used > _ENCODER_IDLE_TICKS:
                del self._own_last_used[source]
                self._own_encoders.pop(source, None)


_SILENT_FRAME = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def _clip16(total: np.ndarray) -> np.ndarray:
    """An int32 sum of voices as int16, clipped (two ufunc calls: no np.clip wrapper)."""
    return np.minimum(np.maximum(total, -32768), 32767).astype(np.int16)


def level_of(pcm: np.ndarray) -> int:
    """RFC 6464 level (-dBov, 0..127) of a frame, for sources that send no header."""
    rms = math.sqrt(float(np.mean(np.square(pcm, dtype=np.float32))))
    if rms < 1.0:
        return SILENT_LEVEL
    return int(min(127, max(0, round(-20 * math.log10(rms / 32768)))))
