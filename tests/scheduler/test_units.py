"""A booking's units: each expected participant at its kind's cost."""

from __future__ import annotations

import dataclasses

from scheduler.booking.units import KINDS, ParticipantMix, UnitCosts


def test_every_kind_is_counted_at_its_own_cost() -> None:
    costs = UnitCosts(hd=11, sd=6, audio=2, mixed=4, mixed_room=400)
    # Mixed participants: each its own units, and their room's composite once.
    assert ParticipantMix(hd=3, sd=2, audio=5, mixed=2).units(costs) == 33 + 12 + 10 + 8 + 400
    assert ParticipantMix(hd=3, sd=2, audio=5).units(costs) == 33 + 12 + 10
    for kind in KINDS:  # one participant of a kind costs that kind's units, no other's
        one = ParticipantMix(**{kind: 1})
        assert one.units(costs) == costs.of(kind) + (costs.mixed_room if kind == "mixed" else 0)
        assert one.as_dict() == {other: int(other == kind) for other in KINDS}
    assert [field.name for field in dataclasses.fields(ParticipantMix)] == list(KINDS)
