"""A media worker killed mid-call: the call pages come back by themselves, no reload."""

from __future__ import annotations

import asyncio

import pytest

from mcu.pool import WorkerProcess
from multipoint.app import LIVE_ROOMS, POOL
from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot

pytestmark = pytest.mark.browser

# Frames decoded and audio packets received, summed over the page's current connection.
RECEIVED = """
async () => {
  const pc = window.multipointCall.session?.pc;
  if (!pc || pc.connectionState !== 'connected') return null;
  let frames = 0, packets = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') frames += s.framesDecoded || 0;
    if (s.kind === 'audio') packets += s.packetsReceived || 0;
  });
  return {frames, packets};
}
"""


async def open_call_pages(browser, base_url: str, links: list[str]) -> tuple[list, list]:
    """A page per link, each in a context of its own, joined at once; each page marked so
    that a test can tell it was never reloaded (``window.loadedOnce``)."""
    pages, contexts = [], []
    for link in links:
        context = await new_context(browser, base_url)
        page = await context.new_page()
        await page.goto(link + "&autojoin=1&lang=cs")
        await page.evaluate("window.loadedOnce = true")  # gone if the page reloaded
        contexts.append(context)
        pages.append(page)
    return pages, contexts


async def receiving(page, within: float) -> bool:
    """Video frames and audio packets both grow on the page's connection within ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        before = await page.evaluate(RECEIVED)
        await asyncio.sleep(0.5)
        after = await page.evaluate(RECEIVED)
        if before and after and after["frames"] > before["frames"] \
                and after["packets"] > before["packets"]:
            return True
    return False


async def test_pages_rejoin_by_themselves_when_their_worker_is_killed(two_workers, browser) -> None:
    server = two_workers
    secret = server.settings.signing_secret()
    pages, contexts = await open_call_pages(browser, server.url, [
        join_url(server.url, secret, "povodne-vysocina", role="guest", name=name, ttl_s=600)
        for name in ("HZS Jihlava", "ZZS Vysočina")])
    try:
        for page in pages:
            assert await receiving(page, 30)
        (room,) = [r for r in await server.app[LIVE_ROOMS].rooms() if r["name"] == "povodne-vysocina"]
        (hosting,) = room["workers"]
        worker = server.app[POOL].workers[hosting]
        assert isinstance(worker, WorkerProcess)
        before = [await page.evaluate("window.multipointCall.me") for page in pages]
        worker.kill()
        for page in pages:  # how fast: bench.scale's failover_s
            assert await receiving(page, 20), "the page did not come back by itself"
        for page, old in zip(pages, before, strict=True):
            assert await page.evaluate("window.loadedOnce") is True  # no reload
            assert await page.evaluate("window.multipointCall.me") != old  # joined anew
        await screenshot(pages[0], "call-after-worker-restart")
    finally:
        for context in contexts:
            await context.close()
