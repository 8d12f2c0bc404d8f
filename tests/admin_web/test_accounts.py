"""Sign-in and its throttle, password changes, roles and field-level form errors, in Chromium."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.admin_web.conftest import PASSWORD, sign_in
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser


async def http_sign_in(server, address: str, name: str, password: str) -> aiohttp.ClientResponse:
    """A sign-in form post from ``address`` (any of 127/8), with the page's CSRF pair."""
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(address, 0)),
            cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: cookies of an IP host
        async with http.get(f"{server.url}/admin/sign-in") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
        async with http.post(f"{server.url}/admin/sign-in", allow_redirects=False, data={
                "csrf": csrf, "name": name, "password": password, "next": ""}) as response:
            await response.read()
            return response


async def test_wrong_passwords_block_that_address_for_that_account_only(server, accounts,
                                                                      context) -> None:
    page = await context.new_page()
    await page.goto("/admin")
    assert "/admin/sign-in?next=" in page.url
    await screenshot(page, "admin-sign-in")
    for _ in range(5):
        await sign_in(page, "benesov", "wrong password")
        assert await page.get_attribute("#sign-in-error", "data-error") == "bad_credentials"
    wrong = await page.text_content("#sign-in-error")
    # From this address even the right password now gets the same answer as a wrong one,
    # and so does a name that does not exist: nothing tells them apart.
    await sign_in(page, "benesov", PASSWORD)
    assert await page.get_attribute("#sign-in-error", "data-error") == "bad_credentials"
    assert await page.text_content("#sign-in-error") == wrong
    await sign_in(page, "nobody-of-that-name", PASSWORD)
    assert await page.text_content("#sign-in-error") == wrong
    await screenshot(page, "admin-sign-in-refused")
    statuses = [(await http_sign_in(server, "127.0.0.1", name, PASSWORD)).status
                for name in ("benesov", "nobody-of-that-name")]
    assert statuses == [401, 401]

    # The account's owner, elsewhere, signs in: nobody can lock an account out.
    answer = await http_sign_in(server, "127.0.0.2", "benesov", PASSWORD)
    assert answer.status == 303 and "multipoint_session" in answer.cookies

    # Another account is not affected, and the operator reads the block in the audit log.
    await sign_in(page, "operator")
    await page.goto("/admin/audit")
    blocked = page.locator("#audit tr[data-action='user.sign_in_blocked']")
    assert "user:benesov" in await blocked.first.text_content()
    await screenshot(page, "admin-audit")


async def test_an_address_that_tries_too_often_waits(server, accounts) -> None:
    answers = [(await http_sign_in(server, "127.0.0.3", f"guess{n}", "x" * 12)).status
               for n in range(21)]
    assert answers == [401] * 20 + [429]
    retry = await http_sign_in(server, "127.0.0.3", "operator", PASSWORD)
    assert retry.status == 429 and int(retry.headers["Retry-After"]) >= 1
    assert (await http_sign_in(server, "127.0.0.4", "operator", PASSWORD)).status == 303


async def test_a_password_change_ends_the_other_sessions(server, accounts, browser) -> None:
    contexts = [await browser.new_context(base_url=server.url) for _ in range(2)]
    try:
        here, elsewhere = [await c.new_page() for c in contexts]
        for page in (here, elsewhere):
            await sign_in(page, "beroun")
            assert page.url.endswith("/admin/bookings")
        await here.goto("/admin/account")
        await here.fill("#f-current", "wrong password")
        await here.fill("#f-new_password", "a new password 2026")
        await here.fill("#f-again", "a new password 2026")
        await here.click("button[type=submit].primary")
        await here.wait_for_load_state()
        assert await here.is_visible("#err-current")
        await here.fill("#f-current", PASSWORD)
        await here.fill("#f-new_password", "a new password 2026")
        await here.fill("#f-again", "a new password 2026")
        await here.click("button[type=submit].primary")
        await here.wait_for_load_state()
        assert not await here.is_visible("#err-current")
        # This browser stays signed in; the other session ended with the old password.
        await here.goto("/admin/bookings")
        assert here.url.endswith("/admin/bookings")
        await elsewhere.goto("/admin/bookings")
        assert "/admin/sign-in" in elsewhere.url
        await sign_in(elsewhere, "beroun", "a new password 2026")
        assert elsewhere.url.endswith("/admin/bookings"), await elsewhere.content()
    finally:
        for context in contexts:
            await context.close()


async def test_a_page_needing_a_role_refuses_other_roles(server, accounts, context) -> None:
    page = await context.new_page()
    await sign_in(page, "coordinator")
    assert page.url.endswith("/admin/dashboard")
    for path in ("/admin/operating", "/admin/audit", "/admin/bookings", "/admin/bookings/new"):
        response = await page.goto(path)
        assert response.status == 403, path
        assert await page.is_visible("#forbidden")
    await screenshot(page, "admin-forbidden")
    # A refused change (with a valid session and CSRF token) changes nothing either.
    csrf = await page.get_attribute("meta[name=csrf-token]", "content")
    response = await page.request.post("/admin/operating/act", form={
        "csrf": csrf, "room": "x", "participant": "p1", "action": "remove"})
    assert response.status == 403

    await context.clear_cookies()
    await sign_in(page, "benesov")
    assert page.url.endswith("/admin/bookings")
    for path in ("/admin/rollout", "/admin/dashboard", "/admin/operating", "/admin/users"):
        response = await page.goto(path)
        assert response.status == 403, path
    # The menu offers only what the role may open.
    assert await page.locator("header nav a").all_text_contents() == ["Rezervace"]

    # Without the session's CSRF token a change is refused even for the right role.
    await context.clear_cookies()
    await sign_in(page, "operator")
    response = await page.request.post("/admin/operating/act", form={
        "room": "x", "participant": "p1", "action": "remove"})
    assert response.status == 403


async def test_forms_reject_bad_input_with_messages_next_to_the_fields(server, accounts,
                                                                       context) -> None:
    page = await context.new_page()
    await sign_in(page, "coordinator")
    await page.goto("/admin/rollout/programmes")
    await page.fill("#f-budget_czk", "a lot")
    await page.fill("#f-call_opens", "2027-03-01")
    await page.fill("#f-call_closes", "2027-04-30")
    await page.click("#programme-form button[type=submit]")
    assert await page.text_content("#err-name") == "Povinné."
    assert "celé číslo" in await page.text_content("#err-budget_czk")
    assert await page.text_content("#err-deadline") == "Zadejte datum."
    assert await page.get_attribute("#f-budget_czk", "aria-describedby") == "err-budget_czk"
    assert await page.input_value("#f-call_opens") == "2027-03-01"  # what was typed stays
    await screenshot(page, "admin-programme-errors")
    # Fixed, except the deadline before the call's end: the rule speaks next to the field.
    await page.fill("#f-name", "Výzva 2027")
    await page.fill("#f-budget_czk", "25 000 000")
    await page.fill("#f-deadline", "2027-04-01")
    await page.click("#programme-form button[type=submit]")
    assert "před koncem výzvy" in await page.text_content("#err-deadline") or \
        "dřív než konec" in await page.text_content("#err-deadline")
    await page.fill("#f-deadline", "2027-12-31")
    await page.click("#programme-form button[type=submit]")
    assert "Výzva 2027" in await page.text_content("#programmes")

    await context.clear_cookies()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings/new")
    await page.fill("#f-title", "")
    await page.fill("#f-start", "11:00")
    await page.fill("#f-end", "11:00")  # an earlier end is the next day's: no error of shape
    await page.fill("#f-hd", "-2")
    await page.select_option("#f-repeat", "weekly")
    await page.fill("#f-invitees", "starosta@benesov.cz, not-an-address")
    await page.click("#save-booking")
    assert await page.text_content("#err-title") == "Zadejte název schůzky."
    assert await page.text_content("#err-end") == "Konec nesmí být ve stejný čas jako začátek."
    assert await page.text_content("#err-hd") == "Celé číslo, 0 nebo víc."
    assert "počet schůzek" in await page.text_content("#err-count")
    assert "not-an-address" in await page.text_content("#err-invitees")
    await screenshot(page, "admin-booking-form-errors")
