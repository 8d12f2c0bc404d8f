"""The bookings calendar in Prague time, whatever zone the admin's computer is set to."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.admin_web.conftest import book_through_api, sign_in

pytestmark = pytest.mark.browser
PRAGUE = ZoneInfo("Europe/Prague")


def a_zone_on_another_day() -> str:
    """A zone whose date is not Prague's now, so that "today" tells the zones apart.

    Kiritimati is 12 or 13 hours ahead of Prague and Pago Pago 11 or 12 behind: in the
    afternoon the first is on Prague's next day, in the morning the second on the day
    before."""
    prague = datetime.now(PRAGUE)
    return "Pacific/Kiritimati" if prague.hour >= 12 else "Pacific/Pago_Pago"


async def test_the_calendar_shows_and_books_prague_times_on_a_computer_in_another_zone(
    browser, server, accounts
) -> None:
    zone = a_zone_on_another_day()
    day = datetime.now(PRAGUE).date() + timedelta(days=15)
    book_through_api(server, accounts, datetime.combine(day, time(10)), datetime.combine(day, time(11)))
    # An admin travelling (or a laptop left on another zone): the calendar showed the
    # meeting at that zone's time of its instant, and a click booked that zone's hour.
    context = await browser.new_context(
        base_url=server.url, locale="cs-CZ", timezone_id=zone, viewport={"width": 1280, "height": 900}
    )
    try:
        page = await context.new_page()
        await sign_in(page, "benesov")
        await page.goto("/admin/bookings")
        assert await page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == zone
        # Today is Prague's.
        prague_days = {datetime.now(PRAGUE).date().isoformat()}
        today = await page.get_attribute(".fc-timegrid-col.fc-day-today", "data-date")
        prague_days.add(datetime.now(PRAGUE).date().isoformat())  # midnight in between
        assert today in prague_days

        # The page says whose times they are.
        assert await page.text_content("#calendar-zone") == "Časy jsou v časovém pásmu Europe/Prague."

        await page.evaluate(f"window.multipointCalendar.gotoDate('{day.isoformat()}')")
        event = page.locator(".fc-timegrid-event", has_text="Porada 10:00")
        await event.wait_for()
        assert await event.locator(".fc-event-time").text_content() == "10:00 - 11:00"
        column = event.locator("xpath=ancestor::td[contains(@class, 'fc-timegrid-col')]")
        assert await column.get_attribute("data-date") == day.isoformat()

        # A click on the empty 14:00 slot of the next day opens the form at 14:00 then.
        next_day = day + timedelta(days=1)
        if next_day.weekday() == 0:  # Monday: the next week's first column
            await page.evaluate(f"window.multipointCalendar.gotoDate('{next_day.isoformat()}')")
        lane = await page.locator(".fc-timegrid-col[data-date='" + next_day.isoformat() + "']").bounding_box()
        slot = await page.locator(".fc-timegrid-slot-lane[data-time='14:00:00']").bounding_box()
        assert lane is not None and slot is not None
        await page.mouse.click(lane["x"] + lane["width"] / 2, slot["y"] + slot["height"] / 2)
        await page.wait_for_url("**/admin/bookings/new?*")
        assert page.url.endswith(f"/admin/bookings/new?date={next_day.isoformat()}&start=14:00&end=15:00")
        assert await page.input_value("#f-start") == "14:00"
    finally:
        await context.close()
