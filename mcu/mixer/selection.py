"""Choose the few loudest sources from RFC 6464 audio levels, with hysteresis.

Levels come from the RTP header extension (0 = 0 dBov, loudest .. 127 = silence), so
choosing costs no decoding. Hysteresis keeps a talker selected through the pauses
between words and stops two similar voices from swapping every tick.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

SourceId = Hashable
# A source is active (may be chosen as a talker) when louder than -70 dBov; quieter
# sound is never in the mix.
ACTIVE_LEVEL = 70
_SETTLED = 1e-3  # dB: a smoothed loudness this close to silence is silence


@dataclass(slots=True)
class _Track:
    loudness: float = 0.0  # dB above -127 dBov, smoothed
    peak: int = 0  # loudest level heard since the last tick, as loudness
    last_active: int = -(10**9)
    selected_at: int = 0


@dataclass
class TalkerSelector:
    max_talkers: int = 3
    threshold_level: int = ACTIVE_LEVEL
    hold_ticks: int = 25  # a talker stays selected 500 ms after it goes quiet
    min_ticks: int = 10  # and at least 200 ms after it was selected
    switch_margin_db: float = 6.0  # a newcomer must be this much louder to displace one
    attack: float = 0.6  # smoothing: rise fast (an onset selects within a tick) ...
    release: float = 0.1  # ... fall slowly
    _tracks: dict[SourceId, _Track] = field(default_factory=dict, init=False, repr=False)
    _selected: list[SourceId] = field(default_factory=list, init=False)
    _tick: int = field(default=0, init=False)

    def add(self, source: SourceId) -> None:
        self._tracks.setdefault(source, _Track())

    def remove(self, source: SourceId) -> None:
        self._tracks.pop(source, None)
        if source in self._selected:
            self._selected.remove(source)

    def observe(self, source: SourceId, level: int) -> None:
        """Note a packet's level as it arrives (ahead of playout by the jitter delay)."""
        track = self._tracks.get(source)
        if track is not None:
            loud = 127 - level
            if loud > track.peak:
                track.peak = loud

    @property
    def selected(self) -> list[SourceId]:
        return list(self._selected)

    def loudness(self, source: SourceId) -> float:
        track = self._tracks.get(source)
        return track.loudness if track else 0.0

    def update(self) -> list[SourceId]:
        """Advance one tick; return the selected sources, loudest first."""
        self._tick += 1
        tick = self._tick
        active_floor = 127 - self.threshold_level
        active: list[SourceId] = []
        for source, track in self._tracks.items():
            if not track.peak and not track.loudness:
                continue  # silent and settled (most of a room): nothing to update
            x = float(track.peak)
            track.peak = 0
            rate = self.attack if x > track.loudness else self.release
            track.loudness += rate * (x - track.loudness)
            if track.loudness < _SETTLED:
                track.loudness = 0.0  # not a slow crawl through denormals to zero
            if track.loudness >= active_floor:
                track.last_active = tick
                active.append(source)

        tracks = self._tracks
        selected = [s for s in self._selected if tick - tracks[s].last_active <= self.hold_ticks]
        candidates = sorted(
            (s for s in active if s not in selected),
            key=lambda s: tracks[s].loudness,
            reverse=True,
        )
        for source in candidates:
            if len(selected) < self.max_talkers:
                selected.append(source)
                tracks[source].selected_at = tick
                continue
            quietest = min(selected, key=lambda s: tracks[s].loudness)
            quiet = tracks[quietest]
            if (
                tracks[source].loudness > quiet.loudness + self.switch_margin_db
                and tick - quiet.selected_at >= self.min_ticks
            ):
                selected[selected.index(quietest)] = source
                tracks[source].selected_at = tick
            else:
                break  # candidates are sorted: no quieter one can displace anybody
        selected.sort(key=lambda s: tracks[s].loudness, reverse=True)
        self._selected = selected
        return list(selected)

    def sources(self) -> Iterable[SourceId]:
        return self._tracks.keys()
