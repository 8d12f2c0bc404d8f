"""The call page when its front goes away and comes back (a restart, a deploy): it joins
again once, as one participant, and only from a call; a join that failed before the call
is an error on the pre-join form, not a join made behind it later.

The front is the real service on loopback, stopped (every socket and media connection
goes with it) and started again on the same port and data directory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Page

from multipoint.app import LIVE_ROOMS, create_app
from multipoint.settings import Settings
from signaling.links import join_url
from tests.browser.conftest import new_context
from tests.conftest import free_port

pytestmark = pytest.mark.browser

ROOM = "porada-po-restartu"


class Front:
    """The service on one port, which a test can stop and start again."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # Stopped as a killed front would be: open sockets are cut at once, not waited for.
        self.runner = web.AppRunner(create_app(self.settings), shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def participants(self, room: str) -> list[str]:
        """Who is in ``room`` on this front now (its signaling connections)."""
        assert self.runner is not None
        channel = self.runner.app[LIVE_ROOMS].signaling.channels.get(room)
        return sorted(channel.connections) if channel is not None else []


@pytest.fixture
async def front(settings: Settings) -> AsyncIterator[Front]:
    port = free_port()
    settings.public_url = f"http://127.0.0.1:{port}"
    front = Front(settings, port)
    await front.start()
    try:
        yield front
    finally:
        await front.stop()


async def open_page(browser, front: Front, autojoin: bool) -> tuple[Page, list[str]]:
    """The call page of a guest link; returns it and the page's uncaught errors."""
    context = await new_context(browser, front.url)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    link = join_url(front.url, front.settings.signing_secret(), ROOM, role="guest",
                    name="Obecní úřad Lhota", ttl_s=600)
    await page.goto(link + ("&autojoin=1" if autojoin else "") + "&lang=en")
    await page.evaluate("window.loadedOnce = true")  # gone if the page reloaded
    return page, errors


async def test_a_page_joins_again_once_when_its_front_is_down_for_a_while(front, browser) -> None:
    """Down long enough for several failed attempts (each socket refused): the page used
    to start one more rejoin loop per refused socket, and each loop joined when the front
    came back, so the official was in the room several times over (heard twice)."""
    page, errors = await open_page(browser, front, autojoin=True)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    first = await page.evaluate("window.multipointCall.me")

    await front.stop()
    # The page tries to resume (3 refused sockets), then to join again after 1, 2, 4 s...
    await asyncio.sleep(12)
    await front.start()
    await page.wait_for_function(
        f"() => window.multipointCall.me && window.multipointCall.me !== '{first}'"
        " && window.multipointCall.roster?.length >= 1", timeout=30_000)
    # Every attempt still under way has had its turn (backoff at most 8 s).
    await asyncio.sleep(10)
    me = await page.evaluate("window.multipointCall.me")
    assert front.participants(ROOM) == [me], "the page is in the room more than once"
    assert await page.evaluate("window.multipointCall.roster.length") == 1
    assert await page.evaluate("window.loadedOnce") is True
    assert await page.is_visible("#incall")
    assert errors == []


async def test_a_join_that_failed_on_the_prejoin_form_stays_failed(front, browser) -> None:
    """The front is down when the official presses Join: the form says so. When the
    front is back, the page must not join by itself behind the form (camera and
    microphone in the room while the official believes they are not)."""
    page, errors = await open_page(browser, front, autojoin=False)
    await page.wait_for_function("() => document.querySelector('#preview').videoWidth > 0")
    await front.stop()
    await page.fill("#name", "Obecní úřad Lhota")
    await page.click("#join-form button[type=submit]")
    await page.wait_for_selector("#prejoin-error", state="visible")
    await front.start()
    await asyncio.sleep(12)  # past the first few attempts of a rejoin loop
    assert front.participants(ROOM) == [], "the page joined behind its pre-join form"
    assert await page.is_visible("#prejoin")

    # Join pressed again: one participant, in the call.
    await page.click("#join-form button[type=submit]")
    await page.wait_for_selector("#incall", state="visible", timeout=20_000)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=20_000)
    assert front.participants(ROOM) == [await page.evaluate("window.multipointCall.me")]
    assert errors == []


async def test_the_camera_turned_off_while_the_page_rejoins_stays_off(front, browser) -> None:
    """Camera off pressed while the page waits to join again (its old connection closed):
    the new participant was joined without its camera, but not told the server so (only
    a muted microphone was), so everyone's list showed its camera on. It is joined with
    its camera muted on the server, and the button still says the camera is off."""
    page, errors = await open_page(browser, front, autojoin=True)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    first = await page.evaluate("window.multipointCall.me")
    await front.stop()
    await page.wait_for_function(
        "() => window.multipointCall.session.pc.signalingState === 'closed'", timeout=30_000)
    await page.click("#camera")
    assert await page.get_attribute("#camera", "aria-pressed") == "true"
    await front.start()
    await page.wait_for_function(
        f"() => window.multipointCall.me && window.multipointCall.me !== '{first}'"
        " && window.multipointCall.roster?.length === 1", timeout=30_000)
    me = await page.evaluate("window.multipointCall.me")
    await page.wait_for_function("() => window.multipointCall.roster[0].video_muted === true",
                                 timeout=10_000)
    assert front.participants(ROOM) == [me]
    assert await page.get_attribute("#camera", "aria-pressed") == "true"
    assert errors == []


async def test_join_pressed_twice_joins_once(front, browser) -> None:
    """On a slow network nothing seems to happen, and the official presses Join again:
    each press joined the room, the official then in it twice (heard twice, and the
    first one never leaving). A second press while a join is under way does nothing."""
    page, errors = await open_page(browser, front, autojoin=False)
    await page.wait_for_function("() => document.querySelector('#preview').videoWidth > 0")
    await page.fill("#name", "Obecní úřad Lhota")
    await page.dblclick("#join-form button[type=submit]")
    await page.wait_for_selector("#incall", state="visible", timeout=20_000)
    await page.wait_for_function("() => window.multipointCall.roster?.length >= 1", timeout=20_000)
    await asyncio.sleep(3)  # a second join, had there been one, is in by now
    assert front.participants(ROOM) == [await page.evaluate("window.multipointCall.me")]
    assert errors == []


async def test_leave_pressed_while_the_page_waits_to_rejoin_is_final(front, browser) -> None:
    """The official gives up and presses Leave while the page waits to join again: the
    page used to join anyway when its wait was over, a participant nobody sees leaving
    (the tab still open, its socket alive) in the room after "You left the call"."""
    page, errors = await open_page(browser, front, autojoin=True)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    await front.stop()
    # Waiting to join again (the resume over a new socket given up).
    await page.wait_for_function(
        "() => window.multipointCall.session.pc.signalingState === 'closed'"
        " && window.multipointCall.reconnects >= 1", timeout=30_000)
    await page.click("#leave")
    await front.start()
    await asyncio.sleep(12)  # past the longest wait between two attempts (8 s)
    assert front.participants(ROOM) == [], "the page joined again after Leave"
    assert "left" in await page.text_content("#notice")
    assert errors == []


async def test_join_again_while_an_earlier_call_waited_to_rejoin_joins_once(front, browser) -> None:
    """Leave while the page waits to join again, then Join again at once: the earlier
    call's wait must not end in a join of its own beside the new one (twice in the room)."""
    page, errors = await open_page(browser, front, autojoin=True)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    await front.stop()
    await page.wait_for_function(
        "() => window.multipointCall.session.pc.signalingState === 'closed'"
        " && window.multipointCall.reconnects >= 1", timeout=30_000)
    await page.click("#leave")
    await front.start()
    await page.click("#join-again")
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    await asyncio.sleep(12)  # past the longest wait between two attempts (8 s)
    me = await page.evaluate("window.multipointCall.me")
    assert front.participants(ROOM) == [me], "the page is in the room more than once"
    assert errors == []


async def test_a_page_that_cannot_rejoin_says_so(front, browser) -> None:
    """The front does not come back: after its last attempt (about 2.5 minutes) the page
    used to stop trying in silence, "Reconnecting…" shown for ever over controls that
    looked live. It says the connection could not be restored, and Join again (the page
    used to say to reload it) joins once more."""
    page, errors = await open_page(browser, front, autojoin=True)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    # The page's own clock from here: its waits between attempts (up to 8 s each, 2.5
    # minutes in all) pass at once; each attempt's socket is still refused for real.
    await page.clock.install()
    await front.stop()
    notice = "() => document.querySelector('#notice').textContent.includes('could not be restored')"
    for _ in range(60):
        if await page.evaluate(notice):
            break
        await page.clock.run_for(8_000)
        await asyncio.sleep(0.3)  # the attempt's socket is refused
    assert await page.evaluate(notice)
    assert "Try joining again" in await page.text_content("#notice")
    assert not await page.is_visible("#incall .controls")
    await front.start()  # the page no longer tries: nobody joins
    await asyncio.sleep(3)
    assert front.participants(ROOM) == []
    await page.click("#join-again")  # back, without reloading
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    assert front.participants(ROOM) == [await page.evaluate("window.multipointCall.me")]
    assert await page.is_visible("#incall .controls") and not await page.is_visible("#notice")
    assert await page.evaluate("window.loadedOnce") is True
    assert errors == []


async def test_a_page_joins_again_by_the_links_name(front, browser) -> None:
    """A link that names the official (``&name=``) joins by that name when the form's
    field is empty, as an autojoin link's is on a computer that never joined before. The
    page's rejoin sent the empty field, without the link's name: the official came back
    as the token's name, here none ("?"), in everyone's list."""
    context = await new_context(browser, front.url)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    link = join_url(front.url, front.settings.signing_secret(), ROOM, role="guest", ttl_s=600)
    await page.goto(link + "&autojoin=1&name=Starosta%20Lhoty")
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    assert await page.evaluate("window.multipointCall.roster[0].name") == "Starosta Lhoty"
    first = await page.evaluate("window.multipointCall.me")

    # The socket closes: the server takes it for a leave, refuses the resume, and the
    # page joins again.
    await page.evaluate("window.multipointCall.session.ws.close()")
    await page.wait_for_function(
        f"() => window.multipointCall.me && window.multipointCall.me !== '{first}'"
        " && window.multipointCall.roster?.length === 1", timeout=30_000)
    assert await page.evaluate("window.multipointCall.roster[0].name") == "Starosta Lhoty"
    assert errors == []


async def test_a_chat_message_written_while_the_call_is_down_is_kept_to_send(front, browser) -> None:
    """A message sent while the page was joining again ("Reconnecting…"): the page
    emptied the field, and the message went nowhere, without a word. It stays in the
    field to be sent once the call is back."""
    page, errors = await open_page(browser, front, autojoin=True)
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    first = await page.evaluate("window.multipointCall.me")
    await front.stop()
    await page.wait_for_function(
        "() => window.multipointCall.session.pc.signalingState === 'closed'", timeout=30_000)
    await page.fill("#chat-text", "Slyšíte nás?")
    await page.press("#chat-text", "Enter")
    assert await page.input_value("#chat-text") == "Slyšíte nás?"
    await front.start()
    await page.wait_for_function(
        f"() => window.multipointCall.me && window.multipointCall.me !== '{first}'"
        " && window.multipointCall.roster?.length === 1", timeout=30_000)
    await page.press("#chat-text", "Enter")
    await page.wait_for_function(
        "() => document.querySelector('#chat-log').textContent.includes('Slyšíte nás?')", timeout=10_000)
    assert await page.input_value("#chat-text") == ""
    assert errors == []
