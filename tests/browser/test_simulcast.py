"""Simulcast in real Chromium: the camera goes up as three layers, each viewer gets the
one its tile needs, a viewer moves between layers without a break, and a layer nobody
watches is paused at the publisher."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.network import INBOUND_VIDEO, OUTBOUND_LAYERS
from multipoint.app import MEDIA
from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot

pytestmark = pytest.mark.browser

ROOM = "simulcast-porada"

async def wait_until(predicate, timeout: float, interval: float = 0.5) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False


def slot_of(server, viewer_id: str, publisher_id: str) -> Any:
    """The viewer's receive slot (a Consumer) showing the publisher's camera."""
    viewer = server.app[MEDIA].rooms[ROOM].participants[viewer_id]
    for consumer in viewer.consumers.values():
        if consumer.producer is not None and consumer.producer.id == f"{publisher_id}-camera":
            return consumer
    return None


def mid_of(server, viewer_id: str, consumer: Any) -> str:
    viewer = server.app[MEDIA].rooms[ROOM].participants[viewer_id]
    return next(mid for mid, leg in viewer._leg_by_mid.items() if leg is consumer)


async def test_each_viewer_gets_the_layer_its_tile_needs(server, browser) -> None:
    secret = server.settings.signing_secret()
    pages, contexts = [], []
    for name in ("Publikující", "Velká dlaždice", "Malá dlaždice"):
        context = await new_context(browser, server.url)
        page = await context.new_page()
        await page.goto(join_url(server.url, secret, ROOM, name=name, ttl_s=600) + "&autojoin=1")
        contexts.append(context)
        pages.append(page)
    publisher_page, big_page, small_page = pages
    try:
        for page in pages:
            await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
        # Only one camera is encoded (in three layers): a loaded 2-core machine is short of
        # CPU for more, and Chrome then holds back its top layer.
        for viewer_page in pages[1:]:
            await viewer_page.click("#camera")
        publisher, big, small = [await page.evaluate("window.multipointCall.me") for page in pages]
        room = server.app[MEDIA].rooms[ROOM]
        camera = room.participants[publisher].producers["camera"]
        # The big viewer makes the publisher's tile the big one at once: with small tiles
        # only, the top layer would rightly be paused at the publisher within 5 s.
        await big_page.wait_for_selector(f"#grid .tile[data-participant='{publisher}']", timeout=30_000)
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        # The page answered the offer's three RIDs, and each layer arrives as a stream.
        every_layer = lambda: _true(camera.layers and all(layer.packets for layer in camera.layers))  # noqa: E731
        assert await wait_until(every_layer, 45), [(layer.rid, layer.packets) for layer in camera.layers]
        assert [layer.rid for layer in camera.layers] == ["q", "h", "f"]

        big_slot = slot_of(server, big, publisher)
        small_slot = slot_of(server, small, publisher)
        assert big_slot is not None and small_slot is not None

        async def layers_settled() -> bool:
            return big_slot.layer == 2 and small_slot.layer == 1 and big_slot.target_layer is None

        assert await wait_until(layers_settled, 25), (
            big_slot.layer, small_slot.layer, room.participants[big].tile_heights,
            room.participants[small].tile_heights)
        big_mid, small_mid = mid_of(server, big, big_slot), mid_of(server, small, small_slot)

        async def heights(page, mid: str, height: int) -> bool:
            return (await page.evaluate(INBOUND_VIDEO)).get(mid, {}).get("height") == height

        assert await wait_until(lambda: heights(big_page, big_mid, 540), 15)
        assert await wait_until(lambda: heights(small_page, small_mid, 270), 15)
        await screenshot(big_page, "simulcast-big-tile")

        # Back to a small tile: the big viewer steps down to the middle layer, its video
        # going on without a break (no freeze, no picture lost).
        before = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        assert await wait_until(lambda: _true(big_slot.layer == 1 and big_slot.target_layer is None), 15)
        assert await wait_until(lambda: heights(big_page, big_mid, 270), 15)
        await asyncio.sleep(2)
        after = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        assert after["frames"] > before["frames"] + 20
        assert after["freezes"] - before["freezes"] <= 1, (before, after)

        # Nobody takes the top layer now: the publisher's page is told to pause it, and
        # its encoder stops; the two lower layers go on.
        async def top_paused() -> bool:
            return camera.layers[2].packets > 0 and publisher in room.participants and \
                room.participants[publisher].sent_layers == ["q", "h"]

        assert await wait_until(top_paused, 15), room.participants[publisher].sent_layers
        await asyncio.sleep(1.5)
        first = await publisher_page.evaluate(OUTBOUND_LAYERS)
        await asyncio.sleep(2)
        second = await publisher_page.evaluate(OUTBOUND_LAYERS)
        assert second["f"]["frames"] == first["f"]["frames"], (first, second)
        assert second["h"]["frames"] > first["h"]["frames"] and second["q"]["frames"] > first["q"]["frames"]

        # Big again: the top layer is asked for, comes back, and is forwarded.
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        assert await wait_until(lambda: heights(big_page, big_mid, 540), 20)
        assert room.participants[publisher].sent_layers == ["q", "h", "f"]
    finally:
        for context in contexts:
            await context.close()


async def _true(value: object) -> bool:
    return bool(value)
