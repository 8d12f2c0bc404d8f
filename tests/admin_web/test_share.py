"""An organisation's guaranteed share, and what is left of it, where its admin books."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.access.auth import principal_of
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.bookings import load_policy
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.models import BookingOccurrence, Organisation, User
from scheduler.organisations import holder_among, org_info
from tests.admin_web.conftest import BENESOV, BEROUN, book_through_api, czech_context, sign_in

pytestmark = pytest.mark.browser


def a_monday_beyond_the_borrowing_lead() -> date:
    today = datetime.now(ZoneInfo("Europe/Prague")).date()
    return today + timedelta(days=7 - today.weekday() + 7)


def benesov_share(server, accounts) -> tuple[str, int, int]:
    """The name of the region Benešov books on, its share in units and the pool, as the
    scheduler reads them."""
    with server.app[DATABASE].session() as session:
        policy = load_policy(session, server.app[SERVICES].config)
        benesov = org_info(session, accounts.organisations[BENESOV])
        assert benesov is not None
        region = holder_among(benesov, policy.quotas)
        assert region is not None and region != benesov.id  # an ORP books on its region's share
        holder = org_info(session, region)
        assert holder is not None
        return holder.name, policy.quotas[region], policy.pool_units


def units_of(server, booking_id: int) -> int:
    """The units the booking's occurrence holds, from the database."""
    with server.app[DATABASE].session() as session:
        o = BookingOccurrence
        units = session.scalar(select(o.units).where(o.booking_id == booking_id))
    assert units is not None
    return units


def book_tuesday_at_ten(server, accounts, tuesday: date) -> int:
    """Benešov's meeting at 10:00-11:00, booked through the API: its units."""
    return units_of(
        server,
        book_through_api(
            server, accounts, datetime.combine(tuesday, time(10)), datetime.combine(tuesday, time(11))
        ),
    )


def book_for(server, code: str, start: datetime, hd: int) -> int:
    """A meeting of the organisation ``code``, booked by the operator: its units."""
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        operator = principal_of(session.scalar(select(User).where(User.name == "operator")))
        organisation_id = session.scalar(select(Organisation.id).where(Organisation.code == code))
    decision = bookings.create_booking(
        services.db,
        services.config,
        operator,
        bookings.BookingInput(
            organisation_id=organisation_id,
            title=f"Porada {code}",
            schedule=Schedule(start, start + timedelta(hours=1)),
            participants=ParticipantMix(hd=hd),
        ),
        services.clock(),
        services.join_link,
    )
    return units_of(server, decision.booking_id)


async def week_shown(page: Page, monday: date) -> dict[str, str]:
    """The share box once it shows the week of ``monday``: its figures."""
    await page.evaluate(f"window.multipointCalendar.gotoDate('{monday.isoformat()}')")
    await page.wait_for_function(
        "(day) => document.getElementById('share').dataset.from === day", arg=f"{monday.isoformat()}T00:00:00"
    )
    return await page.evaluate("({...document.getElementById('share').dataset})")


async def test_an_orp_admin_sees_the_share_left_go_down_by_a_booking_at_its_time(
    server, accounts, context
) -> None:
    monday = a_monday_beyond_the_borrowing_lead()
    region, quota, pool = benesov_share(server, accounts)
    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings")

    # Nothing booked that week: the whole share is left.
    figures = await week_shown(page, monday)
    assert (figures["quota"], figures["peak"], figures["left"]) == (str(quota), "0", str(quota))
    assert await page.text_content("#share-quota") == (
        f"Garantovaný podíl ({region}): {quota} jednotek, 4 % z celkové kapacity {pool} jednotek. "
        f"Počítají se do něj rezervace všech organizací, které spadají pod {region}."
    )
    assert await page.text_content("#share-use") == (
        f"V zobrazených dnech (od teď) z něj není nic rezervováno: zbývá všech {quota} jednotek."
    )
    assert "48 hodin předem" in await page.text_content("#share-note")

    # A meeting on Tuesday at 10:00: the share left then goes down by its units.
    tuesday = monday + timedelta(days=1)
    units = book_tuesday_at_ten(server, accounts, tuesday)
    assert 0 < units < quota
    await page.reload()
    figures = await week_shown(page, monday)
    assert (figures["quota"], figures["peak"], figures["left"]) == (
        str(quota),
        str(units),
        str(quota - units),
    )
    use = await page.text_content("#share-use")
    assert use is not None
    assert use.startswith(
        f"V zobrazených dnech (od teď) z něj rezervace využívají nejvýše {units} jednotek najednou ("
    )
    assert use.endswith(f"10:00): z podílu tehdy zbývá {quota - units} jednotek.")
    # Another region's meeting then is on its own share; Beroun's, from 10:30, is on the
    # same one as Benešov's (their region's), so the peak is both of theirs.
    book_for(server, "CZ010", datetime.combine(tuesday, time(10)), hd=3)
    beroun = book_for(server, BEROUN, datetime.combine(tuesday, time(10, 30)), hd=1)
    await page.reload()
    figures = await week_shown(page, monday)
    peak = units + beroun
    assert (figures["peak"], figures["left"]) == (str(peak), str(quota - peak))
    assert (await page.text_content("#share-use")).endswith(
        f"10:30): z podílu tehdy zbývá {quota - peak} jednotek."
    )
    # The week after has none of it.
    figures = await week_shown(page, monday + timedelta(days=7))
    assert figures["left"] == str(quota)

    # The form's preview says the share and how much of it is booked then, beside the free figure.
    await page.goto(f"/admin/bookings/new?date={tuesday.isoformat()}&start=09:45&end=10:15")
    await page.wait_for_function("() => document.getElementById('capacity').dataset.shareUsed !== undefined")
    preview = await page.text_content("#capacity.fits")
    assert preview is not None
    assert preview.endswith(
        f"Podíl ({region}): {quota} jednotek; v tu dobu je z něj rezervováno {units}, zbývá {quota - units}."
    )
    # After the meetings, all of it is left.
    await page.fill("#f-start", "11:30")
    await page.fill("#f-end", "12:00")
    await page.wait_for_function("() => document.getElementById('capacity').dataset.shareUsed === '0'")
    assert (await page.text_content("#capacity")).endswith(f"rezervováno 0, zbývá {quota}.")


async def test_the_operator_sees_the_share_of_the_organisation_chosen(browser, server, accounts) -> None:
    monday = a_monday_beyond_the_borrowing_lead()
    region, quota, _ = benesov_share(server, accounts)
    units = book_tuesday_at_ten(server, accounts, monday + timedelta(days=1))
    context = await czech_context(browser, server.url)
    try:
        page = await context.new_page()
        await sign_in(page, "operator")
        await page.goto("/admin/bookings")
        # The operator books for any organisation: nothing until one is chosen.
        assert (
            await page.text_content("#share-quota") == "Zvolte organizaci a uvidíte její podíl na kapacitě."
        )
        await page.select_option("#share-organisation", str(accounts.organisations[BENESOV]))
        figures = await week_shown(page, monday)
        assert (figures["quota"], figures["peak"], figures["left"]) == (
            str(quota),
            str(units),
            str(quota - units),
        )
        assert (await page.text_content("#share-quota")).startswith(
            f"Garantovaný podíl ({region}): {quota} jednotek"
        )
    finally:
        await context.close()
