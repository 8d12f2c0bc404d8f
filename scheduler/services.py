"""The scheduler as one object for the composition root: services, jobs, admission."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler.booking import calls, occupancy
from scheduler.booking.bookings import load_policy
from scheduler.booking.jobs import Clock, JobRunner
from scheduler.booking.mail import deliver_outbox
from scheduler.booking.notices import JoinLink
from scheduler.booking.recurrence import utc_now
from scheduler.config import SchedulerConfig
from scheduler.db import Database
from scheduler.media import rooms
from scheduler.media.closing import CLOSE_REASONS
from scheduler.media.rooms import AdmissionDecision, RoomControl, RoomInfo

log = logging.getLogger(__name__)


class NoRoomControl:
    """For a control process without media: rooms are created on first join instead."""

    async def open_room(self, room: str, worker_id: int, info: RoomInfo) -> None:
        log.info("room %s open on worker %s", room, worker_id)

    async def call_units(self, room: str, worker_id: int, units: tuple[tuple[str, str], ...]) -> None:
        log.warning("room %s: no media here to call its %d room unit(s) from", room, len(units))

    async def close_room(self, room: str, reason: str) -> None:
        log.info("room %s closed: %s", room, CLOSE_REASONS.get(reason, reason))


class SchedulerServices:
    """What the rest of the service uses of the scheduler.

    ``join_link(room, role)`` makes the signed link put into invitations (the
    composition root builds it from signaling's join tokens); ``room_control`` opens and
    closes media rooms; ``clock`` is replaceable for tests.
    """

    def __init__(self, db: Database, config: SchedulerConfig, *, join_link: JoinLink,
                 room_control: RoomControl | None = None, clock: Clock | None = None,
                 run_jobs: bool = True, workers: Collection[int] | None = None) -> None:
        self.db = db
        self.config = config
        self.join_link = join_link
        self.room_control = room_control or NoRoomControl()
        self.clock: Callable[[], datetime] = clock or utc_now
        # ``workers``: this node's media workers, whose booked rooms' units its jobs call.
        self.jobs = JobRunner(db, config, self.room_control, join_link, self.clock, workers)
        self.run_jobs = run_jobs

    def warm_up(self) -> int:
        """Read the coming weeks' capacity into memory (occupancy.warm): at start-up,
        before the first request; how many days it holds."""
        return occupancy.warm(self.db, self.clock().date(),
                              lambda session: load_policy(session, self.config),
                              self.config.limits.max_duration)

    async def start(self) -> None:
        if self.run_jobs:
            await self.jobs.start()

    async def stop(self) -> None:
        await self.jobs.stop()

    # For signaling (blocking calls: run them in a thread from async code) ------------

    def admit_join(self, room_name: str, now: datetime | None = None,
                   kind: str | None = None) -> AdmissionDecision:
        return self._opening_room(lambda session: rooms.admit_join(
            session, room_name, now or self.clock(), config=self.config, kind=kind))

    def place_room(self, room_name: str, now: datetime | None = None) -> AdmissionDecision:
        """Where an ad-hoc room lives (several nodes): see :func:`rooms.place_room`."""
        return self._opening_room(lambda session: rooms.place_room(
            session, room_name, now or self.clock(), config=self.config))

    def _opening_room(self, decide: Callable[[Session], AdmissionDecision]) -> AdmissionDecision:
        """A decision that may open a room, in a write session of its own."""
        for attempt in range(3):
            try:
                with self.db.write_session() as session:
                    return decide(session)
            except IntegrityError:
                # Two first joins opened the same room at once: the other one won.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def release_room(self, room_name: str, now: datetime | None = None) -> bool:
        with self.db.write_session() as session:
            return rooms.release_room(session, room_name, now or self.clock())

    def record_join(self, room_name: str, *, participant: str = "", kind: str = "hd",
                    organisation_id: int | None = None, worker_id: int | None = None,
                    now: datetime | None = None) -> int:
        with self.db.write_session() as session:
            return calls.record_join(session, room_name, now or self.clock(),
                                     participant=participant, kind=kind,
                                     organisation_id=organisation_id, worker_id=worker_id)

    def record_leave(self, record_id: int, now: datetime | None = None) -> None:
        with self.db.write_session() as session:
            calls.record_leave(session, record_id, now or self.clock())

    def reopen_calls(self, record_ids: list[int], now: datetime | None = None) -> dict[int, int]:
        with self.db.write_session() as session:
            return calls.reopen_calls(session, record_ids, now or self.clock())

    def record_kind(self, record_id: int, kind: str) -> None:
        with self.db.write_session() as session:
            calls.record_kind(session, record_id, kind)

    def deliver_outbox(self) -> int:
        return deliver_outbox(self.db, self.config.smtp, self.clock())
