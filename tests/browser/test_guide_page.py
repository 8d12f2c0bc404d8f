"""The participants' guide (/guide) in a real browser: both languages, its links, the
links to it, and the buttons it quotes as the call page really labels them."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot

pytestmark = pytest.mark.browser

# The labels of the call page a host sees, read from the page itself (toggled ones both
# ways), and of the pre-join form.
CALL_LABELS = """
() => {
  const text = (selector) => document.querySelector(selector).textContent;
  return [text('label[for=name]'), text('#join-form button[type=submit]'),
          text('#mute'), text('#camera'), text('#share'), text('#leave'), text('#lock'),
          text('#record'),
          ...[...document.querySelectorAll('#people li button')].map((b) => b.textContent),
          ...[...document.querySelectorAll('aside h2')].map((h) => h.textContent)];
}
"""
QUOTES = {"cs": ("„", "“"), "en": ("“", "”")}


async def host_labels(page: Page) -> list[str]:
    """Every label the guide quotes, as the host's call page shows them now; then the
    toggles are pressed and read again (Unmute, Camera on, Unlock room) and pressed back."""
    labels = await page.evaluate(CALL_LABELS)
    for button in ("#mute", "#camera", "#lock"):
        before = await page.text_content(button)
        await page.click(button)
        await page.wait_for_function(f"() => document.querySelector('{button}').textContent !== {before!r}")
        labels.append(await page.text_content(button))
        await page.click(button)
        await page.wait_for_function(f"() => document.querySelector('{button}').textContent === {before!r}")
    return labels


async def test_the_guide_quotes_the_call_pages_own_labels_in_both_languages(server, browser) -> None:
    secret = server.settings.signing_secret()
    context = await new_context(browser, server.url)
    try:
        host = await context.new_page()
        await host.goto(
            join_url(server.url, secret, "navod", role="host", name="Školitelka", ttl_s=600) + "&autojoin=1"
        )
        guest = await context.new_page()
        await guest.goto(join_url(server.url, secret, "navod", name="Nováček", ttl_s=600) + "&autojoin=1")
        await host.wait_for_function(
            "() => document.querySelectorAll('#people li button').length === 4", timeout=30_000
        )
        guide = await context.new_page()
        for lang, title in (("cs", "Návod pro účastníky"), ("en", "Guide for participants")):
            if await host.evaluate("document.documentElement.lang") != lang:
                await host.click("#lang")
            labels = await host_labels(host)
            await guide.goto(f"/guide?lang={lang}")
            assert await guide.text_content("h1") == title
            assert await guide.evaluate("document.documentElement.lang") == lang
            text = await guide.text_content("main")
            assert "{" not in text, text  # every quoted label was filled in
            start, end = QUOTES[lang]
            missing = [label for label in labels if f"{start}{label}{end}" not in text]
            assert not missing, (lang, missing)
            assert f"sip:{'MÍSTNOST' if lang == 'cs' else 'ROOM'}@127.0.0.1" in text
            await screenshot(guide, f"guide-{lang}")
    finally:
        await context.close()


async def test_the_guide_and_its_links_in_both_languages(server, browser) -> None:
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # Czech by default; the switch makes it English, its self-test link too.
        await page.goto("/guide")
        assert await page.text_content("h1") == "Návod pro účastníky"
        assert "Připojení z pozvánky" in await page.text_content("#join")
        await page.click("#lang")
        assert await page.text_content("h1") == "Guide for participants"
        assert "Joining from an invitation" in await page.text_content("#join")
        await page.click("#guide-selftest")
        await page.wait_for_url("**/selftest?lang=en")
        assert await page.text_content("#start") == "Start the test"

        # The self-test page links the guide in its own language.
        await page.goto("/selftest?lang=cs")
        await page.click("#guide-link")
        await page.wait_for_url("**/guide?lang=cs")
        assert await page.text_content("h1") == "Návod pro účastníky"
        await page.click("#guide-selftest")
        await page.wait_for_url("**/selftest?lang=cs")
        assert await page.text_content("#start") == "Spustit test"

        # The call page's pre-join form links it in a new tab (the form and the camera stay).
        link = join_url(server.url, server.settings.signing_secret(), "navod", ttl_s=600)
        await page.goto(link + "&lang=en")
        assert await page.text_content("#join-form #guide-link") == "Guide for participants"
        async with context.expect_page() as opened:
            await page.click("#join-form #guide-link")
        guide = await opened.value
        await guide.wait_for_load_state()
        assert guide.url.endswith("/guide?lang=en")
        assert await guide.text_content("h1") == "Guide for participants"
        await page.click("#lang")
        assert await page.get_attribute("#guide-link", "href") == "/guide?lang=cs"
        assert await page.is_visible("#prejoin")
        assert errors == []
    finally:
        await context.close()


async def test_the_pages_titles_are_in_the_pages_language(server, browser) -> None:
    """The tab's title stayed Czech on the English pages ("Test připojení – multipoint")."""
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), "porada", ttl_s=600)
        for url, czech, english in (
            ("/guide", "Návod pro účastníky – multipoint", "Guide for participants – multipoint"),
            ("/selftest", "Test připojení – multipoint", "Connection test – multipoint"),
            (link, "Videokonference – porada", "Videoconference – porada"),
        ):
            await page.goto(url + ("&" if "?" in url else "?") + "lang=en")
            assert await page.title() == english
            await page.click("#lang")
            assert await page.title() == czech
    finally:
        await context.close()
