"""Fixtures for the admin web in Chromium: seeded organisations, one account per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from playwright.async_api import Browser, BrowserContext, Page
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.access.auth import principal_of
from scheduler.access.users import create_local_user
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.recurrence import DEFAULT_ZONE, Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.media.nodes import register_node
from scheduler.models import Organisation, User
from scheduler.seed import seed
from tests.browser.conftest import browser  # noqa: F401  (the fixture, reused)
from tests.conftest import RunningServer

PASSWORD = "correct horse battery"
BENESOV = "orp:CZ020:Benešov"
BEROUN = "orp:CZ020:Beroun"


@dataclass
class Accounts:
    organisations: dict[str, int]  # code -> id


@pytest.fixture
def accounts(server) -> Accounts:
    """The real organisations, a local media node, and operator, coordinator and two ORP admins."""
    return seed_accounts(server)


def seed_accounts(server) -> Accounts:
    """What ``accounts`` makes, for a server a test starts itself (worker processes)."""
    # The local node with two workers of 800 units, as `serve --workers 2` registers it
    # (the test server itself runs one worker inline).
    register_node(server.app[DATABASE], "local", 2, 800, datetime.now(UTC))
    with server.app[DATABASE].session() as session:
        seed(session, local_workers=2, worker_capacity_units=800)
        orgs = dict(session.execute(select(Organisation.code, Organisation.id)
                                    .where(Organisation.code.in_([BENESOV, BEROUN]))).all())
        create_local_user(session, "operator", "operator", PASSWORD)
        create_local_user(session, "coordinator", "coordinator", PASSWORD)
        create_local_user(session, "benesov", "org_admin", PASSWORD, orgs[BENESOV])
        create_local_user(session, "beroun", "org_admin", PASSWORD, orgs[BEROUN])
    return Accounts(orgs)


@pytest.fixture
async def context(browser: Browser, server) -> AsyncIterator[BrowserContext]:  # noqa: F811
    context = await czech_context(browser, server.url)
    try:
        yield context
    finally:
        await context.close()


async def czech_context(browser: Browser, url: str) -> BrowserContext:  # noqa: F811
    # Czech office settings: the pages default to Czech and show Prague time.
    return await browser.new_context(base_url=url, locale="cs-CZ", timezone_id="Europe/Prague",
                                     viewport={"width": 1280, "height": 900})


async def sign_in(page: Page, name: str, password: str = PASSWORD) -> None:
    await page.goto("/admin")
    await page.fill("#f-name", name)
    await page.fill("#f-password", password)
    await page.click("button[type=submit].primary")
    await page.wait_for_load_state()


def book_through_api(
    server: RunningServer,
    accounts: Accounts,
    start: datetime,
    end: datetime,
    rrule: str | None = None,
    zone: str = DEFAULT_ZONE,
) -> int:
    """Benešov's meeting or series, booked the way the API books it (its UNTIL kept in UTC)."""
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        benesov = principal_of(session.scalar(select(User).where(User.name == "benesov")))
    decision = bookings.create_booking(
        services.db,
        services.config,
        benesov,
        bookings.BookingInput(
            organisation_id=accounts.organisations[BENESOV],
            title=f"Porada {start:%H:%M}",
            schedule=Schedule(start, end, zone=zone, rrule=rrule),
            participants=ParticipantMix(hd=2),
        ),
        services.clock(),
        services.join_link,
    )
    return decision.booking_id
