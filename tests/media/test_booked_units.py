"""A booking's room units are called into its room at its start: the whole service with
its job runner on a clock the test moves, and baresip as the unit (tests/sip_unit.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from sqlalchemy import select

from multipoint.app import DATABASE, LIVE_ROOMS, create_app
from multipoint.settings import Settings
from scheduler.access.auth import create_user
from scheduler.access.permissions import Principal
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.bookings import pool_units
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.models import Booking, BookingOccurrence, CallRecord, Endpoint, Organisation, User
from scheduler.seed import seed
from signaling.sip.message import tag_of
from tests.conftest import RunningServer, free_port
from tests.media.test_sip_units import OFFER, RawSip
from tests.peers import wait_until
from tests.scheduler.conftest import FakeClock
from tests.sip_unit import BARESIP, Baresip

pytestmark = [pytest.mark.media,
              pytest.mark.skipif(BARESIP is None, reason="no baresip (scripts/test installs it)")]

PRAGUE = ZoneInfo("Europe/Prague")
UNIT_NAME = "Zasedačka Benešov"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The test moves the scheduler's clock a minute or two ahead of the real one; the
    # node's lease (renewed on the real clock) must not lapse on the moved one, or no
    # worker would be live to open the room on.
    settings.node_lease_seconds = 600
    return settings


def moved_clock(server: RunningServer) -> FakeClock:
    """The scheduler's clock (bookings, the jobs, admission) made one the test moves,
    starting at the real time."""
    clock = FakeClock(datetime.now(UTC))
    services = server.app[SERVICES]
    services.clock = services.jobs.clock = clock
    return clock


def book_with_units(server: RunningServer, clock: FakeClock,
                    units: dict[str, str]) -> tuple[str, datetime]:
    """An operator's booking for an ORP, starting within two minutes, that names a unit
    of that ORP for each of ``units`` (name: SIP URI); its room and its start."""
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        seed(session, local_workers=1, worker_capacity_units=800)
        orp = session.scalars(select(Organisation).where(Organisation.kind == "orp")).first()
        endpoint_ids = []
        for index, (name, uri) in enumerate(units.items()):
            unit = Endpoint(serial=f"SN-{index}", model="X30", site=name,
                            organisation_id=orp.id, status="in_service", sip_uri=uri)
            session.add(unit)
            session.flush()
            endpoint_ids.append(unit.id)
        user = create_user(session, "operator", "operator", None)
        operator = Principal(user.id, user.name, "operator", None, "")
        organisation_id = orp.id
    start = (clock() + timedelta(minutes=2)).astimezone(PRAGUE).replace(tzinfo=None, second=0,
                                                                        microsecond=0)
    decision = bookings.create_booking(
        services.db, services.config, operator,
        bookings.BookingInput(organisation_id=organisation_id, title="Porada s jednotkou",
                              schedule=Schedule(start, start + timedelta(hours=1)),
                              participants=ParticipantMix(mixed=1),
                              call_units=tuple(endpoint_ids)),
        clock(), services.join_link)
    with server.app[DATABASE].session() as session:
        room = session.get(Booking, decision.booking_id).room_name
    return room, start.replace(tzinfo=PRAGUE).astimezone(UTC)


def closed_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_bookings_unit_is_called_in_at_its_start_and_listed(server, tmp_path: Path) -> None:
    unit = Baresip(tmp_path / "unit", auto_answer=True)
    await unit.start()
    live_rooms = server.app[LIVE_ROOMS]
    live_rooms.booked_retry_s = 1.0  # the real half minute is too long to wait for here
    nobody = f"sip:nobody@127.0.0.1:{closed_tcp_port()};transport=tcp"
    try:
        clock = moved_clock(server)
        room, start = book_with_units(server, clock, {
            UNIT_NAME: f"sip:unit@127.0.0.1:{unit.sip_port}", "Nikdo": nobody})
        # The job opens the room ahead of the start (the open lead): nobody is rung yet.
        clock.now = start - timedelta(seconds=2)
        actions = await server.app[SERVICES].jobs.tick()
        assert [(a.kind, a.room) for a in actions] == [("open", room)]
        assert not [d for d in live_rooms.dials if d["room"] == room]
        # At the start the job calls the units: the unit rings, answers, and is in the room.
        clock.now = start
        actions = await server.app[SERVICES].jobs.tick()
        assert [(a.kind, a.room) for a in actions] == [("call", room)]
        calls = {d["target"]: d for d in live_rooms.dials if d["room"] == room}
        assert all(d["by"] == "booking" for d in calls.values())
        called = calls[f"sip:unit@127.0.0.1:{unit.sip_port}"]
        assert await wait_until(lambda: called["outcome"] == "connected", timeout=20), called
        assert await wait_until(lambda: unit.saw("CALL_ESTABLISHED") is not None), unit.log[-2000:]
        (live,) = [r for r in await live_rooms.rooms() if r["name"] == room]
        assert [p["name"] for p in live["participants"]] == [UNIT_NAME]
        assert called["participant"] == live["participants"][0]["id"]
        assert called["tries"] == 1
        # The address where nobody answers: tried once more, then left alone.
        missed = calls[nobody]
        assert await wait_until(lambda: missed["tries"] == 2 and missed["outcome"] != "ringing",
                                timeout=20), missed
        assert missed["outcome"] == "unreachable"

        def recorded() -> list[str]:
            with server.app[DATABASE].session() as session:
                return [r.participant for r in session.scalars(
                    select(CallRecord).where(CallRecord.room_name == room))]

        assert await wait_until(lambda: recorded() == [UNIT_NAME])
        # A later tick opens nothing again and calls nobody again.
        clock.now = start + timedelta(seconds=30)
        assert await server.app[SERVICES].jobs.tick() == []
        assert [d["target"] for d in live_rooms.dials if d["room"] == room].count(nobody) == 1
        await asyncio.sleep(2 * live_rooms.booked_retry_s)  # no third try comes
        assert missed["tries"] == 2 and missed["outcome"] == "unreachable"
    finally:
        await unit.stop()


def displace_by_an_emergency(server: RunningServer, clock: FakeClock, room: str,
                              start: datetime) -> None:
    """An IZS emergency booked over the meeting of ``room`` that needs the units it
    holds: the scheduler displaces the meeting's occurrence (scheduler/booking/bookings.py)."""
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
        user = session.scalars(select(User).where(User.name == "operator")).one()
        operator = Principal(user.id, user.name, "operator", None, "")
        held = sum(session.scalars(select(BookingOccurrence.units).join(Booking)
                                   .where(Booking.room_name == room)))
        pool = pool_units(session)
    hd_cost = services.config.unit_costs.hd
    hd = (pool - held) // hd_cost + 1  # one more than is free beside the meeting
    assert hd * hd_cost <= pool, (hd, hd_cost, pool)
    local = start.astimezone(PRAGUE).replace(tzinfo=None)
    bookings.create_booking(
        services.db, services.config, operator,
        bookings.BookingInput(organisation_id=izs.id, title="Povodně", priority="emergency",
                              schedule=Schedule(local, local + timedelta(hours=1)),
                              participants=ParticipantMix(hd=hd)),
        clock(), services.join_link)
    with server.app[DATABASE].session() as session:
        states = set(session.scalars(select(BookingOccurrence.state).join(Booking)
                                     .where(Booking.room_name == room)))
    assert states == {"displaced"}, states


async def test_a_unit_calling_a_meeting_displaced_by_an_izs_emergency_gets_404_as_for_a_cancelled_one(
        server) -> None:
    """A meeting whose time went to an IZS emergency is not on and will not be: a room
    unit dialling its room is answered 404 with why, as for a cancelled meeting. It was
    480 Temporarily Unavailable (the scheduler's booking_displaced was missing from the
    SIP agent's refusals), which tells a unit to call again later, to be refused again."""
    clock = moved_clock(server)
    room, start = book_with_units(server, clock, {})
    displace_by_an_emergency(server, clock, room, start)
    clock.now = start  # the meeting's time: it would be on, had it not given way
    raw = RawSip(server)
    try:
        uri = f"sip:{room}@127.0.0.1"
        raw.send(raw.request("INVITE", uri, call_id="displaced", body=OFFER))
        trying, refused = await raw.responses(2)
        assert trying.status == 100
        assert refused.status == 404 and "IZS emergency" in refused.reason, (refused.status, refused.reason)
        raw.send(raw.request("ACK", uri, call_id="displaced", to_tag=tag_of(refused.get("To"))))
        assert not server.app[LIVE_ROOMS].signaling.channels.get(room)  # nothing placed
    finally:
        raw.close()


async def test_a_unit_calling_before_its_meeting_gets_480_and_a_room_nobody_booked_404(server) -> None:
    """docs/sip.md: a booking not on yet is 480 Temporarily Unavailable (the unit may call
    again when it opens), a room nobody booked 404 Not Found. Both were 404: the
    scheduler says room_not_open either way, and only its opens_at tells them apart."""
    clock = moved_clock(server)
    room, start = book_with_units(server, clock, {})
    clock.now = start - timedelta(hours=1)  # before the room opens (10 minutes ahead)
    raw = RawSip(server)
    try:
        for call_id, target, status in (("early", room, 480), ("nobody", "nikdo-nerezervoval", 404)):
            uri = f"sip:{target}@127.0.0.1"
            raw.send(raw.request("INVITE", uri, call_id=call_id, body=OFFER))
            trying, refused = await raw.responses(2)
            assert trying.status == 100
            assert refused.status == status, (target, refused.status, refused.reason)
            raw.send(raw.request("ACK", uri, call_id=call_id, to_tag=tag_of(refused.get("To"))))
        assert not server.app[LIVE_ROOMS].signaling.channels.get(room)  # nothing placed
    finally:
        raw.close()


@pytest.fixture
async def server_without_sip(settings: Settings) -> AsyncIterator[RunningServer]:
    port = free_port()
    settings.public_url = f"http://127.0.0.1:{port}"
    settings.sip_enabled = False
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield RunningServer(runner, settings, port)
    finally:
        await runner.cleanup()


async def test_with_sip_off_the_room_opens_and_no_unit_is_called(
        server_without_sip, caplog: pytest.LogCaptureFixture) -> None:
    server = server_without_sip
    clock = moved_clock(server)
    room, start = book_with_units(server, clock, {UNIT_NAME: "sip:unit@127.0.0.1:5999"})
    clock.now = start
    with caplog.at_level(logging.WARNING, logger="signaling.operations"):
        actions = await server.app[SERVICES].jobs.tick()
    assert [(a.kind, a.room) for a in actions] == [("open", room), ("call", room)]
    assert not server.app[LIVE_ROOMS].dials
    assert any("SIP is off" in r.getMessage() and room in r.getMessage() for r in caplog.records)


async def start_node(settings: Settings, port: int, now: datetime | None = None) -> RunningServer:
    """The service on ``port``, its scheduler's clock at ``now`` (a clock the test moves)
    from before it starts, so that its jobs' first round runs at that time."""
    app = create_app(settings)
    if now is not None:
        services = app[SERVICES]
        services.clock = services.jobs.clock = FakeClock(now)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return RunningServer(runner, settings, port)


async def test_a_restarted_node_calls_the_units_of_its_meeting_again(settings: Settings,
                                                                     tmp_path: Path) -> None:
    unit = Baresip(tmp_path / "unit", auto_answer=True)
    await unit.start()
    port = free_port()
    settings.public_url = f"http://127.0.0.1:{port}"
    settings.node_lease_seconds = 600
    target = f"sip:unit@127.0.0.1:{unit.sip_port}"
    server = await start_node(settings, port)
    try:
        clock = moved_clock(server)
        room, start = book_with_units(server, clock, {UNIT_NAME: target})
        clock.now = start
        assert [a.kind for a in await server.app[SERVICES].jobs.tick()] == ["open", "call"]
        assert await wait_until(lambda: unit.saw("CALL_ESTABLISHED") is not None, timeout=20), \
            unit.log[-2000:]
        # The node stops in the middle of the meeting (a deployment, a crash): the call
        # ends with it.
        await server.runner.cleanup()
        assert await wait_until(lambda: unit.saw("CALL_CLOSED") is not None, timeout=20), \
            unit.log[-2000:]
        unit.events.clear()

        # Started again, the node calls the unit back into the meeting by itself.
        server = await start_node(settings, port, now=start + timedelta(minutes=3))
        live_rooms = server.app[LIVE_ROOMS]

        def dialled() -> list[dict]:
            return [d for d in live_rooms.dials if d["room"] == room and d["target"] == target]

        assert await wait_until(lambda: [d["outcome"] for d in dialled()] == ["connected"],
                                timeout=20), dialled()
        assert await wait_until(lambda: unit.saw("CALL_ESTABLISHED") is not None), unit.log[-2000:]
        (live,) = [r for r in await live_rooms.rooms() if r["name"] == room]
        assert [p["name"] for p in live["participants"]] == [UNIT_NAME]
        # Once: the next round calls nobody.
        assert await server.app[SERVICES].jobs.tick() == []
        assert len(dialled()) == 1
    finally:
        await server.runner.cleanup()
        await unit.stop()
