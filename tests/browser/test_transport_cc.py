"""transport-cc with real Chromium: Chrome's feedback drives our estimate of each
subscriber's downlink, and ours drives Chrome's own estimate as a publisher."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page

from mcu.participant import Participant
from multipoint.app import MEDIA
from signaling.links import join_url
from tests.browser.conftest import new_context

pytestmark = pytest.mark.browser

# The page's connection as Chrome's own estimator sees it: the selected candidate
# pair's available outgoing bitrate, and what the camera's outbound stream sends.
SENDING = """
async () => {
  const pc = window.multipointCall.session?.pc;
  if (!pc) return null;
  const out = {available: null, video_bytes: 0, target: null};
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded'
        && s.availableOutgoingBitrate !== undefined) out.available = s.availableOutgoingBitrate;
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.video_bytes += s.bytesSent || 0;
      if (s.targetBitrate) out.target = (out.target || 0) + s.targetBitrate;
    }
  });
  return out;
}
"""


async def open_page(server, browser, contexts: list, name: str) -> Page:
    link = join_url(server.url, server.settings.signing_secret(), "twcc", name=name, ttl_s=600)
    context = await new_context(browser, server.url)
    contexts.append(context)
    page = await context.new_page()
    await page.goto(link + "&autojoin=1")
    return page


async def available(page) -> float:
    sending = await page.evaluate(SENDING)
    assert sending is not None and sending["available"] is not None, sending
    return float(sending["available"])


async def test_chrome_and_the_server_estimate_from_each_others_feedback(server, browser, monkeypatch) -> None:
    media = server.app[MEDIA]
    contexts: list = []
    try:
        # The control: the server sends a publisher no transport-cc feedback (all else as
        # usual, transport-cc negotiated). Chrome's estimator, hearing nothing back about
        # what it sent, lowers its estimate by a fifth each second.
        sends_feedback = Participant.send_transport_feedback
        monkeypatch.setattr(Participant, "send_transport_feedback", lambda self: None)
        control = await open_page(server, browser, contexts, "Control")
        await control.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
        unheard = []
        for _ in range(7):
            await asyncio.sleep(1)
            unheard.append(await available(control))
        assert unheard[-1] < 0.6 * max(unheard), unheard

        # With our feedback, on for everyone now, the control and two more publishers.
        monkeypatch.setattr(Participant, "send_transport_feedback", sends_feedback)
        pages = [await open_page(server, browser, contexts, name) for name in ("Brno", "Zlín")]
        for page in pages:
            await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
        await asyncio.sleep(2)
        heard = []
        for _ in range(6):
            await asyncio.sleep(1)
            heard.append([await available(page) for page in (control, *pages)])
        # Each one's estimate goes on from where it is, not down by a fifth a second
        # (that would leave a third after five seconds). Not a level: on a loaded machine
        # the event loop's own delays reach the arrival times we report, and Chrome,
        # reading them as queueing, settles lower.
        for index in range(3):
            assert heard[-1][index] >= 0.6 * heard[0][index], (unheard, heard)

        # Chrome's feedback on what we forward to it: each subscriber has an estimate of
        # its own, from transport-cc, filed where last-N reads it.
        room = media.rooms["twcc"]
        assert len(room.participants) == 3
        for participant in room.participants.values():
            quality = participant.quality()
            assert participant.transport_cc_id == 5
            assert participant.transport_feedback_received > 20
            assert participant.transport_feedback_sent > 20
            assert quality["estimator"] == "transport-cc" and quality["estimate_down_kbps"], quality
            assert participant.remb_estimates
            legs = [c for c in participant.consumers.values() if c.kind == "video" and c.producer is not None]
            assert legs and all(c.remb_bps for c in legs)
            assert participant.estimator.decreases == 0  # loopback: never congested
    finally:
        for context in contexts:
            await context.close()
