"""Jobs: open rooms before their start, call their room units at it, close them after
(and the room of a standing bridge switched off), remind, roll up usage.

Everything a job does is recorded on the occurrence it concerns (opened_at,
units_called_at, closed_at, reminded_at), or on the room (a bridge's room closed), in
the transaction that does it. So the job
runner keeps no state of its own: after a restart it looks at the database, does what
is due and was not done, and nothing twice (room units' calls, which a restart ends,
are the one thing done again: :func:`~scheduler.media.rooms.recall_units`). APScheduler
only decides *when* to look: a date job at the next due instant, a safety tick, and a daily roll-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from scheduler.booking import notices
from scheduler.booking.calls import USAGE_ZONE, rollup_day, usage_day
from scheduler.booking.mail import deliver_outbox
from scheduler.booking.notices import JoinLink
from scheduler.config import SchedulerConfig
from scheduler.db import Database
from scheduler.media.closing import close_reason
from scheduler.media.rooms import RoomControl, RoomInfo, close_room, open_room, recall_units
from scheduler.models import (
    Booking,
    BookingOccurrence,
    BookingUnit,
    CallRecord,
    Endpoint,
    Room,
    StandingBridge,
    UsageDayRolledUp,
)

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
T = TypeVar("T")
# How far back the roll-up looks for days not rolled up (the day cache's quarter).
CATCH_UP = timedelta(days=92)


@dataclass(frozen=True)
class RoomAction:
    kind: str  # "open", "call" (the room units, at the start) or "close"
    room: str
    worker_id: int | None = None
    info: RoomInfo | None = None
    units: tuple[tuple[str, str], ...] = ()  # "call": each unit's name in the room and SIP URI
    reason: str = "meeting_over"  # "close": why (scheduler/media/closing.py), told to those in it


def _locked(session: Session, query):  # type: ignore[no-untyped-def]
    # Two control processes may run jobs: on PostgreSQL each takes the rows it acts on and
    # skips rows another holds; SQLite's write session is exclusive anyway.
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def _units_to_call(workers: Collection[int] | None) -> ColumnElement[bool]:
    """Occurrences whose room units are still to be called, once started: open, their
    booking names units, and (``workers`` given) their room is on one of those workers.

    Only the node whose worker has the room calls: that is where its calls are placed.
    With several nodes each one's runner takes its own rooms' units, a room moved off a
    dead node included.
    """
    o = BookingOccurrence
    room_here = select(Room.id).join(Booking, Booking.room_name == Room.name).where(
        Booking.id == o.booking_id, Room.state == "open", Room.occurrence_id == o.id)
    if workers is not None:
        room_here = room_here.where(Room.worker_id.in_(list(workers)))
    return (o.state == "scheduled") & o.opened_at.is_not(None) & o.closed_at.is_(None) \
        & o.units_called_at.is_(None) \
        & exists(select(BookingUnit.endpoint_id).where(BookingUnit.booking_id == o.booking_id)) \
        & exists(room_here)


def _switched_off() -> Select[tuple[int]]:
    """The ids of the standing bridges switched off."""
    return select(StandingBridge.id).where(StandingBridge.active.is_(False))


def due_actions(db: Database, config: SchedulerConfig, now: datetime,
                join_link: JoinLink, workers: Collection[int] | None = None) -> list[RoomAction]:
    """Do in the database what is due at ``now``; return what the media side must do.

    ``workers``: the media workers of this node, whose rooms' units this node calls
    (None: any worker's, one process doing everything)."""
    actions: list[RoomAction] = []
    o = BookingOccurrence
    with db.write_session() as session:
        # Close first: a series with back-to-back occurrences closes and reopens.
        ending = session.scalars(_locked(session, select(o).where(
            o.opened_at.is_not(None), o.closed_at.is_(None),
            (o.end_utc <= now - config.close_grace) | (o.state != "scheduled")))).all()
        for occurrence in ending:
            occurrence.closed_at = now
            booking = session.get(Booking, occurrence.booking_id)
            assert booking is not None
            room = session.scalar(select(Room).where(Room.name == booking.room_name))
            if room is not None and room.occurrence_id in (occurrence.id, None) \
                    and close_room(session, booking.room_name, now):
                # Its true reason: a cancelled or displaced meeting's participants were
                # told that its booked time was over.
                actions.append(RoomAction("close", booking.room_name,
                                          reason=close_reason(session, room)))

        # A standing bridge switched off: its room closes now, those in it told why, as a
        # cancelled meeting's. It used to stay open, new joins admitted, for ever.
        for room in session.scalars(_locked(session, select(Room).where(
                Room.state == "open", Room.bridge_id.in_(_switched_off())))).all():
            if close_room(session, room.name, now):
                actions.append(RoomAction("close", room.name, reason=close_reason(session, room)))

        earliest = now - config.limits.max_duration - config.close_grace
        opening = session.scalars(_locked(session, select(o).where(
            o.state == "scheduled", o.opened_at.is_(None), o.start_utc >= earliest,
            o.start_utc <= now + config.open_lead, o.end_utc > now - config.close_grace)
            .order_by(o.start_utc))).all()
        for occurrence in opening:
            booking = session.get(Booking, occurrence.booking_id)
            assert booking is not None
            room = open_room(session, config, booking.room_name, occurrence.units, now,
                             booking_id=booking.id, occurrence_id=occurrence.id)
            if room is None:
                log.error("no media worker for room %s", booking.room_name)
                continue
            occurrence.opened_at = now
            info = RoomInfo(room=booking.room_name, title=booking.title, units=occurrence.units,
                            expected_participants=sum(booking.participants.values()),
                            izs=booking.izs, booking_id=booking.id, ends_at=occurrence.end_utc)
            actions.append(RoomAction("open", booking.room_name, room.worker_id, info))

        # Room units are rung at the start itself, not at the opening minutes before. Done
        # once per occurrence (units_called_at), unless those calls were lost since.
        calling = session.scalars(_locked(session, select(o).where(
            _units_to_call(workers), o.start_utc <= now, o.end_utc > now)
            .order_by(o.start_utc))).all()
        for occurrence in calling:
            occurrence.units_called_at = now
            booking = session.get(Booking, occurrence.booking_id)
            assert booking is not None
            room = session.scalar(select(Room).where(Room.name == booking.room_name))
            assert room is not None
            units = units_to_call(session, booking.id)
            if units:  # each may have lost its SIP address since the booking named it
                actions.append(RoomAction("call", booking.room_name, room.worker_id, units=units))

        reminding = session.scalars(_locked(session, select(o).where(
            o.state == "scheduled", o.reminded_at.is_(None), o.start_utc > now,
            o.start_utc <= now + config.reminder_lead))).all()
        for occurrence in reminding:
            booking = session.get(Booking, occurrence.booking_id)
            assert booking is not None
            notices.reminder(session, booking, occurrence, join_link)
            occurrence.reminded_at = now
    return actions


def units_to_call(session: Session, booking_id: int) -> tuple[tuple[str, str], ...]:
    """The booking's room units that still have a SIP address (one may have lost it
    since the booking named it): each one's name in the room and its address."""
    rows = session.execute(
        select(Endpoint.serial, Endpoint.site, Endpoint.sip_uri)
        .join(BookingUnit, BookingUnit.endpoint_id == Endpoint.id)
        .where(BookingUnit.booking_id == booking_id, Endpoint.sip_uri.is_not(None))
        .order_by(Endpoint.id)).all()
    return tuple((site or serial, sip_uri) for serial, site, sip_uri in rows if sip_uri)


def next_due(db: Database, config: SchedulerConfig, now: datetime,
             workers: Collection[int] | None = None) -> datetime | None:
    """The next instant at which :func:`due_actions` will have something to do."""
    o = BookingOccurrence
    with db.session() as session:
        candidates = [
            # Every occurrence :func:`due_actions` would open, overdue ones included (a
            # meeting booked for the current minute has started already): due at once.
            session.scalar(select(func.min(o.start_utc)).where(
                o.state == "scheduled", o.opened_at.is_(None),
                o.start_utc >= now - config.limits.max_duration - config.close_grace,
                o.end_utc > now - config.close_grace)),
            session.scalar(select(func.min(o.end_utc)).where(
                o.opened_at.is_not(None), o.closed_at.is_(None))),
            session.scalar(select(func.min(o.start_utc)).where(
                o.state == "scheduled", o.reminded_at.is_(None), o.start_utc > now)),
            session.scalar(select(func.min(o.start_utc)).where(
                _units_to_call(workers), o.end_utc > now)),
        ]
        # An open room whose occurrence was cancelled, displaced or replaced closes at
        # once (due_actions closes it now), not at its booked end plus the grace; so does
        # the open room of a bridge switched off.
        stopped_early = session.scalar(select(o.id).where(
            o.opened_at.is_not(None), o.closed_at.is_(None), o.state != "scheduled").limit(1)) \
            or session.scalar(select(Room.id).where(
                Room.state == "open", Room.bridge_id.in_(_switched_off())).limit(1))
    offsets = [-config.open_lead, config.close_grace, -config.reminder_lead, timedelta(0)]
    instants = [c + offset for c, offset in zip(candidates, offsets, strict=True) if c]
    if stopped_early is not None:
        instants.append(now)
    return max(now, min(instants)) if instants else None


def _failure_logged(future: asyncio.Future[Any]) -> None:
    """The failure of a thread whose job was cancelled meanwhile: logged, not lost."""
    if not future.cancelled() and future.exception() is not None:
        log.error("job work failed after its job was cancelled",
                  exc_info=future.exception())


class JobRunner:
    """Runs the jobs on APScheduler's clock.

    Stopping (the service's clean-up, SIGTERM) lets a tick or roll-up in flight finish
    rather than cancelling it: its database work runs in a thread that a cancellation
    would not stop, so it would commit after the runner had stopped, and the cancelled
    job would log a CancelledError. A job that falls due while stopping does nothing.
    """

    def __init__(self, db: Database, config: SchedulerConfig, room_control: RoomControl,
                 join_link: JoinLink, clock: Clock, workers: Collection[int] | None = None) -> None:
        self.db, self.config, self.room_control = db, config, room_control
        self.join_link, self.clock = join_link, clock
        self.workers = workers  # this node's media workers (None: any)
        self._lock = asyncio.Lock()  # one job at a time; stop() waits on it
        self._scheduler: AsyncIOScheduler | None = None
        self._stopping = False
        self._threads: set[asyncio.Future[Any]] = set()  # database work in flight

    async def start(self) -> None:
        self._stopping = False
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(self.tick, "interval",
                                seconds=self.config.tick.total_seconds(), id="tick",
                                coalesce=True, max_instances=1)
        # Ten minutes into the day of usage, which is Prague's (calls.USAGE_ZONE).
        self._scheduler.add_job(self.rollup, "cron", hour=0, minute=10, timezone=USAGE_ZONE,
                                id="rollup", coalesce=True, max_instances=1)
        self._scheduler.start()
        if self.workers is not None:
            # This node starts: the room-unit calls it placed before are gone with the
            # process that placed them. Its rooms' meetings still on call them again.
            def recall() -> int:
                with self.db.write_session() as session:
                    return recall_units(session, self.clock(), workers=self.workers)
            if recalled := await self._in_thread(recall):
                log.info("the room units of %d meeting(s) on this node are called again", recalled)
        await self.tick()  # catch up on whatever fell due while the service was down
        await self.rollup()

    async def stop(self) -> None:
        """Stop running jobs; returns once the job in flight, if any, has finished."""
        self._stopping = True
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.pause()  # no new runs
        await asyncio.sleep(0)  # a run just handed to the loop sees _stopping and returns
        async with self._lock:  # the job in flight, if any, has finished
            if self._threads:  # its thread, should its task have been cancelled
                await asyncio.wait(set(self._threads))
            if scheduler is not None:
                scheduler.shutdown(wait=False)  # nothing left to cancel

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread, which :meth:`stop` waits for even if the job
        awaiting it is cancelled."""
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_failure_logged)
            raise

    async def tick(self) -> list[RoomAction]:
        if self._stopping:
            return []
        async with self._lock:
            if self._stopping:
                return []
            now = self.clock()
            actions = await self._in_thread(due_actions, self.db, self.config, now,
                                            self.join_link, self.workers)
            # Done even while stopping: the database already says these rooms are open
            # (or closed), so the media side is told.
            for action in actions:
                try:
                    if action.kind == "open":
                        assert action.worker_id is not None and action.info is not None
                        await self.room_control.open_room(action.room, action.worker_id,
                                                          action.info)
                    elif action.kind == "call":
                        assert action.worker_id is not None
                        await self.room_control.call_units(action.room, action.worker_id,
                                                           action.units)
                    else:
                        await self.room_control.close_room(action.room, action.reason)
                except Exception:  # the media side's trouble must not stop the jobs
                    log.exception("room control failed to %s %s", action.kind, action.room)
            if self._stopping:
                return actions  # the outbox waits for the next start
            try:
                await self._in_thread(deliver_outbox, self.db, self.config.smtp, now)
            except Exception:
                log.exception("delivering notices failed")
            await self._schedule_next(now)
            return actions

    async def reschedule(self) -> None:
        """A booking changed: look again for the next due instant (it may be sooner)."""
        now = self.clock()
        if self._scheduler is None:
            return
        due = await asyncio.to_thread(next_due, self.db, self.config, now, self.workers)
        if self._scheduler is None:  # stopped meanwhile
            return
        if due is not None and due <= now:
            # Due already (a meeting booked for right now): run at once.
            self._scheduler.add_job(self.tick, id="next-due", replace_existing=True)
        elif due is not None:
            self._scheduler.add_job(self.tick, "date", run_date=self._wall_time(due, now),
                                    id="next-due", replace_existing=True)

    async def rollup(self, day: date | None = None) -> None:
        """Roll up the usage of ``day``; by default of every day not rolled up yet
        through yesterday (Prague's days, at most :data:`CATCH_UP` back): at start-up
        the days that ended while the service was down (a weekend, a holiday), at night
        also one whose roll-up failed. Each day is recomputed whole, so doing one again
        changes nothing; a day done is remembered (``usage_days_rolled_up``), one with
        no usage too."""
        if self._stopping:
            return
        now = self.clock()
        yesterday = usage_day(now) - timedelta(days=1)

        def work() -> None:
            days = [day] if day is not None else self._days_to_roll_up(yesterday)
            for each in days:
                with self.db.write_session() as session:
                    rollup_day(session, each, now)

        async with self._lock:
            if not self._stopping:
                await self._in_thread(work)

    def _days_to_roll_up(self, yesterday: date) -> list[date]:
        """The days through ``yesterday``, at most :data:`CATCH_UP` back, not rolled up
        yet (a failed one included), from the first with a meeting or a call: no day
        before it has any usage."""
        first = yesterday - CATCH_UP
        o = BookingOccurrence
        with self.db.read_session() as session:
            done = set(session.scalars(select(UsageDayRolledUp.day)
                                       .where(UsageDayRolledUp.day >= first)))
            starts = [session.scalar(select(func.min(o.start_utc))
                                     .where(o.state == "scheduled")),
                      session.scalar(select(func.min(CallRecord.joined_at)))]
        earliest = [usage_day(start) for start in starts if start is not None]
        if not earliest:
            return []
        first = max(first, min(earliest))
        days = (first + timedelta(days=n) for n in range((yesterday - first).days + 1))
        return [day for day in days if day not in done]

    async def _schedule_next(self, now: datetime) -> None:
        if self._scheduler is None:
            return
        due = await self._in_thread(next_due, self.db, self.config, now, self.workers)
        if self._scheduler is None:  # stopped meanwhile
            return
        # Due already means an action failed (say, no worker to open a room on): leave it
        # to the safety tick rather than retrying in a tight loop.
        if due is not None and due > now:
            self._scheduler.add_job(self.tick, "date", run_date=self._wall_time(due, now),
                                    id="next-due", replace_existing=True)

    @staticmethod
    def _wall_time(due: datetime, now: datetime) -> datetime:
        """When, on APScheduler's own (real) clock, ``due`` on the runner's clock comes.

        APScheduler runs on the real clock and drops a date job whose time has passed. The
        runner's clock is the real one in service and a hand-moved one in tests: keeping
        the delay, not the instant, makes the two agree in both.
        """
        return datetime.now(UTC) + (due - now)
