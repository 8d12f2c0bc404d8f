"""Sign-in, lockout, roles and field-level form errors, in Chromium."""

from __future__ import annotations

import pytest

from tests.admin_web.conftest import PASSWORD, sign_in
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser


async def test_wrong_passwords_lock_the_account(server, accounts, context) -> None:
    page = await context.new_page()
    await page.goto("/admin")
    assert "/admin/sign-in?next=" in page.url
    await screenshot(page, "admin-sign-in")
    for _ in range(4):
        await sign_in(page, "benesov", "wrong password")
        assert await page.get_attribute("#sign-in-error", "data-error") == "bad_credentials"
    await sign_in(page, "benesov", "wrong password")
    assert await page.get_attribute("#sign-in-error", "data-error") == "locked"
    # Now even the right password is refused until the lock runs out.
    await sign_in(page, "benesov", PASSWORD)
    assert await page.get_attribute("#sign-in-error", "data-error") == "locked"
    assert "zamčen" in await page.text_content("#sign-in-error")
    await screenshot(page, "admin-sign-in-locked")

    # Another account is not affected, and the operator reads the lock in the audit log.
    await sign_in(page, "operator")
    await page.goto("/admin/audit")
    locked = page.locator("#audit tr[data-action='user.locked']")
    assert "user:benesov" in await locked.first.text_content()
    await screenshot(page, "admin-audit")


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
    await page.fill("#f-end", "10:00")
    await page.fill("#f-hd", "-2")
    await page.select_option("#f-repeat", "weekly")
    await page.fill("#f-invitees", "starosta@benesov.cz, not-an-address")
    await page.click("#save-booking")
    assert await page.text_content("#err-title") == "Zadejte název schůzky."
    assert await page.text_content("#err-end") == "Konec musí být po začátku."
    assert await page.text_content("#err-hd") == "Celé číslo, 0 nebo víc."
    assert "počet schůzek" in await page.text_content("#err-count")
    assert "not-an-address" in await page.text_content("#err-invitees")
    await screenshot(page, "admin-booking-form-errors")
