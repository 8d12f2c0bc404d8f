"""Three officials in three browser tabs join one room from their invitation links."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from playwright.async_api import Page

from signaling.links import join_url
from tests.browser.conftest import new_context, screenshot

pytestmark = pytest.mark.browser

# Per inbound stream: frames decoded (video) or packets received (audio), by track id.
INBOUND = """
async () => {
  const pc = window.multipointCall.session?.pc;
  if (!pc) return null;
  const out = {video: {}, audio: {}};
  (await pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') out.video[s.mid ?? s.id] = s.framesDecoded || 0;
    if (s.kind === 'audio') out.audio[s.mid ?? s.id] = s.packetsReceived || 0;
  });
  return out;
}
"""


def growing(first: dict[str, int], second: dict[str, int]) -> int:
    return sum(1 for key, value in second.items() if value > first.get(key, 0))


async def until_all_receive(pages, kinds: tuple[str, ...], timeout: float = 20.0) -> list[tuple]:
    """Sample every page's inbound streams 2 s apart until each page has two growing
    streams of each kind; returns the last samples (for the failure message).

    Not a fixed window: at the start of a call a browser's first bandwidth estimates
    are low and the server may pause a video until a probe brings it back.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        first = [await page.evaluate(INBOUND) for page in pages]
        await asyncio.sleep(2)
        second = [await page.evaluate(INBOUND) for page in pages]
        samples = list(zip(first, second, strict=True))
        if all(growing(a[kind], b[kind]) >= 2 for a, b in samples for kind in kinds):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            return samples


async def test_three_tabs_hold_a_meeting(server, browser) -> None:
    secret = server.settings.signing_secret()
    names = ["Jihlava", "Třebíč", "Pelhřimov"]
    pages, contexts = [], []
    for index, name in enumerate(names):
        link = join_url(server.url, secret, "vysocina-porada", role="host" if index == 0 else "guest",
                        name=name, ttl_s=600)
        context = await new_context(browser, server.url)
        page = await context.new_page()
        await page.goto(link + f"&autojoin=1&lang={'cs' if index else 'en'}")
        contexts.append(context)
        pages.append(page)
    try:
        for page in pages:
            await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
        samples = await until_all_receive(pages, ("video", "audio"))
        for name, (before, after) in zip(names, samples, strict=True):
            assert growing(before["video"], after["video"]) >= 2, (name, before, after)
            assert growing(before["audio"], after["audio"]) >= 2, (name, before, after)
        # Two remote tiles with names, plus the self view.
        tiles = await pages[1].eval_on_selector_all("#grid .tile .name", "els => els.map(e => e.textContent)")
        assert len(tiles) == 3 and any("Jihlava" in t for t in tiles)

        # Chat from one tab appears in the others.
        await pages[1].fill("#chat-text", "Dobrý den z Třebíče")
        await pages[1].press("#chat-text", "Enter")
        for page in pages:
            await page.wait_for_function(
                "() => document.querySelector('#chat-log').textContent.includes('Dobrý den z Třebíče')")

        # The host sees moderation controls; the guests do not.
        assert await pages[0].is_visible("#lock")
        assert not await pages[1].is_visible("#lock")
        await screenshot(pages[0], "call-host")
        await screenshot(pages[1], "call-guest")

        # Mute from the host: the guest's page shows it is muted.
        guest_id = await pages[1].evaluate("window.multipointCall.me")
        await pages[0].click(f"#people li:has-text('{names[1]}') button >> nth=0")
        await pages[1].wait_for_function("() => window.multipointCall.muted === true")
        assert await pages[1].get_attribute("#mute", "aria-pressed") == "true"

        # One leaves: the others' grids shrink to one remote tile.
        await pages[2].click("#leave")
        for page in pages[:2]:
            await page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 2",
                                         timeout=15_000)
        assert guest_id

        # Someone new joins: it is shown in the slots the one who left freed (a tile with
        # its name, from the "slots" message) and its video decodes everywhere.
        link = join_url(server.url, secret, "vysocina-porada", name="Havlíčkův Brod", ttl_s=600)
        context = await new_context(browser, server.url)
        contexts.append(context)
        newcomer = await context.new_page()
        await newcomer.goto(link + "&autojoin=1")
        pages = [pages[0], pages[1], newcomer]
        for page in pages:
            await page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 3",
                                         timeout=20_000)
        for page in pages[:2]:
            await page.wait_for_function("() => [...document.querySelectorAll('#grid .tile .name')]"
                                         ".some(e => e.textContent.includes('Brod'))")
        # A new connection starts on a low bandwidth estimate, and the server may pause a
        # video until a probe (after 8 quiet seconds) brings it back: allow a few rounds.
        for before, after in await until_all_receive(pages, ("video",), timeout=40.0):
            assert growing(before["video"], after["video"]) >= 2, (before, after)
    finally:
        for context in contexts:
            await context.close()


async def test_invitation_opens_the_prejoin_check(server, browser) -> None:
    link = join_url(server.url, server.settings.signing_secret(), "kontrola", ttl_s=600)
    context = await new_context(browser, server.url)
    page = await context.new_page()
    await page.goto(link)
    assert await page.is_visible("#prejoin") and not await page.is_visible("#incall")
    await page.wait_for_function("() => document.querySelector('#preview').videoWidth > 0")
    await page.fill("#name", "Úředník")
    await page.click("#join-form button[type=submit]")
    await page.wait_for_selector("#incall", state="visible")
    await screenshot(page, "call-alone")
    await context.close()


async def test_expired_invitation_is_explained(server, browser) -> None:
    """In the page's language: the Czech page used to show the server's English text."""
    link = join_url(server.url, server.settings.signing_secret(), "stara", ttl_s=-10)
    context = await new_context(browser, server.url)
    page = await context.new_page()
    for lang, expected in (("cs", "Platnost odkazu na hovor vypršela"), ("en", "link has expired")):
        await page.goto(link + f"&autojoin=1&lang={lang}")
        await page.wait_for_selector("#prejoin-error", state="visible")
        assert expected in (await page.text_content("#prejoin-error"))
    await context.close()


async def test_the_servers_errors_are_in_the_pages_language(server, browser) -> None:
    """The server's error texts are English, and the Czech page showed them as they came
    ("the room is locked by its host"): it shows its own text for each code it knows, and
    the server's only for a code it does not."""
    secret = server.settings.signing_secret()
    context = await new_context(browser, server.url)
    try:
        host = await context.new_page()
        await host.goto(join_url(server.url, secret, "zamcena", role="host", name="Starosta",
                                 ttl_s=600) + "&autojoin=1")
        await host.wait_for_function("() => window.multipointCall.roster?.length === 1",
                                     timeout=30_000)
        await host.click("#lock")
        await host.wait_for_function("() => window.multipointCall.locked === true")

        # A refused join, on the pre-join form.
        guest = await context.new_page()
        await guest.goto(join_url(server.url, secret, "zamcena", role="guest", name="Host",
                                  ttl_s=600) + "&autojoin=1")
        await guest.wait_for_selector("#prejoin-error", state="visible")
        text = await guest.text_content("#prejoin-error")
        assert "Místnost je uzamčena" in text and "locked" not in text

        # An error in the call (a moderation naming nobody), in the notice.
        await host.evaluate("window.multipointCall.session.send("
                            "{type: 'mute', participant: 'nikdo'})")
        await host.wait_for_selector("#notice", state="visible")
        await host.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('už v hovoru není')")

        # A code the page does not know (a newer server): the server's own text.
        assert await host.evaluate("""async () => {
          const { errorText } = await import('/static/i18n.js');
          return [errorText({ code: 'brand_new', message: 'the server says so' }),
                  errorText({ code: 'capacity_full', message: 'every media worker is full' })];
        }""") == ["the server says so", "Server je plně vytížen: zkuste to za několik minut."]
    finally:
        await context.close()


async def test_a_socket_cut_before_the_join_was_answered_is_explained(server, browser) -> None:
    """A proxy (or the front) that goes away as the join is answered: the page said
    "Error: signaling connection closed", its own English, on the Czech page too. It
    says in the page's language that the connection was cut and to join again."""
    link = join_url(server.url, server.settings.signing_secret(), "preruseno", name="Úředník",
                    ttl_s=600)
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()

        async def cut_at_the_answer(ws) -> None:
            # The page's messages go on to the real server; its answer never comes back.
            to_server = ws.connect_to_server()

            async def answered(message) -> None:
                await ws.close(code=1001, reason="going away")

            to_server.on_message(answered)

        await page.route_web_socket("**/ws", cut_at_the_answer)
        for lang, expected in (("cs", "Spojení se serverem se přerušilo"),
                               ("en", "The connection to the server was cut")):
            await page.goto(link + f"&autojoin=1&lang={lang}")
            await page.wait_for_selector("#prejoin-error", state="visible", timeout=20_000)
            text = await page.text_content("#prejoin-error")
            assert expected in text and "signaling" not in text, text
    finally:
        await context.close()


async def test_a_room_redirected_too_often_is_explained(server, browser) -> None:
    """Fronts that kept sending the page on to another node (two nodes out of step about
    where the room lives; their answers scripted here): after the 4th redirect the page
    said "Error: the room is on another node", in English. It says in its language that
    the room's server was not found and to try again shortly."""
    link = join_url(server.url, server.settings.signing_secret(), "putovni", ttl_s=600)
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        redirects = []

        def elsewhere(ws) -> None:
            def joined(message) -> None:
                if json.loads(message)["type"] != "join":
                    return  # the page's "leave" on a socket it was sent away from
                redirects.append(message)
                ws.send(json.dumps({"type": "redirect", "front": server.url,
                                    "reason": "room_on_another_node"}))

            ws.on_message(joined)

        await page.route_web_socket("**/ws", elsewhere)
        await page.goto(link + "&autojoin=1")
        await page.wait_for_selector("#prejoin-error", state="visible", timeout=20_000)
        text = await page.text_content("#prejoin-error")
        assert "Server, na kterém místnost běží, se nepodařilo najít" in text, text
        assert len(redirects) == 4
    finally:
        await context.close()


@contextlib.asynccontextmanager
async def in_a_call_beside_another(server, browser, room: str, name: str) -> AsyncIterator[Page]:
    """A page in ``room`` with one other participant (an aiortc peer sending video)."""
    from tests.media.test_mixing import RED, join

    other = await join(server, room, "Stays", 440, RED)
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), room, name=name, ttl_s=600)
        await page.goto(link + "&autojoin=1")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        yield page
    finally:
        await context.close()
        await other.close()


async def until_video_plays(page: Page, timeout: float = 20.0) -> None:
    """Sample the page's inbound video 1 s apart until a stream's decoded frames grow
    (polled, not one window: a new participant's first estimates may pause it a moment)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        before = await page.evaluate(INBOUND)
        await asyncio.sleep(1)
        after = await page.evaluate(INBOUND)
        if growing(before["video"], after["video"]) >= 1:
            return
        assert asyncio.get_running_loop().time() < deadline, (before, after)


async def test_the_page_rejoins_after_a_network_blip(server, browser) -> None:
    async with in_a_call_beside_another(server, browser, "blip", "Blip") as page:
        first_id = await page.evaluate("window.multipointCall.me")
        # The signaling connection drops as on a network blip. The page closes it itself,
        # so the server ends its participant, and the page joins again with a new one;
        # unless its "resume" on a new socket gets there before the server has ended the
        # old one (a loaded machine), when it takes its place back as it is. Back either way.
        await page.evaluate("window.multipointCall.session.ws.close()")
        await page.wait_for_function(
            f"() => (window.multipointCall.me && window.multipointCall.me !== '{first_id}')"
            " || window.multipointCall.session.recoveries > 0", timeout=30_000)
        await page.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        await until_video_plays(page)
        assert not await page.is_visible("#notice") or "…" not in await page.text_content("#notice")


async def test_a_refused_resume_joins_again_even_while_media_looks_up(server, browser) -> None:
    """The socket closed and the server refused the page's "resume" (it had taken the
    close as a leave, as it does a proxy's restart). The page's ICE still said
    "connected", the new socket was open, so the page counted the call as recovered:
    a participant the server no longer had, the other's video gone, and every message
    answered "join a room first". A refused resume now always joins again."""
    async with in_a_call_beside_another(server, browser, "odmitnuty-navrat", "Refused") as page:
        await page.wait_for_function(
            "() => window.multipointCall.session.pc.iceConnectionState === 'connected'", timeout=30_000)
        first_id = await page.evaluate("window.multipointCall.me")
        # A secret the server does not know: its "resume" is refused whether it comes
        # before or after the server has ended the old participant.
        await page.evaluate("""() => {
            const session = window.multipointCall.session;
            session.resumeSecret = "x".repeat(43);
            session.ws.close();
        }""")
        await page.wait_for_function(
            f"() => window.multipointCall.me && window.multipointCall.me !== '{first_id}'", timeout=30_000)
        await page.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        assert await page.evaluate("window.multipointCall.session.recoveries") == 0
        await until_video_plays(page)  # the other's video, on the new participant
        notice = await page.text_content("#notice") if await page.is_visible("#notice") else ""
        # Not the "not_joined" error of a socket that belongs to nobody (in Czech here).
        assert "rozešly" not in (notice or "") and "join a room first" not in (notice or "")


async def test_after_leaving_the_call_controls_are_gone(server, browser) -> None:
    """Leave pressed: the page said "You left the call" but its Mute, Camera, Share and
    Leave buttons stayed (the page hid them with the hidden attribute, which the
    stylesheet's display: flex overrode), as if the call went on."""
    link = join_url(server.url, server.settings.signing_secret(), "odchod", name="Úředník", ttl_s=600)
    context = await new_context(browser, server.url)
    page = await context.new_page()
    await page.goto(link + "&autojoin=1&lang=en")
    await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    assert await page.is_visible("#incall .controls")
    await page.click("#leave")
    assert "left the call" in await page.text_content("#notice")
    assert not await page.is_visible("#incall .controls")
    assert not await page.is_visible("#mute")
    await context.close()


async def test_leaving_while_sharing_the_screen_stops_the_capture(server, browser) -> None:
    """Leave pressed while sharing the screen: the page stopped the camera and microphone
    but not the screen capture, so the browser went on capturing (and saying so) after
    "You left the call". Leaving ends the capture too."""
    link = join_url(server.url, server.settings.signing_secret(), "sdileni", name="Úředník", ttl_s=600)
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        await page.goto(link + "&autojoin=1&lang=en")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
        await page.click("#share")
        await page.wait_for_function("() => document.querySelector('#share').textContent === 'Stop sharing'")
        await page.wait_for_function("() => window.multipointCall.roster[0].screen === true")
        # The capture the page got, kept by the test (the page forgets it on leaving).
        await page.evaluate("window.capture = window.multipointCall.sharing.getVideoTracks()[0]")
        assert await page.evaluate("window.capture.readyState") == "live"
        await page.click("#leave")
        assert "left the call" in await page.text_content("#notice")
        assert await page.evaluate("window.capture.readyState") == "ended"
    finally:
        await context.close()


OUTBOUND_FRAMES = """
async () => {
  let frames = 0;
  (await window.multipointCall.session.pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') frames += s.framesEncoded || 0;
  });
  return frames;
}
"""


async def test_camera_off_gives_the_camera_back_and_on_takes_it_again(server, browser) -> None:
    """Camera off stopped sending the picture but kept the camera filming: its light
    stayed on, and the self view went on showing the official a live picture that
    nobody else saw. Off now gives the camera back (the self view is dark); on takes it
    again and sends it."""
    async with in_a_call_beside_another(server, browser, "kamera", "Úředník") as page:
        await page.evaluate("window.camera = window.multipointCall.stream.getVideoTracks()[0]")
        assert await page.evaluate("window.camera.readyState") == "live"
        await page.click("#camera")
        await page.wait_for_function("() => window.multipointCall.roster.find("
                                     "(p) => p.id === window.multipointCall.me).video_muted", timeout=10_000)
        assert await page.get_attribute("#camera", "aria-pressed") == "true"
        assert await page.evaluate("window.camera.readyState") == "ended"
        self_view = "document.querySelector('[data-participant=self] video').srcObject"
        assert await page.evaluate(f"{self_view}.getVideoTracks().length") == 0

        await page.click("#camera")
        await page.wait_for_function("() => document.querySelector('#camera').getAttribute('aria-pressed')"
                                     " === 'false'", timeout=10_000)
        assert await page.evaluate(f"{self_view}.getVideoTracks().map((t) => t.readyState)") == ["live"]
        before = await page.evaluate(OUTBOUND_FRAMES)
        await page.wait_for_function(f"async () => (await ({OUTBOUND_FRAMES})()) > {before}", timeout=10_000)


async def test_a_shared_screen_is_captioned_as_someones_screen(server, browser) -> None:
    """A shared screen's tile read "Brno – Share screen" ("Sdílet obrazovku"): the
    caption was the Share button's command. It says whose screen it is, in the page's
    language."""
    from tests.media.test_mixing import BLUE, RED, join

    presenter = await join(server, "prezentace", "Brno", 440, RED, screen=BLUE)
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), "prezentace", name="Úředník", ttl_s=600)
        await page.goto(link + "&autojoin=1&lang=en")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        await presenter.send({"type": "screen", "active": True})
        screen = ("[...document.querySelectorAll('#grid .tile .name')]"
                  ".find((e) => e.textContent.startsWith('Brno –'))")
        await page.wait_for_function(f"() => {screen}", timeout=15_000)
        assert await page.evaluate(f"{screen}.textContent") == "Brno – screen"
        await page.click("#lang")
        assert await page.evaluate(f"{screen}.textContent") == "Brno – obrazovka"
    finally:
        await context.close()
        await presenter.close()


async def test_a_tile_is_made_big_from_the_keyboard(server, browser) -> None:
    """A tile was made big by a click only: an official on the keyboard (or a screen
    reader) could not reach it. Tiles are buttons: Tab reaches them, Enter or Space
    makes one big and back, and they say whether they are."""
    async with in_a_call_beside_another(server, browser, "klavesnice", "Úředník") as page:
        tile = "#grid .tile:not([data-participant=self])"
        await page.wait_for_selector(tile, timeout=20_000)
        for _ in range(20):  # Tab through the controls to the tile
            await page.keyboard.press("Tab")
            if await page.evaluate(f"document.activeElement === document.querySelector('{tile}')"):
                break
        else:
            raise AssertionError("Tab never reaches the tile")
        await page.keyboard.press("Enter")
        assert await page.evaluate(f"document.querySelector('{tile}').classList.contains('focused')")
        assert await page.get_attribute(tile, "aria-pressed") == "true"
        await page.keyboard.press(" ")
        assert not await page.evaluate(f"document.querySelector('{tile}').classList.contains('focused')")
        assert await page.get_attribute(tile, "aria-pressed") == "false"


async def test_a_hosts_buttons_say_whom_they_act_on(server, browser) -> None:
    """Beside each participant the host's list has Mute, Ask to unmute, Remove...: a
    screen reader read each as just "Mute", with no word of whom it mutes. Each button's
    name says whom (the name beside it on the screen)."""
    from tests.media.test_mixing import GREEN, RED, join

    guests = [await join(server, "jmena", name, 440, colour) for name, colour in
              (("Brno", RED), ("Zlín", GREEN))]
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        link = join_url(server.url, server.settings.signing_secret(), "jmena", role="host", name="Velín",
                        ttl_s=600)
        await page.goto(link + "&autojoin=1&lang=en")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 3", timeout=30_000)
        for name in ("Brno", "Zlín"):
            for action in ("Mute", "Ask to unmute", "Remove", "Composite picture"):
                assert await page.get_by_role("button", name=f"{action}: {name}", exact=True).count() == 1
        # Pressed, it acts on that one.
        await page.get_by_role("button", name="Mute: Zlín", exact=True).click()
        await page.wait_for_function(
            "() => window.multipointCall.roster.find((p) => p.name === 'Zlín').audio_muted", timeout=10_000)
        brno = "window.multipointCall.roster.find((p) => p.name === 'Brno')"
        assert not await page.evaluate(f"{brno}.audio_muted")
    finally:
        await context.close()
        for guest in guests:
            await guest.close()


async def test_a_browser_that_cannot_share_its_screen_is_offered_no_share_button(server, browser) -> None:
    """Phones' browsers have no screen sharing (no getDisplayMedia): Share screen was
    offered there too and did nothing at all when pressed. It is not offered where the
    browser cannot share."""
    link = join_url(server.url, server.settings.signing_secret(), "telefon", name="Úředník", ttl_s=600)
    context = await new_context(browser, server.url)
    try:
        # Chromium as a phone's browser is: without screen sharing.
        await context.add_init_script("delete MediaDevices.prototype.getDisplayMedia")
        page = await context.new_page()
        await page.goto(link + "&autojoin=1&lang=en")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
        assert await page.evaluate("navigator.mediaDevices.getDisplayMedia") is None
        assert await page.is_visible("#mute") and await page.is_visible("#camera")
        assert not await page.is_visible("#share")
    finally:
        await context.close()


async def test_what_the_page_says_follows_the_language_switch(server, browser) -> None:
    """The page's messages stayed in the language they were said in: a refused join's
    error on the pre-join form, and "You left the call", were still Czech (or English)
    after the switch."""
    secret = server.settings.signing_secret()
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        await page.goto(join_url(server.url, secret, "stara", ttl_s=-10) + "&autojoin=1&lang=cs")
        await page.wait_for_selector("#prejoin-error", state="visible")
        assert "Platnost odkazu na hovor vypršela" in await page.text_content("#prejoin-error")
        await page.click("#lang")
        assert "The call link has expired" in await page.text_content("#prejoin-error")

        link = join_url(server.url, secret, "jazyk", name="Úředník", ttl_s=600)
        await page.goto(link + "&autojoin=1&lang=en")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
        await page.click("#leave")
        assert await page.text_content("#notice") == "You left the call."
        await page.click("#lang")
        assert await page.text_content("#notice") == "Opustili jste hovor."
    finally:
        await context.close()


async def test_the_unlabelled_controls_are_named_in_the_pages_language(server, browser) -> None:
    """The microphone meter, the video grid and the chat's text field were named for
    screen readers in one English word each ("mic", "video", "chat"), on the Czech page
    too. They are named in the page's language."""
    link = join_url(server.url, server.settings.signing_secret(), "popisky", name="Úředník", ttl_s=600)
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        await page.goto(link + "&lang=cs")
        assert await page.get_attribute("#mic", "aria-label") == "Hlasitost mikrofonu"
        await page.fill("#name", "Úředník")
        await page.click("#join-form button[type=submit]")
        await page.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
        assert await page.get_by_role("textbox", name="Zpráva do chatu").count() == 1
        assert await page.get_attribute("#grid", "aria-label") == "Obraz účastníků"
        await page.click("#lang")
        assert await page.get_by_role("textbox", name="Chat message").count() == 1
        assert await page.get_attribute("#grid", "aria-label") == "Participants' video"
        assert await page.get_attribute("#mic", "aria-label") == "Microphone level"
    finally:
        await context.close()


async def test_everyone_sees_while_the_room_is_locked(server, browser) -> None:
    """A host's lock was shown to nobody but the host (its button's "Unlock room"): the
    guests in the call never learnt that nobody else could come in, nor that their own
    page could not come back if their call was lost. Everyone sees "The room is locked."
    in their page's language while it is, and it goes once the room is unlocked; a guest
    whose page has to join again meanwhile is refused and told why."""
    secret = server.settings.signing_secret()
    context = await new_context(browser, server.url)
    try:
        host = await context.new_page()
        await host.goto(
            join_url(server.url, secret, "zamykani", role="host", name="Starosta", ttl_s=600)
            + "&autojoin=1&lang=en"
        )
        guest = await context.new_page()
        await guest.goto(
            join_url(server.url, secret, "zamykani", name="Obec", ttl_s=600) + "&autojoin=1&lang=cs"
        )
        for page in (host, guest):
            await page.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
            assert not await page.is_visible("#locked")

        await host.click("#lock")
        await guest.wait_for_selector("#locked", state="visible")
        assert await guest.text_content("#locked") == "Místnost je uzamčena."
        await host.wait_for_selector("#locked", state="visible")
        assert await host.text_content("#locked") == "The room is locked."

        await host.click("#lock")  # unlocked: it goes, for both
        for page in (host, guest):
            await page.wait_for_selector("#locked", state="hidden")

        # Locked again, the guest's call is lost for good (its "resume" refused): its page
        # joins again, is refused, and says that the room is locked.
        await host.click("#lock")
        await guest.wait_for_selector("#locked", state="visible")
        await guest.evaluate("""() => {
            const session = window.multipointCall.session;
            session.resumeSecret = "x".repeat(43);
            session.ws.close();
        }""")
        await guest.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('Místnost je uzamčena')",
            timeout=30_000,
        )
        assert not await guest.is_visible("#locked")  # the call is over: no controls
        await host.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
    finally:
        await context.close()


async def test_a_link_that_names_the_official_fills_the_name_field(server, browser) -> None:
    """The name field is required, and it was empty on a link that names the official
    (an invitation made with --name, whose token carries the name, or one with a name=
    parameter): they had to type their own name. The link's name fills it, still
    editable; a link without one gets the name this computer joined by last."""
    secret = server.settings.signing_secret()
    context = await new_context(browser, server.url)
    try:
        page = await context.new_page()
        await page.goto(join_url(server.url, secret, "jmeno", name="Jana Nováková", ttl_s=600) + "&lang=en")
        assert await page.input_value("#name") == "Jana Nováková"
        await page.fill("#name", "Jana Nováková, MěÚ Tábor")  # still the official's to change
        await page.wait_for_function("() => document.querySelector('#preview').videoWidth > 0")
        await page.click("#join-form button[type=submit]")
        await page.wait_for_selector("#incall", state="visible")
        assert await page.evaluate("window.multipointCall.joinedName") == "Jana Nováková, MěÚ Tábor"
        await page.click("#leave")

        # No name in the link: the one this computer joined by last.
        await page.goto(join_url(server.url, secret, "jmeno", ttl_s=600))
        assert await page.input_value("#name") == "Jana Nováková, MěÚ Tábor"
        # The link's name over the computer's: a shared office computer, another official.
        await page.goto(join_url(server.url, secret, "jmeno", name="Petr Svoboda", ttl_s=600))
        assert await page.input_value("#name") == "Petr Svoboda"
        await page.goto(join_url(server.url, secret, "jmeno", ttl_s=600) + "&name=" + quote("Obec Řečice"))
        assert await page.input_value("#name") == "Obec Řečice"
        # A link that is no longer valid names nobody (its join is refused anyway).
        expired = join_url(server.url, secret, "jmeno", name="Petr Svoboda", ttl_s=-10)
        await page.goto(expired)
        assert await page.input_value("#name") == "Jana Nováková, MěÚ Tábor"
    finally:
        await context.close()


async def test_join_again_after_leaving_but_not_after_a_removal(server, browser) -> None:
    """After Leave the only way back was to open the link again. The ended call offers
    Join again (in the page's language) where coming back makes sense: after Leave, and
    after a rejoin refused because the room is locked (it may be unlocked); not after the
    host removed the official."""
    secret = server.settings.signing_secret()
    context = await new_context(browser, server.url)
    try:
        host = await context.new_page()
        await host.goto(
            join_url(server.url, secret, "znovu", role="host", name="Starosta", ttl_s=600)
            + "&autojoin=1&lang=en"
        )
        guest = await context.new_page()
        errors: list[str] = []
        guest.on("pageerror", lambda error: errors.append(str(error)))
        await guest.goto(
            join_url(server.url, secret, "znovu", name="Obec", ttl_s=600) + "&autojoin=1&lang=cs"
        )
        await host.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        first = await guest.evaluate("window.multipointCall.me")

        await guest.click("#leave")
        await host.wait_for_function("() => window.multipointCall.roster?.length === 1", timeout=30_000)
        assert await guest.text_content("#join-again") == "Připojit se znovu"
        await guest.click("#join-again")
        await host.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        await guest.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)
        assert await guest.evaluate("window.multipointCall.me") != first
        assert await guest.is_visible("#incall .controls") and not await guest.is_visible("#join-again")
        assert not await guest.is_visible("#notice")
        assert await guest.evaluate("window.multipointCall.joinedName") == "Obec"

        # Refused while the room is locked: offered again, and joined once it is unlocked.
        await host.click("#lock")
        await guest.wait_for_selector("#locked", state="visible")
        await guest.evaluate("""() => {
            const session = window.multipointCall.session;
            session.resumeSecret = "x".repeat(43);
            session.ws.close();
        }""")
        await guest.wait_for_selector("#join-again", state="visible", timeout=30_000)
        assert "Místnost je uzamčena" in await guest.text_content("#notice")
        await host.click("#lock")
        await host.wait_for_selector("#locked", state="hidden")
        await guest.click("#join-again")
        await host.wait_for_function("() => window.multipointCall.roster?.length === 2", timeout=30_000)

        # Removed by the host: no way back from the page.
        await host.click("#people li:has-text('Obec') button:has-text('Remove')")
        await guest.wait_for_function(
            "() => !document.querySelector('#notice').hidden && window.multipointCall.leaving", timeout=30_000
        )
        assert not await guest.is_visible("#join-again")
        assert errors == []
    finally:
        await context.close()


async def test_join_pressed_before_the_camera_is_allowed_waits_for_it(server, browser) -> None:
    """Join pressed while the browser still asks for the camera and microphone (the
    official has not answered its prompt yet): the join failed at once with the script's
    own English error ("Cannot read properties of null") on the Czech page. It waits for
    the answer and then joins, with the camera and microphone."""
    context = await new_context(browser, server.url)
    # The browser's prompt, unanswered until the test answers it (window.answerPrompt()).
    await context.add_init_script("""{
      const ask = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      const answered = new Promise((resolve) => { window.answerPrompt = resolve; });
      navigator.mediaDevices.getUserMedia = (constraints) => answered.then(() => ask(constraints));
    }""")
    try:
        page = await context.new_page()
        await page.goto(
            join_url(server.url, server.settings.signing_secret(), "souhlas", name="Úředník", ttl_s=600)
        )
        await page.click("#join-form button[type=submit]")
        assert not await page.is_visible("#prejoin-error")
        await page.evaluate("window.answerPrompt()")
        await page.wait_for_selector("#incall", state="visible", timeout=30_000)
        assert not await page.is_visible("#prejoin-error")
        assert await page.evaluate("window.multipointCall.stream.getTracks().length") == 2
    finally:
        await context.close()
