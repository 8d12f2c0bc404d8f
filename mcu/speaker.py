"""Active speaker detection from the RFC 6464 audio level, without decoding.

Each audio packet carries the sender's level in -dBov (0 loudest, 127 silence). The
forwarder sums ``127 - level`` per producer; every interval the detector turns those
sums into "who is speaking" and the dominant speaker, with hysteresis so that a cough
does not steal the floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPEAKING_ACTIVITY = 127 - 55  # louder than -55 dBov on average counts as speaking
SWITCH_MARGIN = 1.15  # a challenger must be this much louder than the current speaker
SWITCH_INTERVALS = 2  # ... for this many intervals in a row


@dataclass
class SpeakerDetector:
    active: str | None = None
    speaking: frozenset[str] = frozenset()
    recent: list[str] = field(default_factory=list)  # most recent speaker first
    _challenger: str | None = None
    _challenger_count: int = 0

    def update(self, activity: dict[str, float]) -> bool:
        """Feed one interval's mean activity (0-127) per participant; True if anything changed."""
        speaking = frozenset(pid for pid, value in activity.items() if value >= SPEAKING_ACTIVITY)
        changed = speaking != self.speaking
        self.speaking = speaking
        if self.active is not None and self.active not in activity:
            self.active = None  # left the room
            changed = True
        loudest = max(speaking, key=lambda pid: activity[pid], default=None)
        if loudest is None or loudest == self.active:
            self._challenger, self._challenger_count = None, 0
        else:
            current = activity.get(self.active, 0.0) if self.active in speaking else 0.0
            if activity[loudest] >= current * SWITCH_MARGIN:
                if loudest == self._challenger:
                    self._challenger_count += 1
                else:
                    self._challenger, self._challenger_count = loudest, 1
                if self._challenger_count >= SWITCH_INTERVALS or self.active is None:
                    self.active = loudest
                    self._challenger, self._challenger_count = None, 0
                    changed = True
        for pid in sorted(speaking, key=lambda p: activity[p]):
            if pid in self.recent:
                self.recent.remove(pid)
            self.recent.insert(0, pid)
        self.recent = [pid for pid in self.recent if pid in activity]
        return changed

    def forget(self, participant_id: str) -> None:
        if participant_id in self.recent:
            self.recent.remove(participant_id)
        if self.active == participant_id:
            self.active = None
