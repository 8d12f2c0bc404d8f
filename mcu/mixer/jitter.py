"""Per-source audio jitter buffer and playout for Opus RTP payloads.

Two layers, one mechanism each:

- `JitterBuffer` orders packets by (unwrapped) sequence number and hands out one
  playout *unit* per request: a packet, a known loss, an underrun, or idle. It never
  decodes, so a source the mixer does not select costs a dict lookup per tick.
- `OpusPlayout` turns those units into exactly one 20 ms int16 frame per tick when the
  mixer asks it to decode: libopus PLC for losses and underruns (fading to silence),
  a short fade-in after silence, and garbage treated as a loss.

Delay is adapted at talk-spurt boundaries (when the source is silent, where a change
is inaudible): playout stops after a run of underruns (DTX, a paused sender) and
restarts only when the buffer again holds the target depth. During a talk spurt the
buffer drops a quiet packet when it has stayed deeper than needed for a second
(drift, a burst after a stall) and stretches by concealing an underrun.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .opus import FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, packet_samples, plc_packet

SILENT_LEVEL = 127  # RFC 6464: -127 dBov, the quietest level a header can carry


class UnitKind(enum.Enum):
    PACKET = "packet"  # a received packet to play
    LOST = "lost"  # a gap in sequence numbers: conceal
    UNDERRUN = "underrun"  # the buffer ran dry while playing: conceal, keep the slot
    IDLE = "idle"  # not playing (before start, after a talk spurt): silence


@dataclass(frozen=True, slots=True)
class Unit:
    kind: UnitKind
    samples: int
    payload: bytes = b""
    level: int = SILENT_LEVEL


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    duplicate: int = 0
    late: int = 0
    invalid: int = 0
    lost: int = 0
    underruns: int = 0
    dropped_drift: int = 0
    dropped_overflow: int = 0
    resets: int = 0


@dataclass(slots=True)
class _Entry:
    ts: int
    payload: bytes
    samples: int
    level: int


_IDLE = Unit(UnitKind.IDLE, FRAME_SAMPLES)
_BOOST_DECAY = 0.995  # per pop: the delay added for late packets is forgotten over seconds


@dataclass
class JitterBuffer:
    """Reorders one source's Opus packets and paces them out one unit at a time.

    `push` takes the RTP sequence number and timestamp, the payload, the arrival time
    (seconds on any monotonic clock) and the RFC 6464 level (0 loud .. 127 silent).
    `pop` is called by the playout once per unit it needs.
    """

    min_delay: int = 2  # packets held before a talk spurt starts playing
    max_delay: int = 10
    capacity: int = 50  # packets; beyond this the oldest are dropped (1 s at 20 ms)
    quiet_level: int = 50  # packets at or below -50 dBov may be dropped to cut delay
    idle_after: int = 5  # consecutive underruns that end a talk spurt (100 ms)
    stats: JitterStats = field(default_factory=JitterStats)

    def __post_init__(self) -> None:
        self._packets: dict[int, _Entry] = {}
        # Extended seq of the next packet to play; None until playing first starts, so
        # that packets reordered ahead of the very first one are still taken.
        self._next: int | None = None
        self._last_seq: int | None = None  # last raw seq pushed, for unwrapping
        self._last_ext = 0
        self._highest: int | None = None
        self._playing = False
        self._waited = 0
        self._underruns = 0
        self._last_samples = FRAME_SAMPLES
        # RFC 3550 interarrival jitter, in seconds
        self._jitter = 0.0
        self._prev_transit: float | None = None
        self._late_boost = 0.0
        self._depth_window: deque[int] = deque(maxlen=50)

    # -- input -------------------------------------------------------------------
    def push(
        self, seq: int, ts: int, payload: bytes, arrival: float, level: int | None = None
    ) -> bool:
        """Store a packet; False if it was refused (late, duplicate, not Opus)."""
        samples = packet_samples(payload)
        if samples == 0:
            self.stats.invalid += 1
            return False
        ext = self._unwrap(seq & 0xFFFF)
        ref = self._next if self._next is not None else self._highest
        if ref is not None and abs(ext - ref) > 3000:
            # The sender restarted or jumped (a new SSRC mapped onto this source).
            self.reset()
            ext = self._unwrap(seq & 0xFFFF)
        if self._next is not None and ext < self._next:
            self.stats.late += 1
            # A packet that missed its slot says our delay is short: grow the target.
            self._late_boost = min(self._late_boost + 1.0, float(self.max_delay))
            return False
        if ext in self._packets:
            self.stats.duplicate += 1
            return False
        self.stats.received += 1
        self._update_jitter(ts, arrival)
        self._packets[ext] = _Entry(
            ts, payload, samples, SILENT_LEVEL if level is None else min(max(level, 0), 127)
        )
        if self._highest is None or ext > self._highest:
            self._highest = ext
        if len(self._packets) > self.capacity:
            self._drop_oldest(len(self._packets) - self.capacity)
        return True

    def _unwrap(self, seq: int) -> int:
        if self._last_seq is None:
            self._last_seq, self._last_ext = seq, seq + (1 << 16)
            return self._last_ext
        delta = (seq - self._last_seq) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        ext = self._last_ext + delta
        if delta > 0:
            self._last_seq, self._last_ext = seq, ext
        return ext

    def _update_jitter(self, ts: int, arrival: float) -> None:
        transit = arrival - ts / SAMPLE_RATE
        if self._prev_transit is not None:
            d = abs(transit - self._prev_transit)
            if d < 1.0:  # a DTX pause or a restart is not jitter
                self._jitter += (d - self._jitter) / 16
        self._prev_transit = transit

    def _drop_oldest(self, count: int) -> None:
        for ext in sorted(self._packets)[:count]:
            del self._packets[ext]
            self.stats.dropped_overflow += 1
        self._next = min(self._packets)

    def reset(self) -> None:
        self.stats.resets += 1
        self._packets.clear()
        self._next = None
        self._last_seq = None
        self._highest = None
        self._playing = False
        self._waited = 0
        self._underruns = 0
        self._prev_transit = None
        self._depth_window.clear()

    # -- state -------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Packets waiting to be played."""
        return len(self._packets)

    @property
    def target(self) -> int:
        """Packets to hold before playing: covers about three times the jitter."""
        frame = self._last_samples / SAMPLE_RATE
        want = math.ceil(3 * self._jitter / frame) + 1 + round(self._late_boost)
        return max(self.min_delay, min(self.max_delay, want))

    @property
    def playing(self) -> bool:
        return self._playing

    def skip_idle(self, ticks: int) -> None:
        """What `ticks` pops of an idle buffer (empty, not playing) would have done, all
        at once: the mixer does not pop a quiet source's buffer while it stays empty."""
        self._late_boost *= _BOOST_DECAY ** ticks
        self._waited = 0

    # -- output ------------------------------------------------------------------
    def pop(self) -> Unit:
        self._late_boost *= _BOOST_DECAY  # forget late packets over some seconds
        if not self._playing:
            if not self._packets:
                self._waited = 0
                return _IDLE
            self._waited += 1
            if len(self._packets) < self.target and self._waited <= self.target:
                return _IDLE
            self._playing = True
            self._underruns = 0
            self._depth_window.clear()
            # Start at the oldest packet we hold: earlier ones are not coming.
            self._next = min(self._packets)
        assert self._next is not None
        self._depth_window.append(len(self._packets))
        entry = self._packets.pop(self._next, None)
        if entry is not None:
            self._next += 1
            self._underruns = 0
            self._last_samples = entry.samples
            if self._should_drop_for_drift(entry):
                return self._pop_after_drop()
            return Unit(UnitKind.PACKET, entry.samples, entry.payload, entry.level)
        if self._packets:
            if len(self._packets) >= self.target:
                # Enough later packets are here: the missing one is lost, or too late.
                self._next += 1
                self.stats.lost += 1
                return Unit(UnitKind.LOST, self._last_samples)
            # Maybe only reordered: conceal this tick but keep its slot (a stretch of
            # one frame), so that it plays if it comes by the next one.
            self.stats.underruns += 1
            return Unit(UnitKind.UNDERRUN, self._last_samples)
        self.stats.underruns += 1
        self._underruns += 1
        if self._underruns >= self.idle_after:
            # The talk spurt is over (DTX, muted, stalled): rebuffer before playing again.
            self._playing = False
            self._waited = 0
        return Unit(UnitKind.UNDERRUN, self._last_samples)

    def _should_drop_for_drift(self, entry: _Entry) -> bool:
        window = self._depth_window
        if len(window) < window.maxlen or not self._packets:  # type: ignore[operator]
            return False
        excess = min(window) - self.target
        # Drop only quiet packets unless the excess is large, so drift never cuts a word.
        if excess >= 1 and (entry.level >= self.quiet_level or excess >= 3):
            window.clear()
            return True
        return False

    def _pop_after_drop(self) -> Unit:
        self.stats.dropped_drift += 1
        assert self._next is not None
        entry = self._packets.pop(self._next, None)
        if entry is None:
            return Unit(UnitKind.LOST, self._last_samples)
        self._next += 1
        return Unit(UnitKind.PACKET, entry.samples, entry.payload, entry.level)


# A ramp used to fade in after silence and out on concealment, so that no frame edge
# jumps from zero to full scale (a click).
_FADE = 120  # 2.5 ms
_RAMP_UP = np.linspace(0.0, 1.0, _FADE, dtype=np.float32)


@dataclass(slots=True)
class PlayoutFrame:
    """One 20 ms tick of a source: PCM when decoded, and the level of what played.

    ``packet`` is the source's own Opus packet when this tick is exactly one whole 20 ms
    packet of it, decoded as it came (no fade, no concealment): a mix that is this
    source alone can be that packet, with no encode.
    """

    pcm: np.ndarray | None
    level: int
    kind: UnitKind
    packet: bytes | None = None


class OpusPlayout:
    """A source's jitter buffer plus the decode stage that the mixer drives per tick.

    `pull(decode=False)` advances the source by one tick without decoding (a source
    that is not selected); `pull(decode=True)` returns exactly 960 int16 samples.
    """

    max_concealed = 5  # frames of PLC before the output goes silent (100 ms)

    def __init__(self, buffer: JitterBuffer | None = None) -> None:
        self.buffer = buffer or JitterBuffer()
        self._decoder: OpusDecoder | None = None
        self._rest = np.zeros(0, dtype=np.int16)  # decoded samples beyond the tick
        self._owed = 0  # samples of the current unit not yet played (undecoded path)
        self._last_toc: int | None = None
        self._concealed = 0
        self._silent = True  # the previous output frame was silence
        self._level = SILENT_LEVEL

    def push(
        self, seq: int, ts: int, payload: bytes, arrival: float, level: int | None = None
    ) -> bool:
        return self.buffer.push(seq, ts, payload, arrival, level)

    @property
    def decoder_errors(self) -> int:
        return self._decoder.errors if self._decoder else 0

    def pull(self, decode: bool) -> PlayoutFrame:
        if not decode:
            return self._skip()
        if self._decoder is None:
            self._decoder = OpusDecoder()
            self._rest = np.zeros(0, dtype=np.int16)
            self._owed = 0
        parts: list[np.ndarray] = []
        have = len(self._rest)
        if have:
            parts.append(self._rest)
        kind = UnitKind.PACKET
        level = self._level
        whole: bytes | None = None  # this tick is one whole packet, played as it came
        while have < FRAME_SAMPLES:
            unit = self.buffer.pop()
            kind = unit.kind
            fading_in = self._silent
            pcm = self._decode_unit(unit)
            if (not parts and unit.kind is UnitKind.PACKET and not fading_in
                    and len(pcm) == FRAME_SAMPLES and self._concealed == 0):
                whole = unit.payload
            if unit.kind is UnitKind.PACKET:
                level = unit.level
            elif unit.kind is UnitKind.IDLE:
                level = SILENT_LEVEL
            parts.append(pcm)
            have += len(pcm)
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self._rest = out[FRAME_SAMPLES:]
        out = out[:FRAME_SAMPLES]
        self._level = level
        return PlayoutFrame(out, level, kind, whole if len(parts) == 1 else None)

    def _skip(self) -> PlayoutFrame:
        kind = self.advance()
        return PlayoutFrame(None, self._level, kind)

    @property
    def idle(self) -> bool:
        """Nothing to play and nothing owed: an `advance()` now changes nothing but what
        `JitterBuffer.skip_idle` does, until the next packet is pushed."""
        buffer = self.buffer
        return (self._decoder is None and self._owed < FRAME_SAMPLES and not buffer._playing
                and not buffer._packets)

    def advance(self) -> UnitKind:
        """One tick of a source that is not selected: `pull(False)` without the frame
        (the mixer's loop over every silent source of a room, each tick)."""
        # Keep time without decoding. The decoder is dropped so that a later selection
        # starts a clean stream rather than one with a stale state.
        if self._decoder is not None:
            self._decoder = None
            self._owed = len(self._rest)
            self._rest = np.zeros(0, dtype=np.int16)
        kind = UnitKind.PACKET
        level = SILENT_LEVEL if self._owed < FRAME_SAMPLES else self._level
        while self._owed < FRAME_SAMPLES:
            unit = self.buffer.pop()
            kind = unit.kind
            self._owed += unit.samples
            level = unit.level
            if unit.kind is UnitKind.PACKET:
                self._last_toc = unit.payload[0]
        self._owed -= FRAME_SAMPLES
        self._level = level
        self._silent = True
        return kind

    def _decode_unit(self, unit: Unit) -> np.ndarray:
        assert self._decoder is not None
        if unit.kind is UnitKind.PACKET:
            pcm = self._decoder.decode(unit.payload)
            if pcm is not None:
                self._last_toc = unit.payload[0]
                self._concealed = 0
                if self._silent:
                    pcm = _fade_in(pcm)
                self._silent = False
                return pcm
            # Undecodable bytes: conceal them like a loss.
        if unit.kind is UnitKind.IDLE or self._last_toc is None or self._silent:
            self._silent = True
            return np.zeros(unit.samples or FRAME_SAMPLES, dtype=np.int16)
        return self._conceal(unit.samples)

    def _conceal(self, samples: int) -> np.ndarray:
        assert self._decoder is not None and self._last_toc is not None
        self._concealed += 1
        if self._concealed > self.max_concealed:
            self._silent = True
            return np.zeros(samples, dtype=np.int16)
        pcm = self._decoder.decode(plc_packet(self._last_toc))
        if pcm is None:
            self._silent = True
            return np.zeros(samples, dtype=np.int16)
        if self._concealed == self.max_concealed:
            # The last concealed frame ends at zero, so the silence after it is seamless.
            pcm = (pcm * np.linspace(1.0, 0.0, len(pcm), dtype=np.float32)).astype(np.int16)
        return pcm


def _fade_in(pcm: np.ndarray) -> np.ndarray:
    out = pcm.copy()
    n = min(_FADE, len(out))
    out[:n] = (out[:n] * _RAMP_UP[:n]).astype(np.int16)
    return out
