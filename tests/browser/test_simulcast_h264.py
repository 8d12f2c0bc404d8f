"""Simulcast of an H.264 camera in real Chromium (an H.264 room: MULTIPOINT_VIDEO_CODEC
h264): the camera goes up as three H.264 layers, a viewer with a small tile gets the low
one, a viewer moves down and back up without a break, a layer nobody watches is paused at
the publisher, and one the publisher stops on its own is left for the best one left.
As tests/browser/test_simulcast.py does for VP8."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.network import INBOUND_VIDEO, OUTBOUND_LAYERS
from multipoint.app import MEDIA
from multipoint.settings import Settings
from tests.browser.conftest import screenshot
from tests.browser.test_simulcast import (
    height_is,
    join_three,
    mid_of,
    only_these_layers_encoded,
    slot_of,
    to_small_tile_without_a_break,
    truthy,
    wait_until,
)

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


async def test_an_h264_camera_goes_up_in_three_layers_and_each_viewer_gets_its_own(server, browser) -> None:
    contexts: list[Any] = []
    try:
        # The small viewer's window is just under the page's two-column width (800 px):
        # the grid takes it all, three tiles a row at little more than their least width
        # (240 px), 16:9 tiles under 150 device pixels tall.
        publisher_page, big_page, small_page, publisher, big, small, camera = await join_three(
            server, browser, ROOM, contexts, ((1280, 720), (1280, 720), (790, 720)))
        room = server.app[MEDIA].rooms[ROOM]
        assert camera.codec == "h264"
        # The page answered the offer's three RIDs, and each layer arrives as a stream.
        every_layer = lambda: truthy(camera.layers and all(layer.packets for layer in camera.layers))  # noqa: E731
        assert await wait_until(every_layer, 45), [(layer.rid, layer.packets) for layer in camera.layers]
        assert [layer.rid for layer in camera.layers] == ["q", "h", "f"]
        assert all(layer.codec == "h264" for layer in camera.layers)
        sent = await publisher_page.evaluate(OUTBOUND_CODECS)
        assert {rid: layer["codec"] for rid, layer in sent.items()} == {rid: "video/H264" for rid in "qhf"}

        big_slot = slot_of(server, big, publisher, ROOM)
        small_slot = slot_of(server, small, publisher, ROOM)
        assert big_slot is not None and small_slot is not None

        async def layers_settled() -> bool:
            return big_slot.layer == 2 and small_slot.layer == 0 and big_slot.target_layer is None \
                and small_slot.target_layer is None

        assert await wait_until(layers_settled, 45), (  # a loaded CI machine: slow to start
            big_slot.layer, small_slot.layer, room.participants[big].tile_heights,
            room.participants[small].tile_heights)
        big_mid, small_mid = mid_of(server, big, big_slot, ROOM), mid_of(server, small, small_slot, ROOM)

        assert await wait_until(lambda: height_is(big_page, big_mid, 540), 15)
        # The small tile gets the quarter layer: 540 / 4 = 135 lines as sent, 134 as
        # decoded (Chrome's H.264 encoder codes 4:2:0 pictures of even height; VP8 keeps 135).
        assert await wait_until(lambda: height_is(small_page, small_mid, 134), 15), (
            await small_page.evaluate(INBOUND_VIDEO), small_mid,
            await publisher_page.evaluate(OUTBOUND_LAYERS))
        assert (await big_page.evaluate(INBOUND_CODECS))[big_mid] == "video/H264"
        assert (await small_page.evaluate(INBOUND_CODECS))[small_mid] == "video/H264"
        await screenshot(big_page, "simulcast-h264-big-tile")
        await screenshot(small_page, "simulcast-h264-small-tile")

        # Nobody takes the middle layer: the publisher's page is told to pause it, and its
        # encoder stops; the other two go on.
        await only_these_layers_encoded(room, publisher, publisher_page, ["q", "f"])

        # A smaller tile: the big viewer steps down to the middle layer, asked for again,
        # its video going on without a break.
        after = await to_small_tile_without_a_break(big_page, big_slot, big_mid, publisher)

        # Big again: up to the top layer (once a padding probe shows the link takes it),
        # and the picture keeps coming.
        before = after
        keyframes_before = await publisher_page.evaluate(OUTBOUND_CODECS)
        asked_before = [layer.last_keyframe_request for layer in camera.layers]
        await big_page.click(f"#grid .tile[data-participant='{publisher}']")
        assert await wait_until(lambda: height_is(big_page, big_mid, 540), 20)
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
        assert await wait_until(lambda: truthy(big_slot.layer == 1 and big_slot.target_layer is None), 15), (
            big_slot.layer, big_slot.target_layer, [layer.packets for layer in camera.layers])
        assert await wait_until(lambda: height_is(big_page, big_mid, 270), 15)
        before = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        await asyncio.sleep(2)
        after = (await big_page.evaluate(INBOUND_VIDEO))[big_mid]
        assert after["frames"] > before["frames"] + 20 and after["height"] == 270
    finally:
        for context in contexts:
            await context.close()
