"""A whole media node killed mid-call: the call pages come back through the other
node's front by themselves, without reloading (two serve --node processes on PostgreSQL)."""

from __future__ import annotations

import asyncio
import time

import pytest

from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot
from tests.browser.test_failover import receiving
from tests.nodes import SECRET, izs_bridge
from tests.scheduler.conftest import PG_URL

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL")]


async def test_pages_come_back_through_the_other_front_when_their_node_dies(nodes, browser) -> None:
    node_a, node_b, url = nodes
    room = izs_bridge(url)
    pages, contexts = [], []
    for name in ("HZS Kraj Vysočina", "Policie Jihlava"):
        # The link names node A's front; the bridge lives on the IZS node, B.
        link = join_url(node_a.front, SECRET, room, role="guest", name=name, ttl_s=600,
                        scheduled=True)
        context = await new_context(browser, node_a.front)
        page = await context.new_page()
        await page.goto(link + "&autojoin=1&lang=cs")
        await page.evaluate("window.loadedOnce = true")
        contexts.append(context)
        pages.append(page)
    try:
        for page in pages:
            assert await receiving(page, 30)
            assert await page.evaluate("window.multipointCall.front") == node_b.front
        killed_at = time.monotonic()
        node_b.kill()
        for page in pages:
            assert await receiving(page, 25), "the page did not come back through node A"
        back_after = time.monotonic() - killed_at
        assert back_after < 25, back_after
        for page in pages:
            assert await page.evaluate("window.loadedOnce") is True  # no reload
            assert await page.evaluate("window.multipointCall.front") == node_a.front
        await screenshot(pages[0], "call-after-node-failover")
    finally:
        for context in contexts:
            await context.close()
    await asyncio.sleep(0)
