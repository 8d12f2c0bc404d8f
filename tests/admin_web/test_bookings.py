"""An ORP admin books a recurring meeting through the form and finds it in the calendar."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from multipoint.app import DATABASE
from scheduler.access.auth import principal_of
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.dial_in import booking_number
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.db import Database
from scheduler.models import Booking, BookingOccurrence, User
from tests.admin_web.conftest import BEROUN, book_through_api, sign_in
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser


def book_for_beroun(server, accounts, day: str) -> int:
    """Beroun's own meeting the same week, booked the way the API books it."""
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        beroun = principal_of(session.scalar(select(User).where(User.name == "beroun")))
    start = datetime.fromisoformat(f"{day}T13:00")
    decision = bookings.create_booking(
        services.db, services.config, beroun,
        bookings.BookingInput(organisation_id=accounts.organisations[BEROUN],
                              title="Porada Beroun", schedule=Schedule(start, start + timedelta(hours=1)),
                              participants=ParticipantMix(hd=2)),
        services.clock(), services.join_link)
    return decision.booking_id


async def test_orp_admin_books_a_recurring_meeting_and_sees_only_their_own(server, accounts,
                                                                           context) -> None:
    today = datetime.now(ZoneInfo("Europe/Prague")).date()
    monday = today + timedelta(days=7 - today.weekday() + 7)  # beyond the borrowing lead
    beroun_booking = book_for_beroun(server, accounts, monday.isoformat())

    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.click("#new-booking")
    await page.fill("#f-title", "Porada starostů ORP Benešov")
    await page.fill("#f-date", monday.isoformat())
    await page.fill("#f-start", "09:00")
    await page.fill("#f-end", "10:30")
    await page.fill("#f-hd", "4")
    await page.fill("#f-audio", "2")
    # The capacity left for that time shows while it is chosen: that of these participants
    # (the form's first, for its defaults, may show first, and then "checking").
    needed = ParticipantMix(hd=4, audio=2).units(server.app[SERVICES].config.unit_costs)
    await page.wait_for_function(
        "(units) => document.getElementById('capacity').dataset.needed === units", arg=str(needed))
    assert "Vejde se" in await page.text_content("#capacity.fits")
    await page.select_option("#f-repeat", "weekly")
    await page.check("input[name=weekday][value=MO]")
    await page.fill("#f-count", "4")
    await page.fill("#f-invitees", "starosta@benesov.cz")
    await screenshot(page, "admin-booking-form")
    await page.click("#save-booking")

    await page.wait_for_selector("#saved")
    assert await page.text_content("#booking-title") == "Porada starostů ORP Benešov"
    assert await page.locator("#occurrences li[data-state=scheduled]").count() == 4
    assert "FREQ=WEEKLY" in await page.text_content("#rrule")
    # Dates and counts in Czech, by Babel: "7. 12. 2026 9:00", "50 jednotek".
    when = await page.text_content("#booking-when")
    assert when.startswith(f"{monday.day}. {monday.month}. {monday.year} 9:00")
    units = (await page.text_content("#booking-participants")).rsplit("= ", 1)[1]
    number, word = units.split()
    assert word == {1: "jednotka", 2: "jednotky", 3: "jednotky", 4: "jednotky"}.get(int(number), "jednotek")
    invitation = await page.request.get(await page.get_attribute("#invitation", "href"))
    assert invitation.ok and "RRULE:FREQ=WEEKLY" in await invitation.text()
    # What a room unit dials, and the PIN it keys in: the booking's own.
    booking_id = int(page.url.split("?")[0].rsplit("/", 1)[1])
    with server.app[DATABASE].session() as session:
        pin = session.get(Booking, booking_id).dial_in_pin
    dial = await page.text_content("#dial-in")
    assert f"sip:{booking_number(booking_id)}@" in dial and pin in dial
    await screenshot(page, "admin-booking")
    booking_url = page.url.split("?")[0]

    # One meeting of the series is called off from its page; the others stay, and it
    # is an exception of the series from now on (the invitation's EXDATE).
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    second = page.locator("#occurrences li").nth(1)
    await second.locator(".cancel-occurrence").click()
    await page.wait_for_selector("#occurrences li[data-state=cancelled]")
    assert await page.locator("#occurrences li[data-state=scheduled]").count() == 3
    assert await page.locator("#occurrences li").nth(1).get_attribute("data-state") \
        == "cancelled"
    assert await page.locator("#occurrences li").nth(1).locator(".cancel-occurrence").count() == 0
    invitation = await page.request.get(await page.get_attribute("#invitation", "href"))
    assert "EXDATE" in await invitation.text()
    # A change of the series in the form (half an hour later) keeps it cancelled.
    await page.goto(booking_url + "/edit")
    await page.fill("#f-start", "09:30")
    await page.fill("#f-end", "11:00")
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    assert await page.locator("#occurrences li[data-state=scheduled]").count() == 3
    invitation = await page.request.get(await page.get_attribute("#invitation", "href"))
    assert "EXDATE" in await invitation.text()

    # The calendar shows it (week view), and not Beroun's meeting that same Monday.
    await page.goto("/admin/bookings")
    await page.evaluate(f"window.multipointCalendar.gotoDate('{monday.isoformat()}')")
    event = page.locator(".fc-event", has_text="Porada starostů ORP Benešov")
    await event.first.wait_for()
    assert await page.locator(".fc-event", has_text="Porada Beroun").count() == 0
    await page.click(".fc-dayGridMonth-button")
    # The month's grid shows the meetings still on (the first, third and fourth) that
    # fall within its six weeks: a series that starts late in a month runs past them.
    grid_start, grid_end = await page.evaluate(
        "[window.multipointCalendar.view.activeStart, window.multipointCalendar.view.activeEnd]"
        ".map(d => d.toISOString().slice(0, 10))")
    shown = [day for day in (monday + timedelta(weeks=n) for n in (0, 2, 3))
             if grid_start <= day.isoformat() < grid_end]
    assert shown and await page.locator(".fc-event", has_text="Porada starostů").count() == len(shown)
    await page.click(".fc-timeGridWeek-button")
    await screenshot(page, "admin-calendar")
    await page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, upright
    await screenshot(page, "admin-calendar-tablet")
    await page.set_viewport_size({"width": 1280, "height": 900})
    response = await page.goto(f"/admin/bookings/{beroun_booking}")
    assert response.status == 403

    # A big briefing at the same time no longer fits in what Benešov may use then (its
    # region's share and the unassigned rest): the refusal says why and offers the
    # nearest times when it does fit.
    await page.goto("/admin/bookings/new")
    await page.fill("#f-title", "Krajský briefing")
    await page.fill("#f-date", monday.isoformat())
    await page.fill("#f-start", "09:00")
    await page.fill("#f-end", "10:30")
    await page.fill("#f-hd", "25")
    await page.wait_for_selector("#capacity.short")
    await page.click("#save-booking")
    await page.wait_for_selector("#refusal")
    # The scheduler's words, in Czech (they were English on the Czech page).
    refusal = await page.text_content("#refusal p")
    assert "Nevejde se 1 z 1 schůzek; první, " in refusal and "do not fit" not in refusal
    assert refusal.endswith("(zbytek je garantován jiným organizacím).")
    slots = page.locator("#refusal .use-slot")
    assert await slots.count() >= 1
    await screenshot(page, "admin-booking-refused")
    await slots.first.click()
    await page.wait_for_selector("#capacity.fits")
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    assert booking_url != page.url.split("?")[0]


async def test_the_last_occurrence_left_of_a_series_is_cancelled_with_the_booking(
    server, accounts, context
) -> None:
    # Its own "Cancel this occurrence" led to a bare English 422 page: the scheduler
    # refuses it ("cancel the booking instead").
    day = datetime.now(ZoneInfo("Europe/Prague")).date() + timedelta(days=15)
    booking_id = book_through_api(server, accounts, datetime.combine(day, time(10)),
                                  datetime.combine(day, time(11)), rrule="FREQ=DAILY;COUNT=2")
    page = await context.new_page()
    await sign_in(page, "benesov")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(f"/admin/bookings/{booking_id}")
    buttons = page.locator("#occurrences .cancel-occurrence")
    assert await buttons.count() == 2
    last = await page.locator("#occurrences li").nth(1).get_attribute("data-id")
    csrf = await page.locator("#occurrences input[name=csrf]").first.input_value()
    await buttons.first.click()
    await page.wait_for_selector("#occurrences li[data-state=cancelled]")
    assert await buttons.count() == 0
    assert await page.locator("button.danger", has_text="Zrušit rezervaci").count() == 1
    # Asked all the same (a page open from before): the booking's page says why, in Czech.
    response = await page.request.post(
        f"/admin/bookings/{booking_id}/occurrences/{last}/cancel", form={"csrf": csrf})
    assert response.status == 422
    await page.set_content(await response.text())
    assert await page.text_content("#booking-error") \
        == "Toto je poslední schůzka rezervace: zrušte místo toho celou rezervaci."
    assert await page.locator("#occurrences li[data-state=scheduled]").count() == 1


async def test_a_cancelled_booking_has_no_change_form(server, accounts, context) -> None:
    # Its change form (reached by its address) could not be saved: the scheduler refused
    # the change, in English on the Czech page.
    day = datetime.now(ZoneInfo("Europe/Prague")).date() + timedelta(days=15)
    booking_id = book_through_api(server, accounts, datetime.combine(day, time(10)),
                                  datetime.combine(day, time(11)))
    page = await context.new_page()
    await sign_in(page, "benesov")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(f"/admin/bookings/{booking_id}")
    csrf = await page.locator("input[name=csrf]").first.input_value()
    await page.locator("button.danger", has_text="Zrušit rezervaci").click()
    await page.wait_for_selector("#booking-title .badge")
    response = await page.goto(f"/admin/bookings/{booking_id}/edit")
    assert response.status == 409
    assert await page.text_content("#booking-error") == "Zrušenou rezervaci nelze změnit."
    assert await page.locator("#booking-form").count() == 0
    response = await page.request.post(f"/admin/bookings/{booking_id}/edit",
                                       form={"csrf": csrf, "title": "Vzkříšená"})
    assert response.status == 409
    assert "Zrušenou rezervaci nelze změnit." in await response.text()


async def test_the_change_form_keeps_an_occurrence_cancelled_while_it_is_saved(
    server, accounts, context
) -> None:
    # Another request (another process) cancels one meeting of the series while the form
    # is saved, after the change read the booking. The form kept the series' exceptions
    # from a read of its own, taken before: the cancelled meeting was booked again.
    day = datetime.now(ZoneInfo("Europe/Prague")).date() + timedelta(days=15)
    booking_id = book_through_api(
        server,
        accounts,
        datetime.combine(day, time(10)),
        datetime.combine(day, time(11)),
        rrule="FREQ=DAILY;COUNT=3",
    )
    database, services = server.app[DATABASE], server.app[SERVICES]
    with database.session() as session:
        benesov = principal_of(session.scalar(select(User).where(User.name == "benesov")))
    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto(f"/admin/bookings/{booking_id}/edit")
    await page.wait_for_selector("#capacity.fits")
    other_process = Database(database.url)
    reads: list[int] = []

    def cancel_meanwhile(session: Session) -> None:
        read_it = any(isinstance(o, Booking) and o.id == booking_id for o in session.identity_map.values())
        if read_it and session.get_bind().engine is database.engine:
            reads.append(booking_id)
            if len(reads) == 2:  # the page's read of the booking, then the change's
                bookings.cancel_occurrence(
                    other_process,
                    benesov,
                    booking_id,
                    datetime.combine(day + timedelta(days=1), time(10)),
                    services.clock(),
                    services.join_link,
                )

    event.listen(Session, "after_commit", cancel_meanwhile)
    try:
        await page.click("#save-booking")
        await page.wait_for_selector("#saved")
    finally:
        event.remove(Session, "after_commit", cancel_meanwhile)
        other_process.dispose()
    assert len(reads) >= 2, "the other request did not cancel"
    with database.session() as session:
        booking = session.get(Booking, booking_id)
        states = session.scalars(
            select(BookingOccurrence.state)
            .where(BookingOccurrence.booking_id == booking_id, BookingOccurrence.state != "replaced")
            .order_by(BookingOccurrence.start_utc)
        ).all()
    assert booking.exdates == [f"{day + timedelta(days=1)}T10:00:00"]
    assert states == ["scheduled", "cancelled", "scheduled"]
