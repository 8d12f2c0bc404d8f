"""Ids in admin URLs that name nothing, over real HTTP: a 404, never a 500."""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime, time, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import select

from admin_web.web import csrf_token
from multipoint.app import DATABASE
from scheduler.access.auth import create_session, principal_of
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.models import User
from tests.admin_web.conftest import BENESOV, BEROUN, Accounts

NOT_IDS = [str(2**31), str(2**63), str(2**64), "9" * 400, "987654"]


def session_cookie(server, name: str) -> str:  # type: ignore[no-untyped-def]
    with server.app[DATABASE].session() as session:
        user_id = session.scalar(select(User.id).where(User.name == name))
        assert user_id is not None
        return create_session(session, user_id, datetime.now(UTC), timedelta(hours=1))


async def test_admin_ids_that_name_nothing_are_404(server, accounts: Accounts,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    operator = session_cookie(server, "operator")
    headers = {"X-CSRF-Token": csrf_token(operator)}
    caplog.set_level(logging.ERROR)
    async with aiohttp.ClientSession(cookies={"multipoint_session": operator}) as http:
        for raw in NOT_IDS:
            for method, path, form in (
                    ("GET", f"/admin/bookings/{raw}", None),
                    ("GET", f"/admin/bookings/{raw}/edit", None),
                    ("POST", f"/admin/bookings/{raw}/edit", {"title": "x"}),
                    ("POST", f"/admin/bookings/{raw}/cancel", {}),
                    ("POST", f"/admin/rollout/applications/{raw}",
                     {"status": "approved", "approved_czk": "100"})):
                async with http.request(method, server.url + path, data=form, headers=headers,
                                        allow_redirects=False) as response:
                    text = await response.text()
                    assert response.status == 404, (method, path, response.status)
                    assert "Traceback" not in text
        for query in (f"organisation_id={2**63}", "organisation_id=" + "9" * 400):
            async with http.get(f"{server.url}/admin/operating/capacity.json?{query}") as response:
                assert response.status == 200
            async with http.get(f"{server.url}/admin/audit?before={2**63}") as response:
                assert response.status == 200
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_unit_whose_serial_has_a_slash_or_question_mark_is_shown_after_each_change(
        server, accounts: Accounts) -> None:
    """Makers' serials hold '/', '?' or '#'. The pages' links quote them, but the
    redirects after creating a unit and after changing its status or SIP address did
    not: the coordinator landed on a 404, or on the page of another unit ("K-1" for
    "K-1?rev=2")."""
    coordinator = session_cookie(server, "coordinator")
    headers = {"X-CSRF-Token": csrf_token(coordinator)}
    organisation = str(next(iter(accounts.organisations.values())))
    async with aiohttp.ClientSession(cookies={"multipoint_session": coordinator}) as http:
        async def post(path: str, form: dict[str, str]) -> tuple[int, str]:
            async with http.post(server.url + path, data=form, headers=headers) as response:
                return response.status, await response.text()

        await post("/admin/rollout/endpoints/new",
                   {"serial": "K-1", "model": "Other", "organisation_id": organisation})
        for serial in ("SN/2024/7", "K-1?rev=2", "R#5"):
            page = f"/admin/rollout/endpoints/{quote(serial, safe='')}"
            shown = f"<small>{html.escape(serial)}</small>"
            for path, form in (
                    ("/admin/rollout/endpoints/new",
                     {"serial": serial, "model": "Polycom", "organisation_id": organisation}),
                    (page + "/status", {"status": "approved"}),
                    (page + "/sip", {"sip_uri": "sip:unit@192.0.2.7"})):
                status, text = await post(path, form)  # redirected to the unit's page
                assert (status, shown in text) == (200, True), (serial, path, status)


def weekly_series(server, accounts: Accounts, user: str, code: str) -> tuple[int, list[int]]:
    """Three weekly meetings of ``user``'s organisation, a fortnight on, booked the way
    the API books them: the booking's id and its occurrences' ids."""
    services = server.app[SERVICES]
    with server.app[DATABASE].session() as session:
        principal = principal_of(session.scalar(select(User).where(User.name == user)))
    day = datetime.now(ZoneInfo("Europe/Prague")).date() + timedelta(days=14)
    start = datetime.combine(day, time(13, 0))
    decision = bookings.create_booking(
        services.db, services.config, principal,
        bookings.BookingInput(organisation_id=accounts.organisations[code], title=f"Porada {user}",
                              schedule=Schedule(start, start + timedelta(hours=1),
                                                rrule="FREQ=WEEKLY;COUNT=3"),
                              participants=ParticipantMix(hd=2)),
        services.clock(), services.join_link)
    with server.app[DATABASE].session() as session:
        occurrences = [o.id for o in bookings.occurrences_of(session, decision.booking_id)]
    return decision.booking_id, occurrences


async def test_another_organisations_occurrences_are_refused_alike_whether_they_exist_or_not(
        server, accounts: Accounts) -> None:
    """Cancelling an occurrence of another organisation's booking: the occurrence was
    looked up before the permission check, so an org admin got 403 for an occurrence
    that is that booking's and 404 for any other id, and could tell which ids are
    whose. As in the API (and the booking's own pages), whose the booking is comes
    first: every occurrence id of a booking one may not change is 403, and only its
    owners learn which ones it has (404)."""
    beroun_booking, beroun_occurrences = weekly_series(server, accounts, "beroun", BEROUN)
    _, benesov_occurrences = weekly_series(server, accounts, "benesov", BENESOV)
    missing = max(beroun_occurrences + benesov_occurrences) + 1000
    benesov, beroun = session_cookie(server, "benesov"), session_cookie(server, "beroun")

    async def cancel(cookie: str, booking_id: int, occurrence: int | str) -> int:
        async with aiohttp.ClientSession(cookies={"multipoint_session": cookie}) as http, \
                http.post(f"{server.url}/admin/bookings/{booking_id}/occurrences/{occurrence}/cancel",
                          headers={"X-CSRF-Token": csrf_token(cookie)},
                          allow_redirects=False) as response:
            return response.status

    # Benešov's admin: Beroun's occurrence, one of Benešov's own under Beroun's booking,
    # none at all, and one past any id a row can have: the same answer.
    for occurrence in (beroun_occurrences[1], benesov_occurrences[1], missing, str(2**63)):
        assert await cancel(benesov, beroun_booking, occurrence) == 403, occurrence
    # A booking that does not exist is 404, as its own page is.
    assert await cancel(benesov, beroun_booking + 1000, beroun_occurrences[1]) == 404
    # Beroun's admin learns what its booking has: 404 for an occurrence not of it.
    assert await cancel(beroun, beroun_booking, missing) == 404
    assert await cancel(beroun, beroun_booking, benesov_occurrences[1]) == 404
    with server.app[DATABASE].session() as session:
        states = [o.state for o in bookings.occurrences_of(session, beroun_booking)]
    assert states == ["scheduled"] * 3  # nothing of it was cancelled meanwhile
    assert await cancel(beroun, beroun_booking, beroun_occurrences[1]) == 303
