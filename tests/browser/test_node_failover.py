"""A whole media node killed mid-call: the call pages come back through the other
node's front by themselves, without reloading (two serve --node processes on PostgreSQL)."""

from __future__ import annotations

import pytest

from signaling.links import join_url
from tests.browser.conftest import screenshot
from tests.browser.test_failover import open_call_pages, receiving
from tests.nodes import SECRET, izs_bridge
from tests.scheduler.conftest import PG_URL

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL")]


async def test_pages_come_back_through_the_other_front_when_their_node_dies(nodes, browser) -> None:
    node_a, node_b, url = nodes
    room = izs_bridge(url)
    # The links name node A's front; the bridge lives on the IZS node, B.
    pages, contexts = await open_call_pages(browser, node_a.front, [
        join_url(node_a.front, SECRET, room, role="guest", name=name, ttl_s=600, scheduled=True)
        for name in ("HZS Kraj Vysočina", "Policie Jihlava")])
    try:
        for page in pages:
            assert await receiving(page, 30)
            assert await page.evaluate("window.multipointCall.front") == node_b.front
        node_b.kill()
        for page in pages:  # how fast: bench.scale --nodes 2's node_failover_s
            assert await receiving(page, 25), "the page did not come back through node A"
        for page in pages:
            assert await page.evaluate("window.loadedOnce") is True  # no reload
            assert await page.evaluate("window.multipointCall.front") == node_a.front
        await screenshot(pages[0], "call-after-node-failover")
    finally:
        for context in contexts:
            await context.close()
