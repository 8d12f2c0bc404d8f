"""Times in the booking form as the scheduler takes them: a time the clocks skip, a
meeting across midnight, a series whose last day ends just after midnight,
a series whose rule the form cannot show, a booking in another zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.access.auth import principal_of
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.recurrence import Schedule, czech_holidays
from scheduler.booking.units import ParticipantMix
from scheduler.models import Booking, BookingOccurrence, User
from tests.admin_web.conftest import BENESOV, book_through_api, sign_in

pytestmark = pytest.mark.browser
PRAGUE = ZoneInfo("Europe/Prague")


def prague_today() -> date:
    return datetime.now(PRAGUE).date()


def spring_forward_ahead() -> date:
    """The next last Sunday of March (the clocks go from 02:00 to 03:00) after tomorrow."""
    today = prague_today()
    for year in (today.year, today.year + 1):
        day = date(year, 3, 31)
        day -= timedelta(days=(day.weekday() - 6) % 7)
        if day > today + timedelta(days=1):
            return day
    raise AssertionError("unreachable")


def czech(day: date) -> str:
    return f"{day.day}. {day.month}. {day.year}"


def scheduled(server, booking_id: int) -> list[tuple[datetime, datetime]]:  # type: ignore[no-untyped-def]
    o = BookingOccurrence
    with server.app[DATABASE].session() as session:
        return [tuple(row) for row in session.execute(
            select(o.start_utc, o.end_utc).where(o.booking_id == booking_id,
                                                 o.state == "scheduled").order_by(o.start_utc))]


async def test_the_capacity_preview_refuses_a_time_the_clocks_skip_as_the_booking_does(
        server, accounts, context) -> None:
    spring = spring_forward_ahead()
    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings/new")
    await page.fill("#f-title", "Porada v noci změny času")
    await page.fill("#f-date", spring.isoformat())
    await page.fill("#f-start", "02:30")
    await page.fill("#f-end", "03:30")
    await page.fill("#f-hd", "2")
    # 02:30 does not exist that night: the preview says so, where it showed the capacity
    # at 03:30 (02:30 read as +01:00) for a time the booking then refused.
    skipped = f"Čas {spring:%Y-%m-%d} 02:30 v časovém pásmu Europe/Prague neexistuje"
    await page.wait_for_function(
        "(text) => document.getElementById('capacity').textContent.includes(text)",
        arg=skipped, timeout=10_000)
    preview = await page.text_content("#capacity")
    assert await page.locator("#capacity.fits, #capacity.short").count() == 0
    # The booking refuses it with the same words, and books nothing.
    await page.click("#save-booking")
    refusal = page.locator("p.alert", has_text=skipped)
    await refusal.wait_for()
    assert await refusal.text_content() == preview
    with server.app[DATABASE].session() as session:
        assert session.scalar(select(Booking.id)) is None


async def test_a_meeting_across_midnight_is_booked_and_changed_in_the_form(
        server, accounts, context) -> None:
    day = prague_today() + timedelta(days=15)
    next_day = day + timedelta(days=1)
    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings/new")
    hint = page.locator("#end-next-day")
    assert await hint.is_hidden()
    await page.fill("#f-title", "Noční cvičení IZS")
    await page.fill("#f-date", day.isoformat())
    await page.fill("#f-start", "22:00")
    await page.fill("#f-end", "02:00")
    await page.fill("#f-hd", "2")
    # An end before the start is the next day's, and the form says which day.
    await hint.wait_for()
    assert await hint.text_content() == f"Končí následující den, {czech(next_day)}."
    await page.wait_for_selector("#capacity.fits")  # the preview takes it so too
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    booking_id = int(page.url.split("?")[0].rsplit("/", 1)[1])
    booking_url = f"/admin/bookings/{booking_id}"
    start, end = datetime.combine(day, time(22)), datetime.combine(next_day, time(2))
    with server.app[DATABASE].session() as session:
        booking = session.get(Booking, booking_id)
        assert (booking.local_start, booking.local_end) == (start, end)
    booked = [(start.replace(tzinfo=PRAGUE).astimezone(UTC), end.replace(tzinfo=PRAGUE).astimezone(UTC))]
    assert scheduled(server, booking_id) == booked
    # Its page shows the end with its date.
    assert f"– {czech(next_day)} 2:00" in await page.text_content("#booking-when")
    assert f"–{czech(next_day)} 2:00" in await page.text_content("#occurrences li")

    # The change form shows it as booked (it could not be saved there before: "the end
    # must be after the start"), and saved unchanged it stays.
    await page.goto(booking_url + "/edit")
    assert (await page.input_value("#f-start"), await page.input_value("#f-end")) \
        == ("22:00", "02:00")
    await hint.wait_for()
    assert await hint.text_content() == f"Končí následující den, {czech(next_day)}."
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    assert scheduled(server, booking_id) == booked

    # An end mistyped before the start (13:00 for 15:00) would be 23 hours: refused
    # beside the end, not booked; an end at the start is no meeting at all.
    await page.goto(booking_url + "/edit")
    await page.fill("#f-start", "14:00")
    await page.fill("#f-end", "13:00")
    await page.click("#save-booking")
    assert "12:00:00" in await page.text_content("#err-end")
    await page.fill("#f-end", "14:00")
    await hint.wait_for(state="hidden")
    await page.click("#save-booking")
    assert await page.text_content("#err-end") == "Konec nesmí být ve stejný čas jako začátek."
    assert scheduled(server, booking_id) == booked


async def test_the_change_form_shows_the_last_day_of_a_series_ending_after_midnight(
        server, accounts, context) -> None:
    first = prague_today() + timedelta(days=15)
    # UNTIL at 00:30 in Prague, through the API: 23:30 or 22:30 UTC the day before.
    until = (first + timedelta(days=3)).strftime("%Y%m%d") + "T003000"
    night = book_through_api(server, accounts, datetime.combine(first, time(0, 15)),
                             datetime.combine(first, time(0, 45)), f"FREQ=DAILY;UNTIL={until}")
    morning = book_through_api(server, accounts, datetime.combine(first, time(10)),
                               datetime.combine(first, time(11)), f"FREQ=DAILY;UNTIL={until}")
    page = await context.new_page()
    await sign_in(page, "benesov")
    # At 00:15 the series has a meeting on the day UNTIL falls on (the form showed the
    # UTC date, the day before, and saved unchanged dropped that meeting); at 10:00 that
    # day has none, and its last day is the day before (as that day, it would gain one).
    for booking_id, last, count in ((night, first + timedelta(days=3), 4),
                                    (morning, first + timedelta(days=2), 3)):
        before = scheduled(server, booking_id)
        assert len(before) == count
        await page.goto(f"/admin/bookings/{booking_id}/edit")
        assert await page.input_value("#f-until") == last.isoformat()
        await page.click("#save-booking")
        await page.wait_for_selector("#saved")
        assert scheduled(server, booking_id) == before


async def test_a_series_the_form_cannot_show_is_kept_when_saved(server, accounts, context) -> None:
    # A fortnightly series and a yearly one, booked through the API: the form read only
    # FREQ, COUNT, UNTIL and BYDAY, so saved it made the first weekly and, as "yearly" is
    # no choice of its select, the second a single meeting.
    first = prague_today() + timedelta(days=15)
    start, end = datetime.combine(first, time(9)), datetime.combine(first, time(10))
    fortnightly = book_through_api(server, accounts, start, end, "FREQ=WEEKLY;INTERVAL=2;COUNT=4")
    yearly = book_through_api(server, accounts, start, end, "FREQ=YEARLY;COUNT=2")
    page = await context.new_page()
    await sign_in(page, "benesov")
    for booking_id, count in ((fortnightly, 4), (yearly, 2)):
        before = scheduled(server, booking_id)
        assert len(before) == count
        with server.app[DATABASE].session() as session:
            rule = session.get(Booking, booking_id).rrule
        # Unchanged, then with only its title changed: the same occurrences either way.
        for title in (None, f"Přejmenovaná porada {booking_id}"):
            await page.goto(f"/admin/bookings/{booking_id}/edit")
            assert await page.locator("#f-repeat").count() == 0
            assert await page.text_content("#kept-rule-text") == rule
            assert "přes API" in await page.text_content("#kept-rule-note")
            if title is not None:
                await page.fill("#f-title", title)
            await page.click("#save-booking")
            await page.wait_for_selector("#saved")
            assert scheduled(server, booking_id) == before
        with server.app[DATABASE].session() as session:
            booking = session.get(Booking, booking_id)
            assert (booking.rrule, booking.title) == (rule, f"Přejmenovaná porada {booking_id}")


async def test_a_booking_in_another_zone_keeps_its_times_when_saved(
        server, accounts, context) -> None:
    # The form shows a booking's wall-clock times in its own zone, and saved them as
    # Prague's: a booking in London moved by an hour.
    first = prague_today() + timedelta(days=15)
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        benesov = principal_of(session.scalar(select(User).where(User.name == "benesov")))
    booking_id = bookings.create_booking(
        services.db, services.config, benesov,
        bookings.BookingInput(organisation_id=accounts.organisations[BENESOV], title="London",
                              schedule=Schedule(datetime.combine(first, time(9)),
                                                datetime.combine(first, time(10)),
                                                zone="Europe/London", rrule="FREQ=DAILY;COUNT=3"),
                              participants=ParticipantMix(hd=2)),
        services.clock(), services.join_link).booking_id
    before = scheduled(server, booking_id)
    assert len(before) == 3
    page = await context.new_page()
    await sign_in(page, "benesov")
    # Its page lists its occurrences in its zone, as it says its time (they were Prague's,
    # an hour later, with no zone said).
    await page.goto(f"/admin/bookings/{booking_id}")
    assert "9:00 – 10:00 (Europe/London)" in await page.text_content("#booking-when")
    listed = await page.locator("#occurrences li").all_text_contents()
    assert [text.split("\n")[0].strip() for text in listed] == [
        f"{czech(first + timedelta(days=n))} 9:00–10:00" for n in range(3)]
    await page.goto(f"/admin/bookings/{booking_id}/edit")
    assert await page.input_value("#f-start") == "09:00"
    assert "Europe/London" in await page.text_content("#booking-zone")
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    assert scheduled(server, booking_id) == before
    with server.app[DATABASE].session() as session:
        assert session.get(Booking, booking_id).zone == "Europe/London"


async def test_the_capacity_preview_of_a_booking_in_another_zone_takes_its_zone(
    server, accounts, context
) -> None:
    # The preview read the change form's times as Prague's, though they are the booking's
    # own zone's (and saved so): a booking in London was shown another hour's capacity.
    # On the night the clocks go forward London skips 01:00-02:00 and Prague 02:00-03:00.
    spring = spring_forward_ahead()
    booking_id = book_through_api(server, accounts, datetime.combine(spring, time(9)),
                                  datetime.combine(spring, time(10)), zone="Europe/London")
    skipped = f"Čas {spring:%Y-%m-%d} 01:30 v časovém pásmu Europe/London neexistuje"

    async def free_at_half_past_two(name: str) -> str | None:
        """What the change form's preview shows to ``name`` at 01:30 and at 02:30."""
        page = await context.new_page()
        await sign_in(page, name)
        await page.goto(f"/admin/bookings/{booking_id}/edit")
        await page.wait_for_selector("#capacity.fits")
        await page.fill("#f-start", "01:30")
        await page.fill("#f-end", "02:30")
        await page.wait_for_function(
            "(text) => document.getElementById('capacity').textContent.includes(text)",
            arg=skipped, timeout=10_000)
        await page.fill("#f-start", "02:30")
        await page.fill("#f-end", "03:30")
        await page.wait_for_selector("#capacity.fits")
        free = await page.get_attribute("#capacity", "data-free")
        await page.close()
        return free

    benesov = await free_at_half_past_two("benesov")
    # The operator's change form (its organisation field fixed, and sent as none) shows
    # the capacity of the booking's organisation, as Benešov's admin sees it.
    await context.clear_cookies()
    assert await free_at_half_past_two("operator") == benesov


async def test_the_capacity_preview_refuses_a_time_already_past_as_saving_does(
    server, accounts, context
) -> None:
    # The preview showed yesterday's meeting as fitting; saving then refused it.
    yesterday = prague_today() - timedelta(days=1)
    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings/new")
    await page.fill("#f-title", "Porada včera")
    await page.fill("#f-hd", "2")
    await page.wait_for_selector("#capacity.fits")
    await page.fill("#f-date", yesterday.isoformat())
    past = f"Schůzka {yesterday.isoformat()} 10:00 je v minulosti."
    await page.wait_for_function(
        "(text) => document.getElementById('capacity').textContent === text", arg=past)
    await page.click("#save-booking")
    assert await page.text_content("#err-date") == past

    # A single meeting moved to yesterday is refused as saving refuses it; a series from
    # yesterday keeps its meetings to come, and is not.
    first = prague_today() + timedelta(days=15)
    booking_id = book_through_api(server, accounts, datetime.combine(first, time(10)),
                                  datetime.combine(first, time(11)))
    await page.goto(f"/admin/bookings/{booking_id}/edit")
    await page.wait_for_selector("#capacity.fits")
    await page.fill("#f-date", yesterday.isoformat())
    no_future = "Po změně nezůstane žádná budoucí schůzka."
    await page.wait_for_function(
        "(text) => document.getElementById('capacity').textContent === text", arg=no_future)
    await page.select_option("#f-repeat", "daily")
    await page.fill("#f-count", "30")
    await page.wait_for_selector("#capacity.fits")
    await page.select_option("#f-repeat", "none")
    await page.wait_for_function(
        "(text) => document.getElementById('capacity').textContent === text", arg=no_future)
    await page.click("#save-booking")
    assert await page.text_content("#err-date") == no_future


async def test_the_capacity_preview_speaks_the_page_s_language(server, accounts, context) -> None:
    # The preview's errors were English on the Czech page, though the same words beside
    # the fields after saving are Czech.
    yesterday = prague_today() - timedelta(days=1)
    page = await context.new_page()
    await sign_in(page, "benesov")
    for lang, no_one, past in (
        ("cs", "Počítejte alespoň s jedním účastníkem.",
         f"Schůzka {yesterday.isoformat()} 10:00 je v minulosti."),
        ("en", "Expect at least one participant.",
         f"the occurrence {yesterday.isoformat()} 10:00 is in the past"),
    ):
        await page.goto(f"/admin/bookings/new?lang={lang}")
        await page.wait_for_selector("#capacity.fits")
        await page.fill("#f-hd", "0")
        await page.wait_for_function(
            "(text) => document.getElementById('capacity').textContent === text", arg=no_one)
        await page.fill("#f-hd", "2")
        await page.fill("#f-date", yesterday.isoformat())
        await page.wait_for_function(
            "(text) => document.getElementById('capacity').textContent === text", arg=past)


async def test_the_change_form_s_preview_does_not_count_the_booking_against_itself(
    server, accounts, context
) -> None:
    # A booking that takes most of what is free at its time: its change form counted its
    # own units as used, and said it did not fit, though saving it unchanged does.
    day = prague_today() + timedelta(days=15)
    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings/new")
    await page.fill("#f-title", "Velká porada")
    await page.fill("#f-date", day.isoformat())
    await page.fill("#f-hd", "1")
    needed = "(units) => document.getElementById('capacity').dataset.needed === units"
    await page.wait_for_function(needed, arg="11")  # an HD participant is 11 units
    free = int(await page.get_attribute("#capacity", "data-free"))
    hd = free // 11 // 2 + 1  # more than half of what is free
    await page.fill("#f-hd", str(hd))
    await page.wait_for_function(needed, arg=str(hd * 11))
    assert await page.get_attribute("#capacity", "class") == "capacity fits"
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    await page.click("a[href$='/edit']")
    await page.wait_for_selector("#capacity.fits, #capacity.short")
    assert await page.get_attribute("#capacity", "class") == "capacity fits"
    assert await page.get_attribute("#capacity", "data-free") == str(free)
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")


async def test_the_scheduler_s_refusals_of_the_form_are_in_czech(server, accounts, context) -> None:
    # They were English on the Czech page, above the form or beside a field.
    today = prague_today()
    holiday = min(day for day in czech_holidays(today, today + timedelta(days=400))
                  if day > today + timedelta(days=1))
    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings/new")
    await page.fill("#f-title", "Porada o svátku")
    await page.fill("#f-date", holiday.isoformat())
    await page.fill("#f-hd", "2")
    await page.check("input[name=skip_holidays]")
    await page.click("#save-booking")
    alert = page.locator("p.alert", has_text="Nezůstane žádná schůzka")
    assert await alert.text_content() \
        == "Nezůstane žádná schůzka (například všechny připadnou na státní svátky)."
    await page.uncheck("input[name=skip_holidays]")
    await page.fill("#f-hd", "1001")
    await page.click("#save-booking")
    assert await page.text_content("#err-hd") == "Rezervace smí počítat nejvýše s 1000 účastníky."
    await page.fill("#f-hd", "2")
    await page.select_option("#f-repeat", "daily")
    await page.fill("#f-until", (holiday + timedelta(days=500)).isoformat())
    await page.click("#save-booking")
    assert await page.text_content("#err-count") == "Opakování smí mít nejvýše 400 schůzek."
