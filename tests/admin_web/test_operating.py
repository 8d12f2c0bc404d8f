"""The operator sees a live room with an aiortc participant, mutes and removes it; an
action the media worker refuses or cannot answer is told on the page."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

from multipoint.app import POOL
from signaling.links import join_url
from tests.admin_web.conftest import czech_context, seed_accounts, sign_in
from tests.browser.conftest import new_context, screenshot
from tests.conftest import start_process_server
from tests.media.test_moderation import join
from tests.peers import wait_until
from tests.sip_unit import BARESIP, Baresip

pytestmark = [pytest.mark.browser, pytest.mark.media]


async def test_operator_mutes_and_removes_a_participant_who_observes_it(server, accounts,
                                                                         context) -> None:
    room = "krizovy-stab"
    alice = await join(server, room, "Alice")
    bob = await join(server, room, "Bob")
    try:
        page = await context.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await sign_in(page, "operator")
        assert page.url.endswith("/admin/operating")
        row = page.locator(f"article[data-room='{room}'] tr[data-name='Alice']")
        await row.wait_for()
        # Quality as the server sees it: wait for a refresh that shows media arriving.
        await page.wait_for_function(
            f"""() => [...document.querySelectorAll("article[data-room='{room}'] tr[data-name]")]
                 .every((tr) => parseInt(tr.cells[4].textContent) > 0)""", timeout=20_000)
        assert "%" in await row.locator("td").nth(3).text_content()
        # The round trip the server measured from each one's receiver reports.
        assert await row.locator("xpath=ancestor::table//th").nth(6).text_content() == "Doba odezvy"
        await page.wait_for_function(
            f"""() => [...document.querySelectorAll("article[data-room='{room}'] tr[data-name]")]
                 .every((tr) => / ms$/.test(tr.cells[6].textContent))""", timeout=20_000)
        assert await page.locator("#nodes tbody tr").count() == 2  # the local node's workers
        # Each media worker of this front, with its load (one inline worker here).
        assert await page.locator("#workers tbody tr").count() == 1
        await page.wait_for_function(  # Alice and Bob, once the worker has reported them
            """() => document.querySelector("#workers tr[data-worker='0']").cells[3]
                     .textContent === '2'""", timeout=20_000)
        await screenshot(page, "admin-operating")

        await row.get_by_role("button", name="Ztlumit").click()
        await page.wait_for_selector("#done")
        assert await wait_until(lambda: alice.of_type("muted"), timeout=10)
        assert alice.of_type("muted")[-1]["by"] == "operator"

        await page.locator(f"article[data-room='{room}'] button[value=lock]").click()
        await page.wait_for_selector(f"article[data-room='{room}'] .badge.warn")

        row = page.locator(f"article[data-room='{room}'] tr[data-name='Alice']")
        await row.get_by_role("button", name="Odebrat").click()
        await page.wait_for_selector("#done")
        assert await wait_until(lambda: alice.of_type("removed") and alice.ws.closed, timeout=10)
        await page.wait_for_function(
            "!document.querySelector(\"tr[data-name='Alice']\")", timeout=10_000)
        assert await page.locator(f"article[data-room='{room}'] tr[data-name='Bob']").count() == 1

        # Every action is in the audit log.
        await page.goto("/admin/audit?action=room.")
        actions = await page.locator("#audit tbody tr").evaluate_all(
            "rows => rows.map((r) => r.dataset.action)")
        assert actions == ["room.remove", "room.lock", "room.mute"]
    finally:
        await alice.close()
        await bob.close()


async def test_operator_closes_a_live_room_and_its_call_page_ends(server, accounts, context,
                                                                  browser) -> None:
    """The operator ends a live room (left running, abused): an official's call page
    (Chromium) is told ``closed_by_operator`` and ends the call at once, saying so, with
    no rejoin; an aiortc participant is told the same; the room is gone from the page and
    the action audited as the operator's. The operator had no way to end a room."""
    room = "opusteny-stab"
    bob = await join(server, room, "Bob")
    official = await new_context(browser, server.url)  # with a camera and a microphone
    try:
        call = await official.new_page()
        errors: list[str] = []
        call.on("pageerror", lambda error: errors.append(str(error)))
        await call.goto(join_url(server.url, server.settings.signing_secret(), room,
                                 name="Obecní úřad Lhota", ttl_s=3600) + "&autojoin=1")
        await call.wait_for_function("() => window.multipointCall.roster?.length === 2",
                                     timeout=30_000)

        page = await context.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await sign_in(page, "operator")
        await page.locator(f"article[data-room='{room}']").get_by_role(
            "button", name=f"Uzavřít místnost {room}").click()
        await page.wait_for_selector("#done")
        assert "místnost uzavřena" in await page.text_content("#done")

        await call.wait_for_function(
            "() => document.querySelector('#notice').textContent"
            " === 'Místnost uzavřel operátor: hovor byl ukončen.'", timeout=20_000)
        assert not await call.is_visible("#incall .controls")
        assert await wait_until(lambda: bob.of_type("closed") and bob.ws.closed, timeout=10)
        assert bob.of_type("closed")[-1]["code"] == "closed_by_operator"
        await page.wait_for_selector(f"article[data-room='{room}']", state="detached",
                                     timeout=10_000)
        await asyncio.sleep(3)  # past the first wait (1 s) of a rejoin loop
        assert await call.evaluate("window.multipointCall.reconnects") == 0
        assert errors == []

        await page.goto("/admin/audit?action=room.")
        actions = await page.locator("#audit tbody tr").evaluate_all(
            "rows => rows.map((r) => r.dataset.action)")
        assert actions == ["room.close"]
    finally:
        await official.close()
        await bob.close()


@pytest.mark.skipif(BARESIP is None, reason="no baresip (scripts/test installs it)")
async def test_operator_calls_a_room_unit_into_a_live_room(server, accounts, context, tmp_path) -> None:
    room = "krajska-porada"
    alice = await join(server, room, "Alice")
    unit = Baresip(tmp_path / "unit", auto_answer=True)
    await unit.start()
    try:
        page = await context.new_page()
        await sign_in(page, "operator")
        form = page.locator(f"article[data-room='{room}'] form.dial")
        await form.locator("input[name=target]").fill(f"sip:unit@127.0.0.1:{unit.sip_port}")
        await form.get_by_role("button", name="Zavolat").click()
        await page.wait_for_selector("#done")
        # It rang, answered, and is in the room, listed like anyone.
        await page.locator(f"article[data-room='{room}'] tr[data-name='unit']").wait_for(timeout=20_000)
        await page.wait_for_function(
            """() => document.querySelector("#dials tbody tr").cells[3].textContent.includes('spojeno')""",
            timeout=20_000)
        assert unit.saw("CALL_ESTABLISHED") is not None
        assert await wait_until(lambda: any(p["name"] == "unit" for m in alice.of_type("participants")
                                            for p in m["participants"]))
        # A SIP address that is not one is refused with a reason.
        await form.locator("input[name=target]").evaluate("(input) => input.removeAttribute('pattern')")
        await form.locator("input[name=target]").fill("http://example")
        await form.get_by_role("button", name="Zavolat").click()
        await page.wait_for_selector("p.alert")
    finally:
        await unit.stop()
        await alice.close()


async def test_operator_recording_that_cannot_be_written_is_told_and_the_page_goes_on(
        server, accounts, context) -> None:
    room = "bez-zaznamu"
    # Something stands where the room's recordings folder would be: the worker refuses
    # the recording with recording_failed (tests/media/test_recording.py).
    recordings = server.settings.data_dir / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    (recordings / room).write_text("not a folder")
    alice = await join(server, room, "Alice")
    try:
        page = await context.new_page()
        await sign_in(page, "operator")
        article = page.locator(f"article[data-room='{room}']")
        async with page.expect_navigation() as navigation:
            await article.get_by_role("button", name="Spustit nahrávání").click()
        assert (await navigation.value).status == 200
        alert = page.locator("p.alert#failed")
        assert "server nemůže záznam zapisovat" in await alert.text_content()
        assert await page.locator("#done").count() == 0
        # Nothing records, the room and its participant are there, and the page works.
        assert await article.locator(".badge.rec").count() == 0
        assert await article.locator("tr[data-name='Alice']").count() == 1
        await article.locator("button[value=lock]").click()
        await page.wait_for_selector("#done")
        await page.wait_for_selector(f"article[data-room='{room}'] .badge.warn")
        # Only what was done is in the audit log.
        await page.goto("/admin/audit?action=room.")
        actions = await page.locator("#audit tbody tr").evaluate_all(
            "rows => rows.map((r) => r.dataset.action)")
        assert actions == ["room.lock"]
    finally:
        await alice.close()


async def test_operator_mute_on_a_media_worker_that_hangs_is_told_and_the_page_goes_on(
        tmp_path, browser, monkeypatch) -> None:
    # The participant's worker process hangs (SIGSTOP: alive, its channel open, nothing
    # answered) while the operator mutes: the request fails when the pool gives the
    # worker up as hung and kills it.
    monkeypatch.setattr("mcu.pool.HUNG_AFTER_S", 3.0)
    server = await start_process_server(tmp_path, 1)
    seed_accounts(server)
    room = "zamrzly-stroj"
    alice = await join(server, room, "Alice")
    context = await czech_context(browser, server.url)
    stopped: int | None = None
    try:
        page = await context.new_page()
        await sign_in(page, "operator")
        row = page.locator(f"article[data-room='{room}'] tr[data-name='Alice']")
        await row.wait_for()
        await page.locator("#auto-refresh").uncheck()  # the form stays as clicked
        stopped = server.app[POOL].states[0].pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        async with page.expect_navigation(timeout=30_000) as navigation:
            await row.get_by_role("button", name="Ztlumit").click()
        assert (await navigation.value).status == 200
        assert "Mediální server" in await page.locator("p.alert#failed").text_content()
        assert not alice.of_type("muted")
        # The page goes on: the worker is back and Alice's page rejoins by itself (here
        # the test's client does not), and the room list is served.
        await page.reload()
        assert await page.locator("#live-rooms").count() == 1
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
        await alice.close()
        await context.close()
        await server.runner.cleanup()
