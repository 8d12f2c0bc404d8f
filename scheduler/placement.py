"""Which worker a room goes to: the one with the most room to spare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerLoad:
    worker_id: int
    capacity: int
    booked: int  # units of the open rooms placed on it
    live: int  # units of the participants in it now

    @property
    def spare(self) -> int:
        # Booked rooms may not have filled yet, and live load may exceed a booking.
        return self.capacity - max(self.booked, self.live)


def place(workers: Sequence[WorkerLoad], units: int) -> WorkerLoad | None:
    """The worker with the most spare units that fits ``units``; else the emptiest one.

    None only when there is no worker at all. A room larger than any worker's spare
    still goes to the emptiest (capacity was admitted for the pool as a whole; the
    media path cascades a room across workers when it outgrows one).
    """
    if not workers:
        return None
    ranked = sorted(workers, key=lambda w: (-w.spare, w.worker_id))
    fitting = [w for w in ranked if w.spare >= units]
    return fitting[0] if fitting else ranked[0]
