"""Simulcast of an H.264 camera in real Chromium (an H.264 room: MULTIPOINT_VIDEO_CODEC
h264): the camera goes up as three H.264 layers, a viewer with a small tile gets the low
one, a viewer moves down and back up without a break, a layer nobody watches is paused at
the publisher, and one the publisher stops on its own is left for the best one left.
As tests/browser/test_simulcast.py does for VP8."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext

from bench.network import INBOUND_VIDEO, OUTBOUND_LAYERS
from multipoint.app import MEDIA
from multipoint.settings import Settings
from signaling.links import join_url
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser

ROOM = "simulcast-h264-porada"

# The codec of each inbound video, by mid, as the browser decodes it.
INBOUND_CODECS = """
async () => {
  const report = await window.multipointCall.session.pc.getStats();
  const out = {};
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video' && s.codecId)
      out[s.mid] = report.get(s.codecId)?.mimeType ?? '';
  });
  return out;
}
"""
# What the publisher's encoder makes of each layer: its codec and keyframes.
OUTBOUND_CODECS = """
async () => {
  const report = await window.multipointCall.session.pc.getStats();
  const out = {};
  report.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid)
      out[s.rid] = {codec: report.get(s.codecId)?.mimeType ?? '', keyframes: s.keyFramesEncoded ?? 0,
                    encoder: s.encoderImplementation ?? ''};
  });
  return out;
}
"""
# The publisher's own estimator stops a layer (a weak uplink): Chrome sends it no more,
# whatever the page asks for. Done here by keeping the encoding inactive in every
# setParameters() the page makes.
STOP_LAYER = """
async (rid) => {
  const original = RTCRtpSender.prototype.setParameters;
  RTCRtpSender.prototype.setParameters = function (parameters, ...rest) {
    for (const encoding of parameters.encodings ?? []) if (encoding.rid === rid) encoding.active = false;
    return original.call(this, parameters, ...rest);
  };
  const sender = window.multipointCall.session.pc.getTransceivers()
    .find((t) => t.sender.getParameters().encodings?.length > 1).sender;
  await sender.setParameters(sender.getParameters());
}
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.video_codec = "h264"  # every room forwards H.264 (docs/codecs.md)
    return settings


async def wait_until(predicate, timeout: float, interval: float = 0.5) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False


async def new_context(browser: Browser, base_url: str, width: int, height: int) -> BrowserContext:
    context = await browser.new_context(base_url=base_url, viewport={"width": width, "height": height})
    await context.grant_permissions(["camera", "microphone"], origin=base_url)
    return context


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


async def _true(value: object) -> bool:
    return bool(value)


async def test_an_h264_camera_goes_up_in_three_layers_and_each_viewer_gets_its_own(server, browser) -> None:
    secret = server.settings.signing_secret()
    pages, contexts = [], []
    # The small viewer's window is just under the page's two-column width (800 px): the
    # grid takes it all, three tiles a row at little more than their least width (240 px),
    # 16:9 tiles under 150 device pixels tall.
    for name, (width, height) in (("Publikující", (1280, 720)), ("Velká dlaždice", (1280, 720)),
                                  ("Malá dlaždice", (790, 720))):
        context = await new_context(browser, server.url, width, height)
        page = await context.new_page()
        await page.goto(join_url(server.url, secret, ROOM, name=name, ttl_s=600) + "&autojoin=1")
        contexts.append(context)
        pages.append(page)
    publisher_page, big_page, small_page = pages
    try:
        for page in pages:
            await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
        # Only one camera is encoded (in three layers): a loaded 2-core machine is short of
        # CPU for more.
        for viewer_page in pages[1:]:
            await viewer_page.click("#camera")
        publisher, big, small = [await page.evaluate("window.multipointCall.me") for page in pages]
        room = server.app[MEDIA].rooms[ROOM]
        camera = room.participants[publisher].producers["camera"]
        assert camera.codec == "h264"
        await big_page.wait_for_selector(f"#grid .tile[data-participant='{publisher}']", timeout=30_000)
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        # The page answered the offer's three RIDs, and each layer arrives as a stream.
        every_layer = lambda: _true(camera.layers and all(layer.packets for layer in camera.layers))  # noqa: E731
        assert await wait_until(every_layer, 45), [(layer.rid, layer.packets) for layer in camera.layers]
        assert [layer.rid for layer in camera.layers] == ["q", "h", "f"]
        assert all(layer.codec == "h264" for layer in camera.layers)
        sent = await publisher_page.evaluate(OUTBOUND_CODECS)
        assert {rid: layer["codec"] for rid, layer in sent.items()} == {rid: "video/H264" for rid in "qhf"}

        big_slot = slot_of(server, big, publisher)
        small_slot = slot_of(server, small, publisher)
        assert big_slot is not None and small_slot is not None

        async def layers_settled() -> bool:
            return big_slot.layer == 2 and small_slot.layer == 0 and big_slot.target_layer is None \
                and small_slot.target_layer is None

        assert await wait_until(layers_settled, 25), (
            big_slot.layer, small_slot.layer, room.participants[big].tile_heights,
            room.participants[small].tile_heights)
        big_mid, small_mid = mid_of(server, big, big_slot), mid_of(server, small, small_slot)

        async def heights(page, mid: str, height: int) -> bool:
            return (await page.evaluate(INBOUND_VIDEO)).get(mid, {}).get("height") == height

        assert await wait_until(lambda: heights(big_page, big_mid, 540), 15)
        # The small tile gets the quarter layer: 540 / 4 = 135 lines as sent, 134 as
        # decoded (Chrome's H.264 encoder codes 4:2:0 pictures of even height; VP8 keeps 135).
        assert await wait_until(lambda: heights(small_page, small_mid, 134), 15), (
            await small_page.evaluate(INBOUND_VIDEO), small_mid,
            await publisher_page.evaluate(OUTBOUND_LAYERS))
        assert (await big_page.evaluate(INBOUND_CODECS))[big_mid] == "video/H264"
        assert (await small_page.evaluate(INBOUND_CODECS))[small_mid] == "video/H264"
        await screenshot(big_page, "simulcast-h264-big-tile")
        await screenshot(small_page, "simulcast-h264-small-tile")

        # Nobody takes the middle layer: the publisher's page is told to pause it, and its
        # encoder stops; the other two go on.
        async def middle_paused() -> bool:
            return room.participants[publisher].sent_layers == ["q", "f"]

        assert await wait_until(middle_paused, 15), room.participants[publisher].sent_layers
        await asyncio.sleep(1.5)
        first = await publisher_page.evaluate(OUTBOUND_LAYERS)
        await asyncio.sleep(2)
        second = await publisher_page.evaluate(OUTBOUND_LAYERS)
        assert second["h"]["frames"] == first["h"]["frames"], (first, second)
        assert second["f"]["frames"] > first["f"]["frames"] and second["q"]["frames"] > first["q"]["frames"]

        # A smaller tile: the big viewer steps down to the middle layer, asked for again,
        # its video going on without a break.
        before = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        assert await wait_until(lambda: _true(big_slot.layer == 1 and big_slot.target_layer is None), 15)
        assert await wait_until(lambda: heights(big_page, big_mid, 270), 15)
        await asyncio.sleep(2)
        after = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        assert after["frames"] > before["frames"] + 20
        assert after["freezes"] - before["freezes"] <= 1, (before, after)

        # Big again: up to the top layer (once a padding probe shows the link takes it),
        # and the picture keeps coming.
        before = after
        keyframes_before = await publisher_page.evaluate(OUTBOUND_CODECS)
        asked_before = [layer.last_keyframe_request for layer in camera.layers]
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        assert await wait_until(lambda: heights(big_page, big_mid, 540), 20)
        asked_after = [layer.last_keyframe_request for layer in camera.layers]
        keyframes_after = await publisher_page.evaluate(OUTBOUND_CODECS)
        # The top layer's keyframe was asked for (a PLI on its own SSRC), and came.
        assert asked_after[2] > asked_before[2]
        assert keyframes_after["f"]["keyframes"] > keyframes_before["f"]["keyframes"]
        await asyncio.sleep(2)
        after = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        assert after["frames"] > before["frames"] + 20
        assert after["freezes"] == before["freezes"], (before, after)

        # The publisher's own estimator drops the top layer: after 2 s without it the big
        # viewer is moved to the best layer left, the middle one.
        await publisher_page.evaluate(STOP_LAYER, "f")
        assert await wait_until(lambda: _true(big_slot.layer == 1 and big_slot.target_layer is None), 15), (
            big_slot.layer, big_slot.target_layer, [layer.packets for layer in camera.layers])
        assert await wait_until(lambda: heights(big_page, big_mid, 270), 15)
        before = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        await asyncio.sleep(2)
        after = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        assert after["frames"] > before["frames"] + 20 and after["height"] == 270
    finally:
        for context in contexts:
            await context.close()
