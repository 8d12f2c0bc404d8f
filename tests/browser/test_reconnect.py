"""An office whose link goes down for 5 s: the call page comes back in place.

The office is a network namespace of its own, joined to the test's namespace by a veth
pair (docs: ../shared/TESTING.md), and Chromium runs inside it. Taking the server's end
of the link down cuts the office off; when it comes up again the page restarts ICE on
the same peer connection (and, had its socket died, takes its place back over a new
one): same participant id, no reload, media both ways again.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from bench.netlab import SERVER_ADDRESS, Office
from multipoint.app import LIVE_ROOMS, MEDIA, create_app
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


def cut_signaling(office: Office, port: int, cut: bool, flows: list[int] | None = None) -> None:
    """Drop, in the office, every TCP segment to and from the front's port (its sockets,
    old and new; the media, UDP, still flows), or only those of the connections from
    these local ports (``flows``: as when a NAT or firewall forgets them, while new
    connections pass); or let them all through again."""
    subprocess.run([*office.enter, "nft", "delete", "table", "inet", "nosignal"], capture_output=True)
    if not cut:
        return
    ours = ["tcp", "sport", "{ " + ", ".join(map(str, flows)) + " }"] if flows else []
    theirs = ["tcp", "dport", "{ " + ", ".join(map(str, flows)) + " }"] if flows else []
    for rule in (["add", "table", "inet", "nosignal"],
                 ["add", "chain", "inet", "nosignal", "output", "{ type filter hook output priority 0; }"],
                 ["add", "rule", "inet", "nosignal", "output", "tcp", "dport", str(port), *ours, "drop"],
                 ["add", "chain", "inet", "nosignal", "input", "{ type filter hook input priority 0; }"],
                 ["add", "rule", "inet", "nosignal", "input", "tcp", "sport", str(port), *theirs, "drop"]):
        subprocess.run([*office.enter, "nft", *rule], check=True, capture_output=True)


def open_flows(office: Office, port: int) -> list[int]:
    """The office's local ports of its established connections to the front's port."""
    out = subprocess.run([*office.enter, "ss", "-tnH", "state", "established", f"( dport = :{port} )"],
                         check=True, capture_output=True, text=True).stdout
    return sorted({int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()})


async def office_page(browser, server: RunningServer, name: str):
    """A joined call page in the office, its media connected; and its uncaught errors."""
    origin = f"http://{SERVER_ADDRESS}:{server.port}"
    page = await (await new_context(browser, origin)).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(join_url(origin, server.settings.signing_secret(), ROOM, role="guest",
                             name=name, ttl_s=600) + "&autojoin=1&lang=en")
    await page.evaluate("window.loadedOnce = true")  # gone if the page reloaded
    await page.wait_for_function(
        "() => window.multipointCall.session?.pc?.iceConnectionState === 'connected'"
        " && window.multipointCall.roster?.length === 1", timeout=30_000)
    return page, errors


async def launch_in_office(playwright, office: Office, server: RunningServer, tmp_path: Path):
    wrapper = office.chromium_wrapper(CHROMIUM, tmp_path)
    origin = f"http://{SERVER_ADDRESS}:{server.port}"
    flags = [f for f in CHROMIUM_FLAGS if f != "--allow-loopback-in-peer-connection"]
    flags.append(f"--unsafely-treat-insecure-origin-as-secure={origin}")  # camera on plain HTTP
    return await playwright.chromium.launch(executable_path=str(wrapper), args=flags)


async def test_a_socket_whose_flow_a_firewall_forgot_is_given_up_and_resumed(
        office, server, tmp_path) -> None:
    """The office's firewall forgets the page's TCP flows (new connections pass; the
    media, UDP, flows on). The browser hears nothing of it: the page used to wait on its
    dead socket while the server, its heartbeats unanswered, held its place only for the
    resume grace and then ended it. The page notices the silence itself and takes its
    place back over a new socket, with its media never interrupted."""
    signaling = server.app[LIVE_ROOMS].signaling
    async with async_playwright() as playwright:
        browser = await launch_in_office(playwright, office, server, tmp_path)
        try:
            page, errors = await office_page(browser, server, "Obecní úřad Kunžak")
            me = await page.evaluate("window.multipointCall.me")
            lost = signaling.connections[me]
            cut_signaling(office, server.port, True, flows=open_flows(office, server.port))
            cut_at = time.monotonic()
            assert await wait_until(lambda: signaling.connections.get(me) not in (None, lost),
                                    timeout=30), "the page did not come back on a new socket"
            back_s = time.monotonic() - cut_at
            await page.wait_for_function("() => window.multipointCall.session.recoveries >= 1",
                                         timeout=15_000)
            print(f"back on a new socket {back_s:.1f} s after its flow was dropped")
            assert await page.evaluate("window.multipointCall.me") == me
            assert await page.evaluate("window.loadedOnce") is True
            assert await page.evaluate("window.multipointCall.session.pc.iceConnectionState") \
                in ("connected", "completed")
            assert errors == []
        finally:
            await browser.close()


async def test_mute_and_camera_off_while_the_socket_is_lost_hold_after_the_resume(
        office, server, tmp_path) -> None:
    """The office's socket dies while its media lives (a firewall drops the TCP flow),
    and the official mutes and turns the camera off meanwhile. When the page is back on
    a new socket, the server's first participant list is from before: the page used to
    take it as the truth and switch its microphone back on, unbeknown to the official,
    and the server went on forwarding it. Both stay off, on the page and the server."""
    signaling = server.app[LIVE_ROOMS].signaling
    async with async_playwright() as playwright:
        browser = await launch_in_office(playwright, office, server, tmp_path)
        try:
            page, errors = await office_page(browser, server, "Obecní úřad Kunžak")
            me = await page.evaluate("window.multipointCall.me")
            lost = signaling.connections[me]

            cut_signaling(office, server.port, True)
            try:
                # The server's heartbeats go unanswered: it keeps the participant for a resume.
                assert await wait_until(lambda: lost.ws.closed, timeout=20)
                assert signaling.connections.get(me) is lost
                await page.click("#mute")
                await page.click("#camera")
            finally:
                cut_signaling(office, server.port, False)
            assert await wait_until(lambda: me in signaling.connections
                                    and signaling.connections[me] is not lost, timeout=30)
            await page.wait_for_function("() => window.multipointCall.session.recoveries >= 1",
                                         timeout=30_000)
            await asyncio.sleep(3)  # the lists after the resume have all arrived

            participant = server.app[MEDIA].rooms[ROOM].participants[me]
            assert await page.evaluate("window.multipointCall.me") == me  # resumed, not rejoined
            assert await page.evaluate("window.multipointCall.muted") is True
            assert await page.evaluate(
                "window.multipointCall.stream.getAudioTracks().every((t) => !t.enabled)")
            assert await page.get_attribute("#mute", "aria-pressed") == "true"
            assert participant.producers["microphone"].muted
            assert participant.producers["camera"].muted
            roster = await page.evaluate("window.multipointCall.roster")
            assert roster[0]["audio_muted"] and roster[0]["video_muted"]
            assert errors == []
        finally:
            await browser.close()


async def test_a_page_waiting_for_its_new_socket_stays_responsive(office, server, tmp_path) -> None:
    """The office's TCP to the front is dropped altogether (old and new connections; the
    media flows on): the page gives its silent socket up and its new one hangs in
    connecting. Its recovery loop used to spin on resolved promises meanwhile (media up,
    nothing to await), freezing the page for its whole 25 s window, the new socket's
    open event included, and then joined again as a new participant. It waits, stays
    responsive, and resumes in place once TCP passes again."""
    signaling = server.app[LIVE_ROOMS].signaling
    async with async_playwright() as playwright:
        browser = await launch_in_office(playwright, office, server, tmp_path)
        try:
            page, errors = await office_page(browser, server, "Obecní úřad Kunžak")
            me = await page.evaluate("window.multipointCall.me")
            lost = signaling.connections[me]
            cut_signaling(office, server.port, True)
            try:
                # The page gave its socket up and opened a new one, which cannot connect.
                await page.wait_for_function(
                    "() => window.multipointCall.session.ws.readyState === WebSocket.CONNECTING",
                    timeout=30_000, polling=500)
                await asyncio.sleep(8)  # past the resume's 5 s wait: the loop waits on
                for _ in range(3):
                    started = time.monotonic()
                    await asyncio.wait_for(page.evaluate("1 + 1"), 5)  # frozen: times out
                    assert time.monotonic() - started < 2
                    await asyncio.sleep(1)
            finally:
                cut_signaling(office, server.port, False)
            assert await wait_until(lambda: signaling.connections.get(me) not in (None, lost),
                                    timeout=30), "the page did not come back on a new socket"
            assert await page.evaluate("window.multipointCall.me") == me
            assert errors == []
        finally:
            await browser.close()
