"""An ORP admin picks the room units a meeting calls at its start, in the booking form."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from multipoint.app import DATABASE
from scheduler.models import Endpoint
from tests.admin_web.conftest import BENESOV, BEROUN, sign_in

pytestmark = pytest.mark.browser


def add_unit(server, organisation: int, serial: str, site: str, sip_uri: str | None) -> int:
    with server.app[DATABASE].session() as session:
        unit = Endpoint(serial=serial, model="X30", site=site, organisation_id=organisation,
                        status="in_service", sip_uri=sip_uri)
        session.add(unit)
        session.flush()
        return unit.id


async def test_the_form_offers_the_organisations_callable_units_and_the_page_lists_them(
        server, accounts, context) -> None:
    benesov, beroun = accounts.organisations[BENESOV], accounts.organisations[BEROUN]
    own = add_unit(server, benesov, "SN-B1", "Zasedačka Benešov", "sip:zasedacka@10.0.0.5")
    add_unit(server, benesov, "SN-B2", "Kancelář starosty", None)  # cannot be called
    foreign = add_unit(server, beroun, "SN-R1", "Zasedačka Beroun", "sip:beroun@10.0.0.6")
    day = datetime.now(ZoneInfo("Europe/Prague")).date() + timedelta(days=15)

    page = await context.new_page()
    await sign_in(page, "benesov")
    await page.goto("/admin/bookings/new")
    offered = await page.locator("input[name=call_unit]").evaluate_all(
        "boxes => boxes.map((b) => b.value)")
    assert offered == [str(own)]  # neither the one without an address nor Beroun's
    await page.fill("#f-title", "Porada se zasedačkou")
    await page.fill("#f-date", day.isoformat())
    await page.fill("#f-start", "09:00")
    await page.fill("#f-end", "10:00")
    await page.fill("#f-hd", "2")
    await page.check(f"input[name=call_unit][value='{own}']")
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    assert await page.text_content("#call-units span") \
        == "Zasedačka Benešov (SN-B1) (sip:zasedacka@10.0.0.5)"
    booking_url = page.url.split("?")[0]

    # The change form has it ticked; a unit of another organisation, slipped into the
    # form, is refused next to the field and the booking keeps its unit.
    await page.goto(booking_url + "/edit")
    box = page.locator(f"input[name=call_unit][value='{own}']")
    assert await box.is_checked()
    await box.evaluate(f"(b) => {{ b.value = '{foreign}'; }}")
    await page.click("#save-booking")
    assert await page.text_content("#err-call_units") == "Tato jednotka patří jiné organizaci."
    await page.goto(booking_url)
    assert await page.locator("#call-units span").count() == 1

    # Unticked, the meeting calls no unit.
    await page.goto(booking_url + "/edit")
    await page.uncheck(f"input[name=call_unit][value='{own}']")
    await page.click("#save-booking")
    await page.wait_for_selector("#saved")
    assert (await page.text_content("#call-units")).strip() == "—"

    # The operator books for any organisation: the form offers the units of the one
    # chosen (the calling ORP's own, never the neighbour's).
    await context.clear_cookies()
    await sign_in(page, "operator")
    await page.goto("/admin/bookings/new")
    await page.select_option("#f-organisation_id", str(beroun))
    await page.wait_for_selector(f"input[name=call_unit][value='{foreign}']", state="visible")
    assert await page.locator(f"input[name=call_unit][value='{own}']").is_hidden()
    await page.select_option("#f-organisation_id", str(benesov))
    await page.wait_for_selector(f"input[name=call_unit][value='{own}']", state="visible")
    assert await page.locator(f"input[name=call_unit][value='{foreign}']").is_hidden()
