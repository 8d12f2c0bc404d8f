"""Placing a room on the worker with the most room to spare."""

from __future__ import annotations

from scheduler.media.placement import WorkerLoad, place


def test_room_goes_to_the_worker_with_most_spare_that_fits() -> None:
    workers = [WorkerLoad(1, 800, booked=600, live=100), WorkerLoad(2, 800, booked=100, live=450),
               WorkerLoad(3, 400, booked=0, live=0)]
    # Spare: 200, 350 (live load counts when above the booking), 400.
    assert place(workers, 100) == workers[2]
    assert place(workers, 380) == workers[2]
    assert place(workers, 500) == workers[2], "too big for all: the emptiest"


def test_no_worker_means_no_placement() -> None:
    assert place([], 10) is None
