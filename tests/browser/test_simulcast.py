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


def slot_of(server, viewer_id: str, publisher_id: str, room: str = ROOM) -> Any:
    """The viewer's receive slot (a Consumer) showing the publisher's camera."""
    viewer = server.app[MEDIA].rooms[room].participants[viewer_id]
    for consumer in viewer.consumers.values():
        if consumer.producer is not None and consumer.producer.id == f"{publisher_id}-camera":
            return consumer
    return None


def mid_of(server, viewer_id: str, consumer: Any, room: str = ROOM) -> str:
    viewer = server.app[MEDIA].rooms[room].participants[viewer_id]
    return next(mid for mid, leg in viewer._leg_by_mid.items() if leg is consumer)


async def height_is(page, mid: str, height: int) -> bool:
    """Whether the page decodes the video of ``mid`` at ``height`` lines."""
    return (await page.evaluate(INBOUND_VIDEO)).get(mid, {}).get("height") == height


async def to_small_tile_without_a_break(page, slot: Any, mid: str, publisher: str) -> dict[str, Any]:
    """The viewer whose big tile shows the publisher makes it small again: its slot steps
    down to the middle layer (270 lines), the video going on without a break (frames
    keep coming, at most one freeze). Returns the video's stats after."""
    before = (await page.evaluate(INBOUND_VIDEO))[mid]
    await page.click(f"#grid .tile[data-participant='{publisher}']")
    assert await wait_until(lambda: truthy(slot.layer == 1 and slot.target_layer is None), 15)
    assert await wait_until(lambda: height_is(page, mid, 270), 15)
    await asyncio.sleep(2)
    after = (await page.evaluate(INBOUND_VIDEO))[mid]
    assert after["frames"] > before["frames"] + 20
    assert after["freezes"] - before["freezes"] <= 1, (before, after)
    return after


async def only_these_layers_encoded(room: Any, publisher: str, page, active: list[str]) -> None:
    """The server tells the publisher's page to send only the ``active`` layers, and its
    encoder stops the others while these go on."""
    async def told() -> bool:
        return publisher in room.participants and room.participants[publisher].sent_layers == active

    assert await wait_until(told, 15), room.participants[publisher].sent_layers
    await asyncio.sleep(1.5)
    first = await page.evaluate(OUTBOUND_LAYERS)
    await asyncio.sleep(2)
    second = await page.evaluate(OUTBOUND_LAYERS)
    for rid in ("q", "h", "f"):
        if rid in active:
            assert second[rid]["frames"] > first[rid]["frames"], (rid, first, second)
        else:
            assert second[rid]["frames"] == first[rid]["frames"], (rid, first, second)


async def join_three(server, browser, room: str, contexts: list[Any],
                     viewports: tuple[tuple[int, int] | None, ...] = (None, None, None)) -> tuple[Any, ...]:
    """A publisher, a viewer that shows its camera in the big tile and one with small
    tiles, each in a browser context of its own (added to ``contexts``), joined to
    ``room``; only the publisher's camera is on (a loaded 2-core machine is short of CPU
    for more cameras, and Chrome then holds back its top layer). Returns the three pages,
    the three participant ids and the publisher's camera (the server's Producer)."""
    secret = server.settings.signing_secret()
    pages = []
    for name, viewport in zip(("Publikující", "Velká dlaždice", "Malá dlaždice"), viewports, strict=True):
        context = await new_context(browser, server.url, viewport)
        contexts.append(context)
        page = await context.new_page()
        await page.goto(join_url(server.url, secret, room, name=name, ttl_s=600) + "&autojoin=1")
        pages.append(page)
    for page in pages:
        await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
    for viewer_page in pages[1:]:
        await viewer_page.click("#camera")
    publisher, big, small = [await page.evaluate("window.multipointCall.me") for page in pages]
    camera = server.app[MEDIA].rooms[room].participants[publisher].producers["camera"]
    # The big viewer makes the publisher's tile the big one at once: with small tiles
    # only, the top layer would rightly be paused at the publisher within 5 s.
    await pages[1].wait_for_selector(f"#grid .tile[data-participant='{publisher}']", timeout=30_000)
    await pages[1].click(f"#grid .tile[data-participant='{publisher}']")
    return (*pages, publisher, big, small, camera)


async def test_each_viewer_gets_the_layer_its_tile_needs(server, browser) -> None:
    contexts: list[Any] = []
    try:
        publisher_page, big_page, small_page, publisher, big, small, camera = await join_three(
            server, browser, ROOM, contexts)
        room = server.app[MEDIA].rooms[ROOM]
        # The page answered the offer's three RIDs, and each layer arrives as a stream.
        every_layer = lambda: truthy(camera.layers and all(layer.packets for layer in camera.layers))  # noqa: E731
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

        assert await wait_until(lambda: height_is(big_page, big_mid, 540), 15)
        assert await wait_until(lambda: height_is(small_page, small_mid, 270), 15)
        await screenshot(big_page, "simulcast-big-tile")

        # Back to a small tile: the big viewer steps down to the middle layer, its video
        # going on without a break (no freeze, no picture lost).
        await to_small_tile_without_a_break(big_page, big_slot, big_mid, publisher)

        # Nobody takes the top layer now: the publisher's page is told to pause it, and
        # its encoder stops; the two lower layers go on.
        assert camera.layers[2].packets > 0
        await only_these_layers_encoded(room, publisher, publisher_page, ["q", "h"])

        # Big again: the top layer is asked for, comes back, and is forwarded.
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        assert await wait_until(lambda: height_is(big_page, big_mid, 540), 20)
        assert room.participants[publisher].sent_layers == ["q", "h", "f"]
    finally:
        for context in contexts:
            await context.close()


async def truthy(value: object) -> bool:
    return bool(value)
