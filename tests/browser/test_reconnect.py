"""An office whose link goes down for 5 s: the call page comes back in place.

The office is a network namespace of its own, joined to the test's namespace by a veth
pair (docs: ../shared/TESTING.md), and Chromium runs inside it. Taking the server's end
of the link down cuts the office off; when it comes up again the page restarts ICE on
the same peer connection (and, had its socket died, takes its place back over a new
one): same participant id, no reload, media both ways again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from bench.netlab import SERVER_ADDRESS, Office
from multipoint.app import MEDIA, create_app
from multipoint.settings import load_settings
from signaling.links import join_url
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, new_context, screenshot
from tests.browser.test_failover import receiving
from tests.conftest import RunningServer, free_port
from tests.peers import wait_until

pytestmark = pytest.mark.browser

ROOM = "porada-s-vypadkem"


@pytest.fixture
def office() -> Iterator[Office]:
    office = Office()
    try:
        yield office
    finally:
        office.close()


@pytest.fixture
async def server(office: Office, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The service on the office link's address (HTTP and media) and on loopback."""
    port = free_port()
    settings = load_settings(data_dir=tmp_path / "data", secret_key="test-secret-" + "x" * 20,
                             media_addresses=[SERVER_ADDRESS, "127.0.0.1"], media_inline=True,
                             public_url=f"http://{SERVER_ADDRESS}:{port}")
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    for host in (SERVER_ADDRESS, "127.0.0.1"):
        await web.TCPSite(runner, host, port).start()
    try:
        yield RunningServer(runner, settings, port)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("outage_s", [5.0, 15.0])
async def test_a_page_whose_link_goes_down_comes_back_in_place(office, server, tmp_path,
                                                                outage_s: float) -> None:
    """5 s: the pair in use comes back by itself. 15 s: the page sees its connection
    disconnected and its socket dies (heartbeats): it restarts ICE over a new socket."""
    # Chromium in the office namespace (Playwright talks to it over a pipe, not the network).
    wrapper = office.chromium_wrapper(CHROMIUM, tmp_path)
    origin = f"http://{SERVER_ADDRESS}:{server.port}"
    office_flags = [f for f in CHROMIUM_FLAGS if f != "--allow-loopback-in-peer-connection"]
    office_flags.append(f"--unsafely-treat-insecure-origin-as-secure={origin}")  # camera on plain HTTP
    secret = server.settings.signing_secret()
    async with async_playwright() as playwright:
        in_office = await playwright.chromium.launch(executable_path=str(wrapper), args=office_flags)
        # The other participant: a page on the server's side of the link.
        at_region = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            pages = []
            for browser, base, name in ((in_office, origin, "Obecní úřad Kunžak"),
                                        (at_region, server.url, "Krajský úřad")):
                context = await new_context(browser, base)
                page = await context.new_page()
                await page.goto(join_url(base, secret, ROOM, role="guest", name=name, ttl_s=600)
                                + "&autojoin=1&lang=cs")
                await page.evaluate("window.loadedOnce = true")  # gone if the page reloaded
                pages.append(page)
            office_page, other_page = pages
            for page in pages:
                assert await receiving(page, 30)
            me = await office_page.evaluate("window.multipointCall.me")

            office.link(False)
            await asyncio.sleep(outage_s)
            office.link(True)
            back_at = time.monotonic()
            figures = {}
            for label, page in (("office receives", office_page), ("others receive the office", other_page)):
                assert await receiving(page, 25), f"{label}: not within 25 s of the link returning"
                figures[label] = round(time.monotonic() - back_at, 1)
            recoveries = await office_page.evaluate("window.multipointCall.session.recoveries")
            print(f"outage of {outage_s:g} s: back after the link returned (s): {figures}; "
                  f"ICE restarts by the page: {recoveries}")
            if outage_s > 10:  # long enough for the page to see its connection go
                assert recoveries >= 1
                participant = server.app[MEDIA].rooms[ROOM].participants[me]
                assert await wait_until(lambda: participant.ice_restarts >= 1, timeout=10)

            assert await office_page.evaluate("window.loadedOnce") is True  # no reload
            assert await office_page.evaluate("window.multipointCall.me") == me  # no new join
            roster = await other_page.evaluate("window.multipointCall.roster.map((p) => p.id)")
            assert me in roster and len(roster) == 2  # the same participant, listed once
            await screenshot(office_page, "call-after-link-outage")
        finally:
            await in_office.close()
            await at_region.close()
