"""The self-test page in a real browser: the echoed video is decoded, a verdict appears."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.models import SelfTestResult
from signaling.links import selftest_url
from tests.browser.conftest import new_context, screenshot

pytestmark = pytest.mark.browser

INBOUND_COUNTS = """
async () => {
  const pc = window.multipointSelfTest.session?.pc;
  if (!pc) return null;
  const counts = {video: 0, audio: 0};
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') counts.video += s.framesDecoded || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') counts.audio += s.packetsReceived || 0;
  });
  return counts;
}
"""


async def test_selftest_echo_in_chromium(server, browser) -> None:
    context = await new_context(browser, server.url)
    page = await context.new_page()
    link = selftest_url(server.url, server.settings.signing_secret(), "SN-0042", ttl_s=600)
    await page.goto(link + "&autostart=1&duration=6")
    await page.wait_for_function(
        "() => window.multipointSelfTest.session?.pc?.connectionState === 'connected'",
        timeout=20_000)
    await asyncio.sleep(1.5)
    first = await page.evaluate(INBOUND_COUNTS)
    await asyncio.sleep(2)
    second = await page.evaluate(INBOUND_COUNTS)
    assert second["video"] > first["video"], "the echoed video is not being decoded"
    assert second["audio"] > first["audio"], "the echoed audio does not arrive"
    await screenshot(page, "selftest-running")

    await page.wait_for_selector("#verdict[data-verdict]", timeout=20_000)
    verdict = await page.evaluate("window.multipointSelfTest.verdict")
    assert verdict["passed"] is True, verdict
    assert await page.get_attribute("#verdict", "data-verdict") == "pass"
    await page.wait_for_function("() => window.multipointSelfTest.saved", timeout=10_000)
    await screenshot(page, "selftest-verdict")

    with server.app[DATABASE].session() as session:
        stored = session.scalars(select(SelfTestResult)).all()
    assert len(stored) == 1
    assert stored[0].passed and stored[0].endpoint_serial == "SN-0042"
    assert stored[0].figures["frames_decoded"] > 0
    await context.close()


async def test_selftest_page_in_english_waits_for_button(server, browser) -> None:
    context = await new_context(browser, server.url)
    page = await context.new_page()
    await page.goto("/selftest?lang=en")
    assert await page.text_content("#start") == "Start the test"
    assert await page.evaluate("window.multipointSelfTest.session") is None
    await page.click("#lang")
    assert await page.text_content("#start") == "Spustit test"
    await context.close()


async def test_a_selftest_page_left_open_past_its_link_says_the_link_expired(server, browser) -> None:
    """A unit's test link expires while its page stays open; Start is pressed later. The
    page used to say the server could not be reached (sending the official to check the
    network); it says the link expired and to reload."""
    context = await new_context(browser, server.url)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    link = selftest_url(server.url, server.settings.signing_secret(), "SN-0042", ttl_s=3)
    await page.goto(link + "&lang=en")
    await asyncio.sleep(4)
    await page.click("#start")
    await page.wait_for_selector("#verdict[data-verdict]", timeout=20_000)
    verdict = await page.evaluate("window.multipointSelfTest.verdict")
    assert verdict["passed"] is False and verdict["problems"] == ["link_expired"], verdict
    text = await page.text_content("#verdict")
    assert "expired" in text and "Could not reach the server" not in text, text
    # The test is over: the camera and microphone it took are given back (a refused test
    # used to leave them on, the camera's light too, until the page was closed).
    assert await page.evaluate(
        "document.querySelector('#local').srcObject.getTracks().map((track) => track.readyState)"
    ) == ["ended", "ended"]
    assert errors == []
    await context.close()


async def test_switching_the_language_keeps_what_the_test_is_doing(server, browser) -> None:
    """The language switch put the page's first texts back: a test running showed its
    status in the old language, and after a test the button read "Start the test"
    ("Spustit test") again instead of "Run again"."""
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        await page.goto("/selftest?autostart=1&duration=8&lang=en")
        await page.wait_for_function(
            "() => document.querySelector('#verdict').textContent === 'Test running…'", timeout=20_000)
        await page.click("#lang")
        assert await page.text_content("#verdict") == "Test běží…"
        await page.wait_for_selector("#verdict[data-verdict]", timeout=30_000)
        await page.wait_for_function("() => window.multipointSelfTest.saved !== null", timeout=10_000)
        assert await page.text_content("#start") == "Spustit znovu"
        await page.click("#lang")
        assert await page.text_content("#start") == "Run again"
        assert (await page.text_content("#verdict")).startswith("Test passed")
    finally:
        await context.close()
