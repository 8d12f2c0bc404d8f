"""Times in the booking form as the scheduler takes them: a time the clocks skip."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.models import Booking
from tests.admin_web.conftest import sign_in

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
    skipped = f"{spring:%Y-%m-%d} 02:30 does not exist in Europe/Prague"
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
