"""The operator sees a live room with an aiortc participant, mutes and removes it."""

from __future__ import annotations

import asyncio

import pytest

from tests.admin_web.conftest import sign_in
from tests.browser.conftest import screenshot
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
