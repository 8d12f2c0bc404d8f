"""The rollout tracker: programmes, applications, endpoints, CSV import/export, dashboards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.orm import Session

from admin_web.web import COORDINATORS, Admin, form, page, render
from scheduler.access import audit
from scheduler.access.permissions import Principal
from scheduler.errors import NotFound, SchedulerError
from scheduler.grants import rollout
from scheduler.ids import MAX_ID, parse_id
from scheduler.organisations import organisation_choices, organisation_names

MAX_CSV_BYTES = 2 * 1024 * 1024


def endpoint_url(serial: str) -> str:
    """A unit's page. Serials are the makers' own ("SN/2024/7", "A-1?"): quoted as the
    pages' links quote them, or a '/', '?' or '#' in one leads to no page, or another's."""
    return f"/admin/rollout/endpoints/{quote(serial, safe='')}"


@page(COORDINATORS)
async def endpoints_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    status = request.query.get("status", "")
    region = request.query.get("region", "")

    def work() -> dict[str, Any]:
        with admin.db.session() as session:
            rows, regions = rollout.endpoint_rows(session, status, region)
            return {"rows": rows, "regions": regions, "today": admin.now().date()}

    return render(request, "endpoints.html", status=200, filter_status=status,
                  filter_region=region, statuses=rollout.STATUSES,
                  is_overdue=rollout.is_overdue, **await admin.run(work))


def _new_endpoint_context(admin: Admin) -> dict[str, Any]:
    with admin.db.session() as session:
        return {"organisations": organisation_choices(session),
                "programmes": rollout.programme_choices(session)}


@page(COORDINATORS)
async def new_endpoint_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return render(request, "endpoint_new.html", errors={}, values={},
                  **await admin.run(_new_endpoint_context, admin))


@page(COORDINATORS)
async def create_endpoint(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    data = await form(request)
    errors: dict[str, str] = {}
    for name in ("serial", "model"):
        if not data.get(name):
            errors[name] = "Required."
    if parse_id(data.get("organisation_id")) is None:
        errors["organisation_id"] = "Required."
    price = _positive_int({**data, "price_czk": data.get("price_czk") or "0"}, "price_czk", errors)
    due = _date(data, "due_on", errors) if data.get("due_on") else None
    programme = parse_id(data.get("programme_id"))

    def work() -> None:
        with admin.db.session() as session:
            rollout.create_endpoint(session, user, data["serial"], data["model"],
                                    data.get("site", ""), int(data["organisation_id"]), programme,
                                    price, due, admin.now())

    if not errors:
        try:
            await admin.run(work)
            raise web.HTTPSeeOther(endpoint_url(data["serial"]))
        except SchedulerError as exc:
            errors[str(exc.details.get("field", "serial"))] = exc.code
    return render(request, "endpoint_new.html", status=422, errors=errors, values=data,
                  **await admin.run(_new_endpoint_context, admin))


@page(COORDINATORS)
async def endpoint_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return await _endpoint(admin, request, error="")


async def _endpoint(admin: Admin, request: web.Request, error: str, status: int = 200) -> web.Response:
    serial = request.match_info["serial"]

    def work() -> dict[str, Any]:
        with admin.db.session() as session:
            return rollout.endpoint_view(session, serial)

    try:
        context = await admin.run(work)
    except NotFound:
        raise web.HTTPNotFound(text=f"no endpoint {serial}") from None
    return render(request, "endpoint.html", status=status, error=error, pipeline=rollout.PIPELINE,
                  selftest_link=admin.selftest_link(serial), sip=admin.test_call is not None,
                  test_calling=admin.is_test_calling(serial), **context)


@page(COORDINATORS)
async def set_sip_uri(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    return await _change_endpoint(admin, request, lambda session, endpoint_id, data: rollout.set_sip_uri(
        session, user, endpoint_id, data.get("sip_uri", "")))


@page(COORDINATORS)
async def test_call(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    """Call the unit now and check its sound both ways; the verdict lands in its tests."""
    serial = request.match_info["serial"]
    await form(request)  # the CSRF check

    def work() -> str | None:
        with admin.db.session() as session:
            endpoint = rollout.endpoint_view(session, serial)["endpoint"]
            audit.record(session, user, "endpoint.test_call", f"endpoint:{serial}",
                         {"sip_uri": endpoint.sip_uri})
            return endpoint.sip_uri

    try:
        uri = await admin.run(work)
    except NotFound:
        raise web.HTTPNotFound(text=f"no endpoint {serial}") from None
    if admin.test_call is None:
        return await _endpoint(admin, request, error="sip_off", status=409)
    if not uri:
        return await _endpoint(admin, request, error="no_sip_uri", status=409)
    admin.test_call(serial, uri)
    raise web.HTTPSeeOther(endpoint_url(serial) + "?calling=1")


async def _change_endpoint(admin: Admin, request: web.Request,
                           change: Callable[[Session, int, dict[str, str]], object]) -> web.StreamResponse:
    """A coordinator's change to one unit from its page: done, or the page again with why."""
    serial = request.match_info["serial"]
    data = await form(request)

    def work() -> None:
        with admin.db.session() as session:
            try:
                endpoint_id = rollout.endpoint_id_of(session, serial)
            except NotFound:
                raise web.HTTPNotFound(text=f"no endpoint {serial}") from None
            change(session, endpoint_id, data)

    try:
        await admin.run(work)
    except SchedulerError as exc:
        return await _endpoint(admin, request, error=exc.code, status=422)
    raise web.HTTPSeeOther(endpoint_url(serial))


@page(COORDINATORS)
async def change_status(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    return await _change_endpoint(admin, request, lambda session, endpoint_id, data: rollout.change_status(
        session, user, endpoint_id, data.get("status", ""), admin.now()))


@page(COORDINATORS)
async def import_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return render(request, "import.html", text="", preview=None, imported=None, error="")


@page(COORDINATORS)
async def import_post(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    data = await request.post()
    text = str(data.get("csv_text", "") or "")
    upload = data.get("csv_file")
    if upload is not None and not isinstance(upload, str) and getattr(upload, "file", None):
        raw = upload.file.read(MAX_CSV_BYTES + 1)
        if raw:
            text = rollout.decode_csv(raw)
    if len(text.encode()) > MAX_CSV_BYTES:
        return render(request, "import.html", status=413, text="", preview=None, imported=None,
                      error="too_large")
    commit = data.get("action") == "import"

    def work() -> tuple[rollout.Preview, dict[str, int] | None]:
        with admin.db.session() as session:
            preview = rollout.preview_csv(session, text)
            if commit and preview.ok:
                return preview, rollout.import_csv(session, user, text, admin.now())
            return preview, None

    preview, imported = await admin.run(work)
    return render(request, "import.html", status=200 if preview.ok or not commit else 422,
                  text="" if imported else text, preview=None if imported else preview,
                  imported=imported, error="")


@page(COORDINATORS)
async def export_csv(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    def work() -> str:
        with admin.db.session() as session:
            return rollout.export_csv(session)

    return web.Response(text=await admin.run(work), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="endpoints.csv"'})


def _programmes_context(admin: Admin) -> dict[str, Any]:
    with admin.db.session() as session:
        return {**rollout.programmes_overview(session),
                "organisations": organisation_choices(session)}


@page(COORDINATORS)
async def programmes_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return render(request, "programmes.html", errors={}, values={}, app_errors={}, app_values={},
                  **await admin.run(_programmes_context, admin))


def _positive_int(data: dict[str, str], name: str, errors: dict[str, str]) -> int:
    raw = data.get(name, "").replace(" ", "")
    if not raw:
        errors[name] = "Required."
        return 0
    if not raw.isascii() or not raw.isdigit():
        errors[name] = "Enter a whole number of crowns, 0 or more."
        return 0
    if len(raw) > 10 or int(raw) > MAX_ID:  # the column's range (and no budget is larger)
        errors[name] = "The number is too large."
        return 0
    return int(raw)


def _date(data: dict[str, str], name: str, errors: dict[str, str]) -> date:
    try:
        return date.fromisoformat(data.get(name, ""))
    except ValueError:
        errors[name] = "Enter a date." if not data.get(name) else "Enter a date as YYYY-MM-DD."
        return date.min


@page(COORDINATORS)
async def create_programme(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    data = await form(request)
    errors: dict[str, str] = {}
    if not data.get("name"):
        errors["name"] = "Required."
    budget = _positive_int(data, "budget_czk", errors)
    opens, closes, deadline = (_date(data, n, errors) for n in ("call_opens", "call_closes", "deadline"))

    def work() -> None:
        with admin.db.session() as session:
            rollout.create_programme(session, user, data["name"], budget, opens, closes, deadline)

    if not errors:
        try:
            await admin.run(work)
            raise web.HTTPSeeOther("/admin/rollout/programmes")
        except SchedulerError as exc:
            errors[str(exc.details.get("field", "name"))] = exc.code
    return render(request, "programmes.html", status=422, errors=errors, values=data,
                  app_errors={}, app_values={}, **await admin.run(_programmes_context, admin))


@page(COORDINATORS)
async def create_application(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    data = await form(request)
    errors: dict[str, str] = {}
    for name in ("programme_id", "organisation_id"):
        if parse_id(data.get(name)) is None:
            errors[name] = "Required."
    units = _positive_int(data, "units_requested", errors)
    amount = _positive_int(data, "amount_czk", errors)
    submitted = _date(data, "submitted_on", errors)

    def work() -> None:
        with admin.db.session() as session:
            rollout.create_application(session, user, int(data["programme_id"]),
                                       int(data["organisation_id"]), submitted, units, amount)

    if not errors:
        try:
            await admin.run(work)
            raise web.HTTPSeeOther("/admin/rollout/programmes#applications")
        except SchedulerError as exc:
            errors["organisation_id" if "organisation" in exc.code else "programme_id"] = exc.code
    return render(request, "programmes.html", status=422, errors={}, values={}, app_errors=errors,
                  app_values=data, **await admin.run(_programmes_context, admin))


@page(COORDINATORS)
async def decide_application(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    data = await form(request)
    application_id = parse_id(request.match_info["id"])
    if application_id is None:
        raise web.HTTPNotFound(text="no such application")
    errors: dict[str, str] = {}
    approved = _positive_int({"approved_czk": data.get("approved_czk") or "0"}, "approved_czk",
                             errors)
    if errors:
        raise web.HTTPUnprocessableEntity(text=f"approved_czk: {errors['approved_czk']}")

    def work() -> None:
        with admin.db.session() as session:
            rollout.decide_application(session, user, application_id, data.get("status", ""),
                                       approved, admin.now().date())

    try:
        await admin.run(work)
    except NotFound as exc:
        raise web.HTTPNotFound(text=exc.message) from None
    except SchedulerError as exc:
        raise web.HTTPUnprocessableEntity(text=exc.message) from None
    raise web.HTTPSeeOther("/admin/rollout/programmes#applications")


def _dashboard(admin: Admin) -> dict[str, Any]:
    with admin.db.session() as session:
        data = rollout.dashboard(session, admin.now().date())
        orgs = organisation_names(session)
        return {"data": data, "org_names": orgs, "today": admin.now().date()}


@page(COORDINATORS)
async def dashboard_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return render(request, "dashboard.html", statuses=rollout.STATUSES,
                  **await admin.run(_dashboard, admin))


@page(COORDINATORS)
async def report_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return render(request, "report.html", statuses=rollout.STATUSES,
                  **await admin.run(_dashboard, admin))


def routes(app: web.Application) -> None:
    app.router.add_get("/admin/rollout", endpoints_page)
    app.router.add_get("/admin/rollout/endpoints.csv", export_csv)
    app.router.add_get("/admin/rollout/import", import_page)
    app.router.add_post("/admin/rollout/import", import_post)
    app.router.add_get("/admin/rollout/programmes", programmes_page)
    app.router.add_post("/admin/rollout/programmes", create_programme)
    app.router.add_post("/admin/rollout/applications", create_application)
    app.router.add_post("/admin/rollout/applications/{id:\\d+}", decide_application)
    app.router.add_get("/admin/rollout/endpoints/new", new_endpoint_page)
    app.router.add_post("/admin/rollout/endpoints/new", create_endpoint)
    app.router.add_get("/admin/rollout/endpoints/{serial}", endpoint_page)
    app.router.add_post("/admin/rollout/endpoints/{serial}/status", change_status)
    app.router.add_post("/admin/rollout/endpoints/{serial}/sip", set_sip_uri)
    app.router.add_post("/admin/rollout/endpoints/{serial}/test-call", test_call)
    app.router.add_get("/admin/dashboard", dashboard_page)
    app.router.add_get("/admin/dashboard/report", report_page)
