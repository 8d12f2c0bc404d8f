"""The call page when the server refuses its join: for good (a meeting cancelled while
the official was in it), or for now (a room not open yet, too many joins), saying what
the server's English text said. The bookings are made, cancelled and closed through the
scheduler's own services, as the operator's would be."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import select

from multipoint.app import DATABASE, LIVE_ROOMS
from scheduler.access.auth import create_user, issue_api_token
from scheduler.access.permissions import Principal
from scheduler.api import SERVICES
from scheduler.booking import bookings
from scheduler.booking.bridges import create_bridge
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.config import SchedulerConfig
from scheduler.models import Booking, Organisation, User
from scheduler.organisations import org_info
from scheduler.seed import seed
from signaling.links import join_url
from signaling.rate_limits import RateLimits, token_key
from tests.browser.conftest import new_context
from tests.conftest import RunningServer
from tests.signal_client import SignalClient

pytestmark = pytest.mark.browser

PRAGUE = ZoneInfo("Europe/Prague")
CZECH_MONTHS = ["ledna", "února", "března", "dubna", "května", "června", "července", "srpna",
                "září", "října", "listopadu", "prosince"]


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
        user = session.scalar(select(User).where(User.name == "operator")) \
            or create_user(session, "operator", "operator", None)
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


async def joined_page(context, server: RunningServer, room: str, errors: list[str],
                      extra: str = ""):  # type: ignore[no-untyped-def]
    """A page of ``context`` in ``room`` through its guest link, alone there."""
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(link(server, room) + "&autojoin=1" + extra)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1",
                                 timeout=30_000)
    return page


async def test_a_meeting_cancelled_during_the_call_ends_the_page_at_once(server, browser) -> None:
    """The operator cancels the meeting while the official is in it: the scheduler closes
    its room and tells the page why ("closed", booking_cancelled). The page ignored that
    message: it took the closed socket for a lost network, said "Reconnecting…", had its
    resume refused and its join too, and only then ended (a meeting over was even told
    to join at the time of the meeting). It ends at once, saying why, with no rejoin."""
    booked = book(server, timedelta(minutes=2))  # within the open lead: joins are admitted
    context = await new_context(browser, server.url)
    try:
        errors: list[str] = []
        page = await joined_page(context, server, booked.room, errors)
        await page.evaluate("""() => {
          const notice = document.querySelector('#notice');
          window.noticesSeen = [];
          new MutationObserver(() => window.noticesSeen.push(notice.textContent))
            .observe(notice, {childList: true, characterData: true, subtree: true});
        }""")

        services = server.app[SERVICES]
        bookings.cancel_booking(services.db, booked.operator, booked.booking_id,
                                services.clock(), services.join_link)
        await services.jobs.tick()  # the job closes the cancelled meeting's room

        await page.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('byla zrušena')",
            timeout=30_000)
        # Ended, not waiting for another attempt.
        assert not await page.is_visible("#incall .controls")
        await asyncio.sleep(3)  # past the first wait (1 s) of a rejoin loop
        assert await page.evaluate("window.multipointCall.reconnects") == 0
        assert not any("Obnovuji" in seen for seen in await page.evaluate("window.noticesSeen"))
        notice = await page.text_content("#notice")
        assert notice == "Tato schůzka byla zrušena: hovor byl ukončen."
        assert errors == []
    finally:
        await context.close()


async def test_a_rejoin_refused_for_good_ends_the_page_at_once(server, browser) -> None:
    """The page lost its socket (here: it closed it) after the meeting was cancelled and
    before the job closed its room: its resume is refused, its new join too
    (booking_cancelled), and that refusal ends the call at once rather than being tried
    20 times (about 2.5 minutes of "Reconnecting…")."""
    booked = book(server, timedelta(minutes=2))
    context = await new_context(browser, server.url)
    try:
        errors: list[str] = []
        page = await joined_page(context, server, booked.room, errors)
        services = server.app[SERVICES]
        bookings.cancel_booking(services.db, booked.operator, booked.booking_id,
                                services.clock(), services.join_link)  # no tick: still open
        await page.evaluate("window.multipointCall.session.ws.close()")

        await page.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('byla zrušena')",
            timeout=30_000)
        assert not await page.is_visible("#incall .controls")
        attempts = await page.evaluate("window.multipointCall.reconnects")
        await asyncio.sleep(5)  # past the next two waits (2 and 4 s) of a rejoin loop
        assert await page.evaluate("window.multipointCall.reconnects") == attempts == 1
        notice = await page.text_content("#notice")
        assert "Tato schůzka byla zrušena" in notice and "Obnovuji" not in notice
        assert errors == []
    finally:
        await context.close()


async def test_a_room_moved_to_another_node_is_joined_again(server, browser) -> None:
    """A room closed under the call because it now lives on another node (this node was
    taken for dead while it did not answer: "closed", room_moved) is the one close the
    page does not end the call for: it joins again, and its join goes where the room is
    (a redirect from admission; here the room is back on this node's worker)."""
    booked = book(server, timedelta(minutes=2))
    context = await new_context(browser, server.url)
    try:
        errors: list[str] = []
        page = await joined_page(context, server, booked.room, errors, "&lang=en")
        first = await page.evaluate("window.multipointCall.me")
        # What this node does with the rooms a reaper moved away (multipoint/app.py).
        await server.app[LIVE_ROOMS].close(booked.room, "moved to another node", "room_moved")
        await page.wait_for_function(
            f"() => window.multipointCall.me !== {first!r}"
            " && window.multipointCall.roster?.length === 1", timeout=30_000)
        assert await page.is_visible("#incall .controls")
        assert await page.evaluate("window.multipointCall.leaving") is False
        assert errors == []
    finally:
        await context.close()


def czech_when(at: datetime, now: datetime) -> tuple[str, str]:
    """How the page says ``at`` (Czech, English): Prague time, its date unless today."""
    local, today = at.astimezone(PRAGUE), now.astimezone(PRAGUE)
    if local.date() == today.date():
        return f"dnes od {local.hour}:{local.minute:02d}", f"today from {local:%H:%M}"
    year = f" {local.year}" if local.year != today.year else ""
    return (f"{local.day}. {CZECH_MONTHS[local.month - 1]}{year} od {local.hour}:{local.minute:02d}",
            f"on {local.day} {local:%B}{year} from {local:%H:%M}")


async def test_a_room_not_open_yet_says_when_it_opens_in_czech_time(server, browser) -> None:
    """The server's English text said when the room opens ("it opens 10 minutes before
    2026-…T08:00:00+00:00"); the page's own text only "join at the time of the meeting".
    The server now sends the time (opens_at) and the page says it, in Prague time
    whatever zone the computer is set to."""
    # Later today (or tomorrow, this late in the day), and in some days: with its date.
    later, in_days = book(server, timedelta(hours=3)), book(server, timedelta(days=3))
    # A computer set to another zone: the time is still the invitation's, Prague's.
    context = await browser.new_context(base_url=server.url, timezone_id="America/New_York")
    await context.grant_permissions(["camera", "microphone"], origin=server.url)
    try:
        page = await context.new_page()
        for booked in (later, in_days):
            opens = booked.start - timedelta(minutes=10)  # the scheduler's open lead
            for lang, expected in zip(("cs", "en"), czech_when(opens, datetime.now(UTC)),
                                      strict=True):
                await page.goto(link(server, booked.room) + f"&autojoin=1&lang={lang}")
                await page.wait_for_selector("#prejoin-error", state="visible", timeout=20_000)
                text = await page.text_content("#prejoin-error")
                assert expected in text, (expected, text)
        assert "you can join on " in text
    finally:
        await context.close()


async def test_too_many_joins_with_a_link_say_how_long_to_wait(server, browser) -> None:
    """Refused for too many joins with one link, the page said "try again shortly"
    while the server said in how many seconds (retry_after): it says so too."""
    url = join_url(server.url, server.settings.signing_secret(), "celostatni-porada",
                   role="guest", name="Obecní úřad Lhota", ttl_s=600)
    token = url.split("token=", 1)[1]
    # A national briefing's guest link: the whole minute's rate of joins has been used.
    limits = server.app[LIVE_ROOMS].signaling.rate_limits
    for _ in range(10_000):
        if limits.hit("join_per_link", token_key(token)) is not None:
            break
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        await page.goto(url + "&autojoin=1")
        await page.wait_for_selector("#prejoin-error", state="visible", timeout=20_000)
        text = await page.text_content("#prejoin-error")
        wait = re.search(r"zkuste to znovu za (\d+) s", text)
        assert wait and 1 <= int(wait.group(1)) <= 60, text
    finally:
        await context.close()


async def test_a_rejoin_refused_for_too_many_joins_waits_as_long_as_asked(server, browser) -> None:
    """A national briefing's node went away and every site's page joins again with the
    one guest link: the link's rate is used up, and each refusal says when a join would
    be taken (retry_after, here nearly a minute). The page came back after 1, 2, 4, 8,
    8… s whatever it was told, was refused each time, and after its 20 attempts said the
    call could not be restored while the server only asked it to wait. It waits as long
    as asked, the refusal is no failed attempt, and it joins once the rate lets it."""
    url = join_url(server.url, server.settings.signing_secret(), "celostatni-porada",
                   role="guest", name="Obecní úřad Lhota", ttl_s=600)
    token = url.split("token=", 1)[1]
    context = await new_context(browser, server.url)
    try:
        errors: list[str] = []
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(url + "&autojoin=1&lang=en")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 1",
                                     timeout=30_000)
        first = await page.evaluate("window.multipointCall.me")
        # The page's own clock from here: its waits pass when the test says, while the
        # server's rate window stays where it is (real time).
        await page.clock.install()
        signaling = server.app[LIVE_ROOMS].signaling
        for _ in range(10_000):  # the whole minute's joins with this link are used
            if signaling.rate_limits.hit("join_per_link", token_key(token)) is not None:
                break
        refused = signaling.rate_limits.refused["join_per_link"]

        # The socket closes: the resume is refused (a closed socket is a leave) and the
        # page joins again, to be refused for the link's rate.
        await page.evaluate("window.multipointCall.session.ws.close()")
        for _ in range(60):
            if signaling.rate_limits.refused["join_per_link"] > refused:
                break
            await page.clock.run_for(1_000)
            await asyncio.sleep(0.3)
        assert signaling.rate_limits.refused["join_per_link"] == refused + 1
        attempts = await page.evaluate("window.multipointCall.reconnects")

        # Past five attempts' waits (2, 4, 8, 8, 8 s) but short of the minute asked for
        # (less the few seconds of real time since the page's own join): no attempt.
        for _ in range(5):
            await page.clock.run_for(8_000)
            await asyncio.sleep(0.3)
        assert signaling.rate_limits.refused["join_per_link"] == refused + 1
        assert await page.evaluate("window.multipointCall.reconnects") == attempts

        # Over three minutes on the page's clock, more than its 20 attempts would take:
        # it came back when told (and was refused again: in real time the window has not
        # moved), a few times, and is still joining rather than "could not be restored".
        for _ in range(24):
            await page.clock.run_for(8_000)
            await asyncio.sleep(0.3)
        again = signaling.rate_limits.refused["join_per_link"] - refused
        assert 2 <= again <= 6, again
        assert "could not be restored" not in await page.text_content("#notice")
        assert await page.is_visible("#incall .controls")

        # The window moves on (a fresh limiter: every client's joins are forgotten), and
        # the next attempt, when the last refusal said, is taken.
        config = signaling.config
        signaling.rate_limits = RateLimits({
            "join_per_ip": config.join_rate_per_ip, "join_per_link": config.join_rate_per_link,
            "message": config.message_rate, "selftest_per_ip": config.selftest_rate_per_ip,
            "selftest_per_link": config.selftest_rate_per_link})
        rejoined = (f"() => window.multipointCall.me && window.multipointCall.me !== {first!r}"
                    " && window.multipointCall.roster?.length === 1")
        for _ in range(60):
            if await page.evaluate(rejoined):
                break
            await page.clock.run_for(2_000)
            await asyncio.sleep(0.5)
        assert await page.evaluate(rejoined)
        assert errors == []
    finally:
        await context.close()


async def test_a_bridge_switched_off_ends_the_call_and_lets_nobody_in(server, browser) -> None:
    """The operator switches a standing IZS bridge off (DELETE /api/v1/bridges/{id}) while
    an official is in it. Nothing closed a bridge's room and admission looked again only
    at booked rooms: the call went on, and new joins were admitted. Now its room closes
    at once, the page says why, and a new join is refused."""
    with server.app[DATABASE].session() as session:
        seed(session, local_workers=1, worker_capacity_units=800)
        izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
        bridge = create_bridge(session, SchedulerConfig(), org_info(session, izs.id),
                               "Krizový štáb", ParticipantMix(hd=5))
        bridge_id, room = bridge.id, bridge.room_name
        user = session.scalar(select(User).where(User.name == "operator")) \
            or create_user(session, "operator", "operator", None)
        api_token = issue_api_token(session, user.id)
    context = await new_context(browser, server.url)
    try:
        errors: list[str] = []
        page = await joined_page(context, server, room, errors)

        async with aiohttp.ClientSession() as http, http.delete(
                f"{server.url}/api/v1/bridges/{bridge_id}",
                headers={"Authorization": f"Bearer {api_token}"}) as response:
            assert response.status == 204

        await page.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('vypnut')",
            timeout=30_000)
        assert not await page.is_visible("#incall .controls")
        assert await page.text_content("#notice") \
            == "Tato stálá místnost byla vypnuta: hovor byl ukončen."
        assert await page.evaluate("window.multipointCall.reconnects") == 0

        client = await SignalClient.connect(server.ws_url)
        try:
            await client.send({"type": "join", "v": 1,
                               "token": link(server, room).split("token=", 1)[1]})
            assert (await client.next("error"))["code"] == "bridge_inactive"
        finally:
            await client.close()
        assert errors == []
    finally:
        await context.close()


async def test_a_meeting_over_says_so_and_is_not_joined_again(server, browser) -> None:
    """After a meeting's last occurrence, a join was refused "room_not_open" with no time
    to give, and the page said "join at the time of the meeting" of a meeting that was
    over. It is refused "meeting_over" and the page says the meeting is over: on the
    pre-join form, to a page whose rejoin it refuses (for good: no second attempt), and
    to those still in the call when the job closes the room (its "closed")."""
    booked = book(server, timedelta(minutes=2))
    services = server.app[SERVICES]
    context = await new_context(browser, server.url)
    try:
        errors: list[str] = []
        staying = await joined_page(context, server, booked.room, errors)
        leaving = await context.new_page()
        leaving.on("pageerror", lambda error: errors.append(str(error)))
        await leaving.goto(link(server, booked.room) + "&autojoin=1")
        for page in (staying, leaving):
            await page.wait_for_function("() => window.multipointCall.roster?.length === 2",
                                         timeout=30_000)

        # The meeting's hour and the grace after it are over (the scheduler's own clock,
        # which its jobs and admission read).
        over = services.clock() + timedelta(hours=1, minutes=20)
        services.clock = services.jobs.clock = lambda: over

        # A page that loses its socket before the job has closed the room joins again.
        await leaving.evaluate("window.multipointCall.session.ws.close()")
        await leaving.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('skončila')",
            timeout=30_000)
        assert not await leaving.is_visible("#incall .controls")
        await asyncio.sleep(3)  # past the next wait (2 s) of a rejoin loop
        assert await leaving.evaluate("window.multipointCall.reconnects") == 1
        assert await leaving.text_content("#notice") == "Chyba: Tato schůzka už skončila."

        await services.jobs.tick()  # closes the room: those still in it are told why
        await staying.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('skončil')",
            timeout=30_000)
        assert await staying.text_content("#notice") == "Čas schůzky skončil: hovor byl ukončen."
        assert await staying.evaluate("window.multipointCall.reconnects") == 0

        late = await context.new_page()
        await late.goto(link(server, booked.room) + "&autojoin=1&lang=en")
        await late.wait_for_selector("#prejoin-error", state="visible", timeout=20_000)
        assert await late.text_content("#prejoin-error") == "Error: This meeting is over."
        assert errors == []
    finally:
        await context.close()
