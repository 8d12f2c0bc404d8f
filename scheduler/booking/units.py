"""Capacity units: what one participant of each kind costs a media worker.

A unit is one thousandth of a CPU core of a media worker (a millicore). The cost of each
participant kind is a setting (see docs/scheduler.md, "Capacity model", for where each
default comes from); the scheduler only ever adds these numbers up.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS: tuple[str, ...] = ("hd", "sd", "audio", "mixed")


@dataclass(frozen=True)
class UnitCosts:
    """Units one participant of each kind costs; defaults are documented calibrations."""

    hd: int = 11
    sd: int = 6
    audio: int = 2
    mixed: int = 4
    # A room with mixed participants, once on each worker that mixes it: the mixing tick
    # and the composite (camera decodes, compose, one encode per size received).
    mixed_room: int = 400

    def __post_init__(self) -> None:
        for kind in KINDS:
            if getattr(self, kind) < 1:
                raise ValueError(f"unit cost of {kind!r} must be at least 1")
        if self.mixed_room < 0:
            raise ValueError("unit cost of a mixed room must not be negative")

    def of(self, kind: str) -> int:
        if kind not in KINDS:
            raise ValueError(f"unknown participant kind {kind!r}")
        return int(getattr(self, kind))


@dataclass(frozen=True)
class ParticipantMix:
    """Expected participants of a booking, by kind."""

    hd: int = 0
    sd: int = 0
    audio: int = 0
    mixed: int = 0

    @property
    def total(self) -> int:
        return self.hd + self.sd + self.audio + self.mixed

    def units(self, costs: UnitCosts) -> int:
        """What the participants cost together: each its kind's, and a room with mixed
        participants its composite once."""
        return (self.hd * costs.hd + self.sd * costs.sd + self.audio * costs.audio
                + self.mixed * costs.mixed + (costs.mixed_room if self.mixed else 0))

    def as_dict(self) -> dict[str, int]:
        return {"hd": self.hd, "sd": self.sd, "audio": self.audio, "mixed": self.mixed}
