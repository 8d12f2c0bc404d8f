"""The call page on a network where the media never connects (UDP blocked and no TURN
that passes): the official is told what to do, not left to a join that fails again and
again in silence.

The page is made to use relayed candidates only (``relay=1``), with no TURN server or
one that nobody answers: its ICE can never connect, as behind such a firewall, while
its signaling socket works. The server gives each join a few seconds to connect.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from multipoint.settings import Settings
from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot

pytestmark = pytest.mark.browser

ANSWER_TIMEOUT_S = 3  # 20 by default: the page's second failure within about 10 s here


@pytest.fixture(params=[False, True], ids=["without_turn", "with_turn"])
def turn(request: pytest.FixtureRequest) -> bool:
    """Whether the operator configured TURN: then a TURN server nobody answers, as one
    that the office's firewall blocks too."""
    return request.param


@pytest.fixture
def settings(settings: Settings, turn: bool) -> Settings:
    settings.answer_timeout_seconds = ANSWER_TIMEOUT_S
    if turn:
        settings.turn_secret = SecretStr("turn-secret-nobody-answers")
        settings.turn_urls = ["turn:127.0.0.1:9?transport=tcp"]
    return settings


async def test_a_page_whose_media_never_connects_suggests_the_self_test(
        server, browser, turn) -> None:
    """Every join answered ``answer_timeout`` and the page joined again, for ever: the
    official saw an error in English, "Reconnecting…" and a call that looked live, and
    was never told that the network blocks the media. After the second failure in a row
    the page says so, links the connection self-test and, where the operator configured
    TURN, says the network may block that too; it still tries to join meanwhile."""
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        link = join_url(server.url, server.settings.signing_secret(), "za-firewallem",
                        role="guest", name="Obecní úřad Lhota", ttl_s=600)
        await page.goto(link + "&autojoin=1&relay=1&lang=en")
        await page.wait_for_selector("#media-hint", state="visible", timeout=30_000)
        hint = await page.inner_text("#media-hint")
        assert "connection test" in hint
        assert ("TURN" in hint) is turn
        href = await page.get_attribute("#media-hint a", "href")
        assert href.startswith("/selftest") and "lang=en" in href
        await screenshot(page, f"call-media-hint-{'turn' if turn else 'no-turn'}")
        # The page keeps trying (the network may change): another join after the hint.
        first = await page.evaluate("window.multipointCall.me")
        await page.wait_for_function(
            f"() => window.multipointCall.me && window.multipointCall.me !== '{first}'",
            timeout=3 * ANSWER_TIMEOUT_S * 1000 + 10_000)
        assert await page.is_visible("#media-hint")

        # In Czech too (the switch on the page).
        await page.click("#lang")
        hint = await page.inner_text("#media-hint")
        assert "test připojení" in hint
        assert "lang=cs" in await page.get_attribute("#media-hint a", "href")

        # Leave pressed: the call is over, and so is the hint that "the page keeps trying"
        # (it stayed under "Opustili jste hovor").
        await page.click("#leave")
        assert "Opustili jste hovor" in await page.text_content("#notice")
        assert not await page.is_visible("#media-hint")
        assert errors == []
    finally:
        await context.close()

