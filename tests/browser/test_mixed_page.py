"""A room unit in Chromium joins mixed: one composed picture and one sound."""

from __future__ import annotations

import asyncio

import pytest

from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot
from tests.browser.test_call_page import INBOUND, growing
from tests.media.test_mixing import GREEN, RED, join

pytestmark = pytest.mark.browser


async def test_mixed_participant_in_chromium_gets_one_picture_and_one_sound(server, browser) -> None:
    room = "krajska-porada"
    sites = [await join(server, room, "Brno", 440, RED), await join(server, room, "Zlín", 880, GREEN)]
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), room, name="Sál", ttl_s=600)
        await page.goto(link + "&autojoin=1&mode=mixed")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
        await asyncio.sleep(2)
        first = await page.evaluate(INBOUND)
        await asyncio.sleep(3)
        second = await page.evaluate(INBOUND)
        assert len(second["video"]) == 1 and len(second["audio"]) == 1, second
        assert growing(first["video"], second["video"]) == 1
        assert growing(first["audio"], second["audio"]) == 1
        # The composed picture plays in its own tile at the compositor's size.
        composite = "document.querySelector('[data-participant=mixer] video')"
        await page.wait_for_function(f"() => {composite}.videoWidth > 0")
        size = await page.evaluate(f"[{composite}.videoWidth, {composite}.videoHeight]")
        assert size == [640, 360]
        await screenshot(page, "call-mixed")
        # The sites see the room unit as a participant of its own.
        unit = (await page.evaluate("window.multipointCall.me"))
        for site in sites:
            assert any(info["participant"] == unit for info in site.tracks.values())
    finally:
        await context.close()
        for site in sites:
            await site.close()


async def test_switching_the_language_in_a_call_renames_the_tiles(server, browser) -> None:
    """The language switch in a call translated the buttons and the participant list
    but not the tiles: the self view stayed "Sál (Vy)" and the composed picture
    "Složený obraz" on a page switched to English."""
    room = "prepnuti-jazyka"
    site = await join(server, room, "Brno", 440, RED)
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), room, name="Sál", ttl_s=600)
        await page.goto(link + "&autojoin=1&mode=mixed&lang=cs")
        names = "() => [...document.querySelectorAll('#grid .tile .name')].map((e) => e.textContent).sort()"
        await page.wait_for_function(f"() => ({names})().length === 2", timeout=30_000)
        assert await page.evaluate(names) == ["Složený obraz", "Sál (Vy)"]
        await page.click("#lang")
        assert await page.text_content("#mute") == "Mute"
        assert await page.evaluate(names) == ["Composite picture", "Sál (You)"]
    finally:
        await context.close()
        await site.close()


async def test_a_participant_made_mixed_by_the_host_stays_mixed_when_it_joins_again(server, browser) -> None:
    """A host switched a guest on a weak link to one composed picture; the guest's link
    lost its call (as weak links do) and the page joined again in the link's mode,
    separate pictures, undoing the host's switch each time. It joins again in the mode
    the server last gave it."""
    room = "slaba-linka"
    host = await join(server, room, "Velín", 440, RED, role="host")
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), room, name="Obec", ttl_s=600)
        await page.goto(link + "&autojoin=1")
        me = "window.multipointCall.roster?.find((p) => p.id === window.multipointCall.me)"
        await page.wait_for_function(f"() => {me}?.mode === 'forwarded'", timeout=30_000)
        first_id = await page.evaluate("window.multipointCall.me")
        await host.send({"type": "set_mode", "participant": first_id, "mode": "mixed"})
        await page.wait_for_function(f"() => {me}?.mode === 'mixed'", timeout=15_000)
        # The call is lost for good (its resume refused): the page joins again, anew.
        await page.evaluate("""() => {
            const session = window.multipointCall.session;
            session.resumeSecret = "x".repeat(43);
            session.ws.close();
        }""")
        await page.wait_for_function(f"() => window.multipointCall.me !== '{first_id}' && {me}",
                                     timeout=30_000)
        assert await page.evaluate(f"{me}.mode") == "mixed"
    finally:
        await context.close()
        await host.close()
