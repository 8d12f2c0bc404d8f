"""A room unit (baresip over SIP, H.264) and two officials in Chromium hold one meeting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from multipoint.app import MEDIA, ROOM_UNITS
from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot
from tests.browser.test_call_page import INBOUND, growing
from tests.media.test_sip_units import bridge, dial_in, units_in
from tests.peers import wait_until
from tests.sip_unit import BARESIP, Baresip

pytestmark = [pytest.mark.browser, pytest.mark.media,
              pytest.mark.skipif(BARESIP is None, reason="no baresip (scripts/test installs it)")]


async def test_a_unit_and_two_browsers_see_and_hear_each_other(server, browser, tmp_path: Path) -> None:
    room = bridge(server)
    unit = Baresip(tmp_path / "unit", video=True)
    await unit.start()
    contexts, pages = [], []
    try:
        # The unit calls first: the room then forwards H.264, which the pages can do too.
        await unit.dial(f"sip:{room}@127.0.0.1:{server.app[ROOM_UNITS].agent.udp_port}")
        assert await wait_until(lambda: len(units_in(server, room)) == 1, timeout=15), unit.log[-2000:]
        member = units_in(server, room)[0]
        for name in ("Jihlava", "Třebíč"):
            link = join_url(server.url, server.settings.signing_secret(), room, name=name, ttl_s=600,
                            scheduled=True)
            context = await new_context(browser, server.url)
            page = await context.new_page()
            await page.goto(link + "&autojoin=1")
            contexts.append(context)
            pages.append(page)
        for page in pages:
            await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
        # Each page decodes two videos (the other page's and the unit's camera) and hears two.
        deadline = asyncio.get_running_loop().time() + 40
        while True:
            first = [await page.evaluate(INBOUND) for page in pages]
            await asyncio.sleep(2)
            second = [await page.evaluate(INBOUND) for page in pages]
            ok = all(growing(a[kind], b[kind]) >= 2 for a, b in zip(first, second, strict=True)
                     for kind in ("video", "audio"))
            if ok or asyncio.get_running_loop().time() > deadline:
                break
        assert ok, (first, second)
        await screenshot(pages[0], "call-with-room-unit")
        # The unit sees them: the composite it decodes has both pages' cameras in it.
        mixer = server.app[MEDIA].rooms[room].mixer
        assert mixer is not None
        assert await wait_until(lambda: len(mixer.decoders.selected) == 3)
        assert await wait_until(lambda: unit.decoded_fps() > 5, timeout=15)
        assert member.media_counts()["audio_out"] > 100
    finally:
        for context in contexts:
            await context.close()
        await unit.stop()


async def test_the_host_is_offered_no_mode_switch_for_a_room_unit(server, browser, tmp_path: Path) -> None:
    """A host's list showed "Separate pictures" beside a room unit too: pressed, the server
    refused it (a unit on SIP is always mixed) and the page said "The server did not
    understand the page: reload the page". The list says which participants are units,
    and the page offers them no mode switch (mute, ask to unmute, remove stay)."""
    room = bridge(server)
    unit = Baresip(tmp_path / "unit")
    await unit.start()
    context = await new_context(browser, server.url)
    try:
        await dial_in(server, unit, room)
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), room, role="host", name="Velín",
                        ttl_s=600, scheduled=True)
        await page.goto(link + "&autojoin=1&lang=en")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        buttons = await page.eval_on_selector_all(
            "#people li:not(:has-text('(You)')) button", "els => els.map((e) => e.textContent)")
        assert buttons == ["Mute", "Ask to unmute", "Remove"], buttons
    finally:
        await context.close()
        await unit.stop()
