"""A coordinator imports room units from CSV; a unit's passing self-test makes it "tested"."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.access.auth import principal_of
from scheduler.grants import rollout
from scheduler.models import Organisation, SelfTestResult, User
from tests.admin_web.conftest import sign_in
from tests.browser.conftest import screenshot
from tests.sip_unit import BARESIP, Baresip

pytestmark = pytest.mark.browser

# The units still on their way are due a year from today, so that none of them turns
# overdue as the calendar moves on; SN-BN-0002 was due long ago and is the one overdue.
DUE = (date.today() + timedelta(days=365)).isoformat()
HEADER = "serial,model,site,organisation,status,programme,price_czk,due_on\n"
GOOD = (
    f"SN-BN-0001,Poly Studio X30,Zasedací místnost 1,orp:CZ020:Benešov,installed,Výzva 2027,89000,{DUE}\n"
    "SN-BN-0002,Poly Studio X30,Kancelář starosty,orp:CZ020:Benešov,delivered,Výzva 2027,89000,2020-01-31\n"
    f"SN-BE-0001,Cisco Room Kit Mini,Sál rady,Beroun,ordered,Výzva 2027,120000,{DUE}\n"
)
BAD = f"SN-XX-0001,Cisco Room Kit Mini,Sál,Neexistující úřad,requested,,120000,{DUE}\n"
FIXED = f"SN-BE-0002,Cisco Room Kit Mini,Sál,orp:CZ020:Beroun,requested,,120000,{DUE}\n"


async def counts(page) -> dict[str, int]:
    rows = await page.locator("#by-status tbody tr").evaluate_all(
        "rows => rows.map((r) => [r.dataset.status, Number(r.cells[1].textContent)])")
    return dict(rows)


async def test_csv_import_with_preview_and_a_passing_selftest_makes_a_unit_tested(
        server, accounts, context) -> None:
    with server.app[DATABASE].session() as session:
        coordinator = principal_of(session.scalar(select(User).where(User.name == "coordinator")))
        rollout.create_programme(session, coordinator, "Výzva 2027", 2_000_000, date(2026, 1, 1),
                                 date(2026, 6, 30), date.today() + timedelta(days=730))

    page = await context.new_page()
    await sign_in(page, "coordinator")
    assert await page.text_content("#total") == "0"

    # One bad row: the preview names it, and offers no import.
    await page.goto("/admin/rollout/import")
    await page.fill("#f-csv_text", HEADER + GOOD + BAD)
    await page.click("button[value=preview]")
    assert await page.get_attribute("#preview", "data-errors") == "1"
    bad_row = page.locator("#preview tr.row-error")
    assert await bad_row.get_attribute("data-line") == "5"
    assert "neznámá organizace" in await bad_row.locator(".errors").text_content()
    assert await page.locator("#do-import").count() == 0
    await screenshot(page, "admin-import-preview-error")
    # Nothing was written.
    await page.goto("/admin/dashboard")
    assert await page.text_content("#total") == "0"

    # Fixed in the same box, previewed clean, imported.
    await page.goto("/admin/rollout/import")
    await page.fill("#f-csv_text", HEADER + GOOD + FIXED)
    await page.click("button[value=preview]")
    assert await page.get_attribute("#preview", "data-errors") == "0"
    await page.click("#do-import")
    assert "4" in await page.text_content("#imported")

    await page.goto("/admin/dashboard")
    assert await page.text_content("#total") == "4"
    before = await counts(page)
    assert (before["installed"], before["delivered"], before["ordered"], before["requested"]) == (1, 1, 1, 1)
    region = page.locator("#by-region tr[data-region='Středočeský kraj'] td")
    assert sum(int(t) for t in await region.all_text_contents()) == 4
    assert await page.text_content("#overdue-count") == "1"  # SN-BN-0002 was due in 2020
    assert "SN-BN-0002" in await page.text_content("#overdue")
    await screenshot(page, "admin-dashboard")

    # The unit's self-test link, opened on the unit: a passing call moves it to "tested".
    await page.goto("/admin/rollout/endpoints/SN-BN-0001")
    assert await page.get_attribute("#endpoint-status", "data-status") == "installed"
    link = await page.get_attribute("#selftest-link", "href")
    unit = await context.new_page()
    await context.grant_permissions(["camera", "microphone"], origin=server.url)
    await unit.goto(link + "&autostart=1&duration=3")
    await unit.wait_for_function("() => window.multipointSelfTest.saved", timeout=40_000)
    assert (await unit.evaluate("window.multipointSelfTest.verdict"))["passed"] is True
    await unit.close()

    await page.reload()
    assert await page.get_attribute("#endpoint-status", "data-status") == "tested"
    assert "prošel" in await page.text_content("#selftests")
    await screenshot(page, "admin-endpoint-tested")
    await page.goto("/admin/dashboard")
    after = await counts(page)
    assert (after["installed"], after["tested"]) == (0, 1)

    # The export has every unit, the test's result included; the report prints the same.
    export = await page.request.get("/admin/rollout/endpoints.csv")
    lines = (await export.text()).splitlines()
    assert len(lines) == 5 and any(line.startswith("SN-BN-0001,") and line.endswith(",true")
                                   for line in lines)
    await page.goto("/admin/dashboard/report")
    assert await page.text_content("#total") == "4"
    await page.emulate_media(media="print")
    await screenshot(page, "admin-report-print")


@pytest.mark.media
@pytest.mark.skipif(BARESIP is None, reason="no baresip (scripts/test installs it)")
async def test_a_units_sip_test_call_checks_its_sound_and_video_both_ways_and_makes_it_tested(
        server, accounts, context, tmp_path) -> None:
    with server.app[DATABASE].session() as session:
        coordinator = principal_of(session.scalar(select(User).where(User.name == "coordinator")))
        benesov = session.scalar(select(Organisation).where(Organisation.name.like("%Benešov%")))
        now = datetime.now(UTC)
        for serial in ("SN-SIP-1", "SN-SIP-2"):
            unit_row = rollout.create_endpoint(session, coordinator, serial, "Poly Studio X30", "Sál",
                                               benesov.id, None, 89000, None, now)
            for status in ("approved", "ordered", "delivered", "installed"):
                rollout.change_status(session, coordinator, unit_row.id, status, now)
    unit = Baresip(tmp_path / "unit", auto_answer=True, video=True)
    await unit.start()
    try:
        page = await context.new_page()
        await sign_in(page, "coordinator")
        await page.goto("/admin/rollout/endpoints/SN-SIP-1")
        await page.fill("#f-sip", "not a sip address")
        await page.get_by_role("button", name="Uložit").click()
        assert "sip:jednotka@adresa" in await page.text_content("p.alert")
        await page.fill("#f-sip", f"sip:unit@127.0.0.1:{unit.sip_port}")
        await page.get_by_role("button", name="Uložit").click()
        await page.click("#test-call")
        await page.wait_for_selector("#test-calling")
        # The call takes its seconds; the page shows the verdict once it is stored.
        for _ in range(60):
            await page.goto("/admin/rollout/endpoints/SN-SIP-1")
            if await page.get_attribute("#endpoint-status", "data-status") == "tested":
                break
            await asyncio.sleep(0.5)
        assert await page.get_attribute("#endpoint-status", "data-status") == "tested"
        row = page.locator("#selftests tbody tr").first
        assert "hovor SIP" in await row.text_content() and "✔" in await row.text_content()
        assert unit.saw("CALL_ESTABLISHED") is not None
    finally:
        await unit.stop()
    # The stored verdict counts video both ways: its camera decoded, our composite reported on.
    with server.app[DATABASE].session() as session:
        figures = session.scalars(select(SelfTestResult).where(SelfTestResult.endpoint_serial == "SN-SIP-1")
                                  .order_by(SelfTestResult.id.desc())).first().figures
    assert figures["video_tested"] == 1 and figures["video_from_unit_frames"] > 0
    assert figures["video_to_unit_packets"] > 0 and figures["video_receiver_reports"] >= 1
    # A unit that is not there: a failed verdict that says why, and no "tested".
    with server.app[DATABASE].session() as session:
        unit_id = rollout.endpoint_id_of(session, "SN-SIP-2")
        rollout.set_sip_uri(session, coordinator, unit_id,
                            f"sip:unit@127.0.0.1:{closed_port()};transport=tcp")
    await page.goto("/admin/rollout/endpoints/SN-SIP-2")
    await page.click("#test-call")
    for _ in range(40):
        await page.goto("/admin/rollout/endpoints/SN-SIP-2")
        if await page.locator("#selftests tbody tr td", has_text="unreachable").count():
            break
        await asyncio.sleep(0.25)
    row = page.locator("#selftests tbody tr").first
    assert "unreachable" in await row.text_content() and "✘" in await row.text_content()
    assert await page.get_attribute("#endpoint-status", "data-status") == "installed"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
