"""Jobs open and close rooms on time, remind once, and survive a restart; admission."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from scheduler.booking.bookings import (
    BookingChange,
    BookingInput,
    cancel_booking,
    create_booking,
    update_booking,
)
from scheduler.booking.bridges import create_bridge, switch_off
from scheduler.booking.jobs import next_due
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.db import Database
from scheduler.media.room_signals import rooms_to_stop
from scheduler.media.rooms import RoomInfo, worker_loads
from scheduler.models import (
    Booking,
    CallRecord,
    Notification,
    Room,
    StandingBridge,
    UsageDaily,
)
from scheduler.organisations import org_info
from scheduler.services import SchedulerServices
from tests.scheduler.conftest import NOW, FakeClock, World, join_link, make_world


@dataclass
class RecordingRoomControl:
    """Stands in for the media side: records what it was told, like a real one would do."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    infos: dict[str, RoomInfo] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # room -> why it was last closed

    async def open_room(self, room: str, worker_id: int, info: RoomInfo) -> None:
        self.calls.append(("open", room))
        self.infos[room] = info

    async def close_room(self, room: str, reason: str) -> None:
        self.calls.append(("close", room))
        self.reasons[room] = reason


def assert_runs_in(run_time: datetime, delay: timedelta) -> None:
    """APScheduler runs on the real clock: the job is due ``delay`` after the real now."""
    expected = datetime.now(UTC) + delay
    assert expected - timedelta(minutes=1) <= run_time <= expected


def services(world: World, clock: FakeClock, control: RecordingRoomControl,
             db: Database | None = None) -> SchedulerServices:
    return SchedulerServices(db or world.db, world.config, join_link=join_link,
                             room_control=control, clock=clock)


def book(world: World, start: str, end: str, rrule: str | None = None, hd: int = 5,
         who: str = "admin_a", organisation: int | None = None) -> tuple[int, str]:
    data = BookingInput(organisation_id=organisation or world.region_a, title="Porada",
                        schedule=Schedule(datetime.fromisoformat(start),
                                          datetime.fromisoformat(end), rrule=rrule),
                        participants=ParticipantMix(hd=hd))
    decision = create_booking(world.db, world.config, world.principal(who), data, NOW,
                              join_link)
    with world.db.session() as session:
        room = session.scalar(select(Booking.room_name).where(Booking.id == decision.booking_id))
    assert room is not None
    return decision.booking_id, room


async def test_room_opens_and_closes_on_time_across_restarts(world: World) -> None:
    # 10:00-11:00 Prague = 09:00-10:00 UTC; opens 10 min before, closes 15 min after.
    _, room = book(world, "2026-11-30T10:00", "2026-11-30T11:00")
    control = RecordingRoomControl()
    clock = FakeClock(NOW)  # 08:00 UTC
    first = services(world, clock, control)
    await first.jobs.tick()
    assert control.calls == []
    assert not first.admit_join(room, now=clock.now - timedelta(minutes=1)).allowed

    clock.now = NOW + timedelta(minutes=49)  # 08:49: one minute too early
    await first.jobs.tick()
    assert control.calls == []
    clock.now = NOW + timedelta(minutes=50)
    await first.jobs.tick()
    assert control.calls == [("open", room)]
    assert control.infos[room].units == 55

    # A restart: a new process with its own engine on the same database.
    second_db = Database(world.db.url)
    try:
        second = services(world, clock, control, db=second_db)
        clock.now = NOW + timedelta(minutes=55)
        await second.jobs.tick()
        assert control.calls == [("open", room)], "nothing done twice after a restart"
        decision = second.admit_join(room, now=NOW + timedelta(hours=1, minutes=30))
        assert decision.allowed and decision.code == "ok" and decision.worker_id is not None

        clock.now = NOW + timedelta(hours=2, minutes=14)  # 10:14 UTC: still in the grace
        await second.jobs.tick()
        assert control.calls == [("open", room)]
    finally:
        second_db.dispose()

    # Down over the closing time; the next start closes the room it missed closing.
    third_db = Database(world.db.url)
    try:
        clock.now = NOW + timedelta(hours=3)
        third = services(world, clock, control, db=third_db)
        await third.jobs.tick()
        await third.jobs.tick()
        assert control.calls == [("open", room), ("close", room)]
        refused = third.admit_join(room)
        assert not refused.allowed and refused.code == "meeting_over"
    finally:
        third_db.dispose()


async def test_each_occurrence_of_a_series_opens_and_closes_once(world: World) -> None:
    _, room = book(world, "2026-11-30T10:00", "2026-11-30T11:00", "FREQ=DAILY;COUNT=2")
    control = RecordingRoomControl()
    clock = FakeClock(NOW)
    jobs = services(world, clock, control).jobs
    for hours in range(0, 30):
        clock.now = NOW + timedelta(hours=hours, minutes=55)
        await jobs.tick()
    assert control.calls == [("open", room), ("close", room)] * 2


async def test_reminders_go_out_once(world: World) -> None:
    book(world, "2026-11-30T12:00", "2026-11-30T13:00")  # 11:00 UTC, reminder at 10:00
    clock = FakeClock(NOW)
    jobs = services(world, clock, RecordingRoomControl()).jobs
    for minutes in (0, 119, 120, 121, 150):
        clock.now = NOW + timedelta(minutes=minutes)
        await jobs.tick()
    with world.db.session() as session:
        reminders = session.scalar(select(func.count()).select_from(Notification)
                                   .where(Notification.kind == "reminder"))
    assert reminders == 1


async def test_started_runner_schedules_the_next_opening(world: World) -> None:
    book(world, "2026-11-30T12:00", "2026-11-30T13:00")  # opens 10:50 UTC
    clock = FakeClock(NOW)
    service = services(world, clock, RecordingRoomControl())
    await service.start()
    try:
        job = service.jobs._scheduler.get_job("next-due")  # type: ignore[union-attr]
        assert job is not None
        # The reminder (an hour before) is due first, at 10:00 UTC: two hours from the
        # runner's 08:00, so two hours from now on APScheduler's real clock.
        assert_runs_in(job.next_run_time, timedelta(hours=2))
    finally:
        await service.stop()


async def test_a_start_rolls_up_the_days_that_ended_while_the_service_was_down(
        world: World) -> None:
    for day in ("2026-11-30", "2026-12-01", "2026-12-02"):
        book(world, f"{day}T10:00", f"{day}T11:00")

    def rolled_up() -> list[tuple[str, float]]:
        with world.db.session() as session:
            return [(day.isoformat(), hours) for day, hours in session.execute(
                select(UsageDaily.day, UsageDaily.booked_unit_hours).order_by(UsageDaily.day))]

    clock = FakeClock(datetime(2026, 11, 30, 23, 10, tzinfo=UTC))  # 1 Dec 00:10 in Prague
    service = services(world, clock, RecordingRoomControl())
    await service.jobs.rollup()  # the nightly roll-up: 30 November
    assert rolled_up() == [("2026-11-30", 55.0)]

    # Down from then until Friday 4 December, 9:00: the start rolls up 1, 2 and 3 December
    # (it used to do only the 3rd, and the other two were never in any report).
    clock.now = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    second_db = Database(world.db.url)
    try:
        second = services(world, clock, RecordingRoomControl(), db=second_db)
        await second.start()
        await second.stop()
    finally:
        second_db.dispose()
    expected = [("2026-11-30", 55.0), ("2026-12-01", 55.0), ("2026-12-02", 55.0)]
    assert rolled_up() == expected
    await service.jobs.rollup()  # the same night again: nothing twice
    assert rolled_up() == expected


def test_admission_refuses_unknown_cancelled_and_displaced_rooms(world: World) -> None:
    service = services(world, FakeClock(NOW), RecordingRoomControl())
    assert service.admit_join("nothing-here").code == "room_not_open"

    booking_id, room = book(world, "2026-11-30T09:05", "2026-11-30T10:00")
    assert service.admit_join(room).allowed  # 08:00 UTC = 09:00 Prague: within the lead
    cancel_booking(world.db, world.principal("admin_a"), booking_id, NOW, join_link)
    assert service.admit_join(room, now=NOW + timedelta(minutes=10)).code == "booking_cancelled"

    _, routine = book(world, "2026-11-30T14:00", "2026-11-30T15:00", hd=60)
    data = BookingInput(organisation_id=world.izs, title="Povodně", priority="emergency",
                        schedule=Schedule(datetime(2026, 11, 30, 14), datetime(2026, 11, 30, 15)),
                        participants=ParticipantMix(hd=80))
    create_booking(world.db, world.config, world.principal("izs"), data, NOW, join_link)
    assert service.admit_join(routine, now=NOW + timedelta(hours=5)).code == "booking_displaced"


def test_a_room_not_open_yet_says_when_it_opens(world: World) -> None:
    """For the page's own text in its language ("you can join from 10:50"): the time is
    a field of the refusal, not only in its English message."""
    service = services(world, FakeClock(NOW), RecordingRoomControl())
    assert service.admit_join("nothing-here").opens_at is None
    _, room = book(world, "2026-11-30T12:00", "2026-11-30T13:00", "FREQ=DAILY;COUNT=2")
    refused = service.admit_join(room)  # 11:00 UTC, admitted from 10:50
    assert refused.code == "room_not_open"
    assert refused.opens_at == datetime(2026, 11, 30, 10, 50, tzinfo=UTC)
    after_the_first = service.admit_join(room, now=NOW + timedelta(hours=6))
    assert after_the_first.opens_at == datetime(2026, 12, 1, 10, 50, tzinfo=UTC)
    # Its last occurrence is over: a code of its own, for the page to say so (it said
    # "join at the time of the meeting").
    after_the_last = service.admit_join(room, now=NOW + timedelta(days=2))
    assert after_the_last.code == "meeting_over" and after_the_last.opens_at is None


def test_standing_bridge_is_always_admitted_even_on_a_full_worker(db: Database) -> None:
    world = make_world(db, workers=1, capacity=100)
    with db.session() as session:
        org = org_info(session, world.izs)
        assert org is not None
        bridge = create_bridge(session, world.config, org, "Krizový štáb",
                               ParticipantMix(hd=5))
        bridge_room = bridge.room_name
    service = services(world, FakeClock(NOW), RecordingRoomControl())
    _, routine = book(world, "2026-11-30T09:05", "2026-11-30T10:00", hd=1, who="operator",
                      organisation=world.central)
    first = service.admit_join(routine)
    assert first.allowed
    # Fill the only worker (100 units) with live participants: 9 x 11 = 99.
    for index in range(9):
        service.record_join(routine, participant=f"p{index}")
    full = service.admit_join(routine)
    assert not full.allowed and full.code == "worker_full"
    izs = service.admit_join(bridge_room)
    assert izs.allowed and izs.worker_id == first.worker_id
    with db.session() as session:
        assert session.scalar(select(Room.state).where(Room.name == bridge_room)) == "open"


def test_a_mixed_room_costs_its_composite_once_on_its_worker(db: Database) -> None:
    """A room's first mixed participant starts its composite: the room's mixed_room units,
    once on its worker, on top of each mixed participant's own (docs/scheduler.md)."""
    world = make_world(db, workers=1, capacity=500)
    costs = world.config.unit_costs
    assert (costs.hd, costs.mixed, costs.mixed_room) == (11, 4, 400)
    service = services(world, FakeClock(NOW), RecordingRoomControl())
    _, first_room = book(world, "2026-11-30T09:05", "2026-11-30T10:00", hd=1, who="operator",
                         organisation=world.central)
    _, second_room = book(world, "2026-11-30T09:05", "2026-11-30T10:00", hd=1, who="operator",
                          organisation=world.central)
    assert service.admit_join(first_room, kind="mixed").allowed  # 4 + 400 of 500
    service.record_join(first_room, participant="unit-1", kind="mixed")
    for index in range(8):  # 404 + 8 x 11 = 492
        service.record_join(first_room, participant=f"p{index}")
    with db.session() as session:
        assert [load.live for load in worker_loads(session, costs)] == [492]
    assert service.admit_join(first_room, kind="hd").code == "worker_full"  # 503
    assert service.admit_join(first_room, kind="mixed").allowed  # 496: its composite is paid
    # Another room's first mixed participant would start a second composite: 896.
    assert service.admit_join(second_room, kind="mixed").code == "worker_full"
    assert service.admit_join(second_room, kind="audio").allowed  # 494
    with db.session() as session:
        unit = session.scalar(select(CallRecord.id).where(CallRecord.participant == "unit-1"))
    service.record_leave(unit)  # the room's last mixed participant: no composite any more
    with db.session() as session:
        assert [load.live for load in worker_loads(session, costs)] == [88]


async def test_a_new_booking_brings_the_next_run_forward(world: World) -> None:
    clock = FakeClock(NOW)
    service = services(world, clock, RecordingRoomControl())
    await service.start()
    try:
        assert service.jobs._scheduler.get_job("next-due") is None  # type: ignore[union-attr]
        book(world, "2026-11-30T11:30", "2026-11-30T12:00")  # 10:30 UTC, reminder 09:30
        await service.jobs.reschedule()
        job = service.jobs._scheduler.get_job("next-due")  # type: ignore[union-attr]
        assert job is not None
        assert_runs_in(job.next_run_time, timedelta(minutes=90))
    finally:
        await service.stop()


async def _until(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Wait (on the real loop) until ``condition`` holds; fail after ``limit_s``."""
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still waiting for {what}")


async def test_a_meeting_booked_for_the_current_minute_opens_at_once(world: World) -> None:
    # 08:00:20 UTC: a meeting booked for this minute (09:00 Prague) has started already.
    clock = FakeClock(NOW + timedelta(seconds=20))
    _, room = book(world, "2026-11-30T09:00", "2026-11-30T10:00")
    assert next_due(world.db, world.config, clock.now) == clock.now
    clock.advance(timedelta(minutes=3))  # overdue and still not open: due now, not later
    assert next_due(world.db, world.config, clock.now) == clock.now

    # With the safety tick an hour away, only the due instant can open the room.
    config = dataclasses.replace(world.config, tick=timedelta(hours=1))
    control = RecordingRoomControl()
    service = SchedulerServices(world.db, config, join_link=join_link, room_control=control,
                                clock=clock)
    await service.start()
    try:
        assert control.calls == [("open", room)]  # the start-up tick catches up
        clock.advance(timedelta(minutes=27))  # 08:30:20: the second one's start has come
        _, now_room = book(world, "2026-11-30T09:30", "2026-11-30T10:00")
        await service.jobs.reschedule()
        await _until(lambda: ("open", now_room) in control.calls, "the room to open")
    finally:
        await service.stop()


async def test_stopping_waits_for_the_tick_in_flight(world: World,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM during a tick: the service's clean-up stops the runner while the tick's
    thread is inside its transaction. Stopping must let that transaction end first (no
    write after the runner has stopped) and log no error (no CancelledError)."""
    config = dataclasses.replace(world.config, tick=timedelta(hours=1))  # no safety tick
    service = SchedulerServices(world.db, config, join_link=join_link,
                                room_control=RecordingRoomControl(), clock=FakeClock(NOW))
    await service.start()  # nothing is due yet
    order: list[str] = []
    entered, release, committed = threading.Event(), threading.Event(), threading.Event()

    # The tick's transaction, as it writes a reminder, waits (before its commit) until
    # the test lets it go: a tick caught in flight.
    def flushed(session: Session, _context: object) -> None:
        if any(isinstance(row, Notification) and row.kind == "reminder" for row in session.new):
            session.info["reminder"] = True
            entered.set()
            release.wait(30)

    def after_commit(session: Session) -> None:
        if session.info.pop("reminder", False):
            order.append("reminder committed")
            committed.set()

    hooks = (("after_flush", flushed), ("after_commit", after_commit))
    for name, hook in hooks:
        event.listen(Session, name, hook)
    caplog.set_level(logging.INFO)
    try:
        book(world, "2026-11-30T09:30", "2026-11-30T10:30")  # reminder due now, opens later
        await service.jobs.reschedule()  # the runner ticks at once
        assert await asyncio.to_thread(entered.wait, 20), "the tick did not start"
        stopping = asyncio.create_task(service.stop())
        await asyncio.sleep(0)  # the stop begins while the tick's thread is held
        release.set()
        await asyncio.wait_for(stopping, 30)
        order.append("stopped")
        await asyncio.to_thread(committed.wait, 20)
    finally:
        release.set()
        for name, hook in hooks:
            event.remove(Session, name, hook)
    assert order == ["reminder committed", "stopped"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    with world.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Notification)
                              .where(Notification.kind == "reminder")) == 1


async def test_a_running_meeting_cancelled_is_due_to_close_at_once(world: World) -> None:
    # 09:00-10:00 Prague = 08:00-09:00 UTC, running at 08:20 UTC; it is cancelled then.
    booking_id, room = book(world, "2026-11-30T09:00", "2026-11-30T10:00")
    clock = FakeClock(NOW + timedelta(minutes=20))
    control = RecordingRoomControl()
    first = services(world, clock, control)
    await first.jobs.tick()
    assert control.calls == [("open", room)]
    cancel_booking(world.db, world.principal("admin_a"), booking_id, clock.now, join_link)
    # Its room must close now, not at the end of the booked time (plus the grace): the
    # due instant is what the runner schedules its next tick by after a change.
    assert next_due(world.db, world.config, clock.now) == clock.now
    await first.jobs.tick()
    assert control.calls == [("open", room), ("close", room)]
    assert next_due(world.db, world.config, clock.now) != clock.now  # nothing more to do now


async def test_a_room_closes_telling_its_true_reason(world: World) -> None:
    """Every room the job closed was closed "because the booked time is over": a meeting
    cancelled, one that gave way to an IZS emergency, one moved to another time. Those in
    it are told the true reason, and so are those on another node that hears of the close."""
    # At 08:20 UTC (09:20 Prague) all four are open: two running, two within the lead.
    clock = FakeClock(NOW + timedelta(minutes=20))
    _, over = book(world, "2026-11-30T09:00", "2026-11-30T09:30")
    cancelled_id, cancelled = book(world, "2026-11-30T09:00", "2026-11-30T10:00")
    _, displaced = book(world, "2026-11-30T09:30", "2026-11-30T10:30", hd=50)
    moved_id, moved = book(world, "2026-11-30T09:25", "2026-11-30T10:00")
    control = RecordingRoomControl()
    jobs = services(world, clock, control).jobs
    await jobs.tick()
    assert {room for kind, room in control.calls if kind == "open"} \
        == {over, cancelled, displaced, moved}

    cancel_booking(world.db, world.principal("admin_a"), cancelled_id, clock.now, join_link)
    emergency = BookingInput(
        organisation_id=world.izs, title="Povodně", priority="emergency",
        schedule=Schedule(datetime(2026, 11, 30, 9, 30), datetime(2026, 11, 30, 10, 30)),
        participants=ParticipantMix(hd=40))
    assert create_booking(world.db, world.config, world.principal("izs"), emergency, clock.now,
                          join_link).displaced
    update_booking(world.db, world.config, world.principal("admin_a"), moved_id,
                   BookingChange(schedule=Schedule(datetime(2026, 11, 30, 11),
                                                   datetime(2026, 11, 30, 11, 30))),
                   clock.now, join_link)
    await jobs.tick()
    assert control.reasons == {cancelled: "booking_cancelled", displaced: "booking_displaced",
                               moved: "rescheduled"}
    clock.now = NOW + timedelta(minutes=45)  # 09:30 Prague and the 15 minutes' grace
    await jobs.tick()
    assert control.reasons[over] == "meeting_over"

    # A node where these rooms live (a worker of another node's) hears the same.
    with world.db.read_session() as session:
        assert rooms_to_stop(session, [], dict.fromkeys(control.reasons, NOW)) == control.reasons


async def test_a_bridge_switched_off_closes_its_room_and_admits_nobody(db: Database) -> None:
    """An operator switched a standing IZS bridge off while its room was open: admission
    looked again only at booked rooms, and nothing ever closed a bridge's room, so new
    joins went on being admitted for as long as the room stayed open. Now nobody more
    is admitted, and the job closes its room at once, telling those in it why."""
    world = make_world(db)
    with db.session() as session:
        org = org_info(session, world.izs)
        assert org is not None
        bridge = create_bridge(session, world.config, org, "Krizový štáb", ParticipantMix(hd=5))
        bridge_id, room = bridge.id, bridge.room_name
    clock = FakeClock(NOW)
    control = RecordingRoomControl()
    service = services(world, clock, control)
    assert service.admit_join(room).allowed  # opens its room
    assert next_due(db, world.config, clock.now) != clock.now

    with db.write_session() as session:
        switch_off(session, session.get(StandingBridge, bridge_id))
    refused = service.admit_join(room)  # before the job has closed its room
    assert not refused.allowed and refused.code == "bridge_inactive"
    assert next_due(db, world.config, clock.now) == clock.now  # it closes now
    await service.jobs.tick()
    assert control.calls == [("close", room)] and control.reasons == {room: "bridge_inactive"}
    with db.session() as session:
        assert session.scalar(select(Room.state).where(Room.name == room)) == "closed"
    assert service.admit_join(room).code == "bridge_inactive"
    assert next_due(db, world.config, clock.now) != clock.now  # nothing more to do now
    await service.jobs.tick()
    assert control.calls == [("close", room)]


async def test_a_quiet_deployment_rolls_up_each_day_once(world: World) -> None:
    """Days with no meeting and no call leave no usage rows; the roll-up must remember
    them anyway. It used to take the day after the last usage row for the first day not
    rolled up, so after a meeting on 30 November every night and every start redid every
    quiet day since (up to 92 of them), more each night."""
    book(world, "2026-11-30T10:00", "2026-11-30T11:00")
    recomputed: list[str] = []

    def executed(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("DELETE FROM usage_daily"):  # rollup_day replaces a day
            recomputed.append(statement)

    async def nightly(day: int) -> int:
        """The roll-up at 00:10 in Prague on ``day`` December: how many days it redid."""
        recomputed.clear()
        clock.now = datetime(2026, 12, day, 0, 10, tzinfo=ZoneInfo("Europe/Prague"))
        await service.jobs.rollup()
        return len(recomputed)

    clock = FakeClock(NOW)
    service = services(world, clock, RecordingRoomControl())
    event.listen(world.db.engine, "before_cursor_execute", executed)
    try:
        assert [await nightly(day) for day in range(1, 6)] == [1, 1, 1, 1, 1]
        recomputed.clear()
        await service.start()  # a restart the same day: nothing to do again
        await service.stop()
        assert recomputed == []
    finally:
        event.remove(world.db.engine, "before_cursor_execute", executed)
    with world.db.session() as session:
        assert session.scalars(select(UsageDaily.day)).all() == [date(2026, 11, 30)]


async def test_a_day_whose_roll_up_failed_is_rolled_up_the_next_night(world: World) -> None:
    book(world, "2026-12-01T10:00", "2026-12-01T11:00")
    clock = FakeClock(datetime(2026, 12, 1, 23, 10, tzinfo=UTC))  # 2 Dec 00:10 in Prague

    def failing(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("DELETE FROM usage_daily"):
            raise RuntimeError("the database went away")

    service = services(world, clock, RecordingRoomControl())
    event.listen(world.db.engine, "before_cursor_execute", failing)
    try:
        with pytest.raises(RuntimeError):
            await service.jobs.rollup()  # 1 December fails
    finally:
        event.remove(world.db.engine, "before_cursor_execute", failing)
    clock.advance(timedelta(days=1))
    await service.jobs.rollup()  # 1 December again, and 2 December
    with world.db.session() as session:
        assert session.execute(select(UsageDaily.day, UsageDaily.booked_unit_hours)).all() \
            == [(date(2026, 12, 1), 55.0)]


async def test_a_day_rolled_up_before_it_ends_is_rolled_up_again_after(world: World) -> None:
    """The roll-up of a day asked for by hand while it runs (rollup(day)) must not count
    as the day's roll-up: the night after it would skip the day, and lose what came
    after."""
    _, room = book(world, "2026-11-30T10:00", "2026-11-30T11:00")
    clock = FakeClock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))  # 9:00 in Prague
    service = services(world, clock, RecordingRoomControl())
    await service.jobs.rollup(date(2026, 11, 30))  # nothing yet but the booked units
    clock.now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    await service.jobs.tick()  # the room opens; a call comes
    record = service.record_join(room, participant="Jana", now=clock.now)
    service.record_leave(record, now=clock.now + timedelta(minutes=30))
    clock.now = datetime(2026, 11, 30, 23, 10, tzinfo=UTC)  # 1 Dec 00:10 in Prague
    await service.jobs.rollup()
    with world.db.session() as session:
        assert session.execute(select(UsageDaily.day, UsageDaily.calls,
                                      UsageDaily.participant_seconds)).all() \
            == [(date(2026, 11, 30), 1, 1800)]
