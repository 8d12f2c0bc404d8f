"""The call page when the server refuses its join for good: a meeting cancelled while
the official was in it, a room not open yet. The bookings are made, cancelled and closed
through the scheduler's own services, as the operator's would be."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.access.auth import create_user
from scheduler.access.permissions import Principal
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.models import Booking, Organisation
from scheduler.seed import seed
from signaling.links import join_url
from tests.browser.conftest import new_context
from tests.conftest import RunningServer

pytestmark = pytest.mark.browser

PRAGUE = ZoneInfo("Europe/Prague")


@dataclass
class Booked:
    booking_id: int
    room: str
    start: datetime  # UTC
    operator: Principal


def book(server: RunningServer, starts_in: timedelta) -> Booked:
    """An operator's hour-long booking for an ORP, starting ``starts_in`` from now (to
    the minute)."""
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        seed(session, local_workers=1, worker_capacity_units=800)
        orp = session.scalars(select(Organisation).where(Organisation.kind == "orp")).first()
        user = create_user(session, "operator", "operator", None)
        operator = Principal(user.id, user.name, "operator", None, "")
        organisation_id = orp.id
    start = (services.clock() + starts_in).astimezone(PRAGUE).replace(
        tzinfo=None, second=0, microsecond=0)
    decision = bookings.create_booking(
        services.db, services.config, operator,
        bookings.BookingInput(organisation_id=organisation_id, title="Porada starostů",
                              schedule=Schedule(start, start + timedelta(hours=1)),
                              participants=ParticipantMix(hd=3)),
        services.clock(), services.join_link)
    with server.app[DATABASE].session() as session:
        room = session.get(Booking, decision.booking_id).room_name
    return Booked(decision.booking_id, room, start.replace(tzinfo=PRAGUE).astimezone(UTC),
                  operator)


def link(server: RunningServer, room: str) -> str:
    return join_url(server.url, server.settings.signing_secret(), room, role="guest",
                    name="Obecní úřad Lhota", ttl_s=3600, scheduled=True)


async def test_a_meeting_cancelled_during_the_call_ends_the_page_at_once(server, browser) -> None:
    """The operator cancels the meeting while the official is in it: the scheduler closes
    its room, the page joins again and is refused "booking_cancelled". It used to take
    that for a passing fault and try 20 times (about 2.5 minutes, "Reconnecting…" over
    controls that looked live), then say the connection could not be restored, as if
    the network were at fault. It stops at once and says the meeting was cancelled."""
    booked = book(server, timedelta(minutes=2))  # within the open lead: joins are admitted
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(link(server, booked.room) + "&autojoin=1")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 1",
                                     timeout=30_000)

        services = server.app[SERVICES]
        bookings.cancel_booking(services.db, booked.operator, booked.booking_id,
                                services.clock(), services.join_link)
        await services.jobs.tick()  # the job closes the cancelled meeting's room

        await page.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('byla zrušena')",
            timeout=30_000)
        # Ended, not waiting for another attempt.
        assert not await page.is_visible("#incall .controls")
        attempts = await page.evaluate("window.multipointCall.reconnects")
        await asyncio.sleep(5)  # past the next two waits (2 and 4 s) of a rejoin loop
        assert await page.evaluate("window.multipointCall.reconnects") == attempts == 1
        notice = await page.text_content("#notice")
        assert "Tato schůzka byla zrušena" in notice and "Obnovuji" not in notice
        assert errors == []
    finally:
        await context.close()
