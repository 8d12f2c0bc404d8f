"""Which worker a room goes to: the one with the most room to spare, on suitable ground.

Node labels (``MULTIPOINT_NODE_LABELS``) keep the Integrated Rescue System on its own
ground: an IZS room (a standing bridge, an IZS or emergency booking) goes to a worker of a
node labelled ``izs`` whenever such a live node has a worker, else anywhere (a bridge is
never refused for want of its own ground). A node labelled ``izs`` and not ``general`` is
*IZS-only*: no other room is placed on it, even when everything else is full. A node
labelled both takes IZS rooms first and others too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

IZS = "izs"
GENERAL = "general"


def izs_only(labels: Collection[str]) -> bool:
    """Does a node with these labels take IZS rooms only?"""
    return IZS in labels and GENERAL not in labels


@dataclass(frozen=True)
class WorkerLoad:
    worker_id: int
    capacity: int
    booked: int  # units of the open rooms placed on it
    live: int  # units of the participants in it now
    labels: frozenset[str] = frozenset()  # its node's

    @property
    def spare(self) -> int:
        # Booked rooms may not have filled yet, and live load may exceed a booking.
        return self.capacity - max(self.booked, self.live)


def candidates(workers: Sequence[WorkerLoad], izs: bool) -> list[WorkerLoad]:
    """The workers a room may go to by its node's labels (see the module's rule)."""
    if izs:
        own = [w for w in workers if IZS in w.labels]
        return own or list(workers)
    return [w for w in workers if not izs_only(w.labels)]


def place(workers: Sequence[WorkerLoad], units: int, *, izs: bool = False,
          ) -> WorkerLoad | None:
    """Of the candidates for the room, the worker with the most spare units that fits
    ``units``; else the emptiest one.

    None only when there is no candidate at all. A room larger than any worker's spare
    still goes to the emptiest (capacity was admitted for the pool as a whole; the
    media path cascades a room across workers when it outgrows one).
    """
    allowed = candidates(workers, izs)
    if not allowed:
        return None
    ranked = sorted(allowed, key=lambda w: (-w.spare, w.worker_id))
    fitting = [w for w in ranked if w.spare >= units]
    return fitting[0] if fitting else ranked[0]
