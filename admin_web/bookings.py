"""Booking pages: the calendar, the form (create and change), one booking, capacity left."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select

from admin_web import booking_form
from admin_web.i18n import translator
from admin_web.web import BOOKERS, Admin, language, page, render
from scheduler.access.permissions import (
    Principal,
    can_see_booking,
    require_change_booking,
    require_see_booking,
)
from scheduler.booking import bookings, dial_in
from scheduler.booking.availability import ShareUse, availability, share_use
from scheduler.booking.recurrence import DEFAULT_ZONE, RecurrenceError, expand
from scheduler.booking.units import KINDS
from scheduler.errors import (
    CapacityRefused,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    SchedulerError,
)
from scheduler.ids import parse_id
from scheduler.models import Booking, Endpoint, Organisation
from scheduler.organisations import OrgInfo, org_info, org_infos, organisation_choices, subtree_ids

TZ = ZoneInfo(DEFAULT_ZONE)
# Errors of the scheduler that belong next to one field of the form.
FIELD_OF_CODE = {"in_past": "date", "invalid_rrule": "repeat", "too_many_occurrences": "count",
                 "beyond_horizon": "until", "too_long": "end", "no_participants": "hd",
                 "too_many_participants": "hd", "invalid_priority": "priority"}
# A cancelled booking's change form was a form that could not be saved (the scheduler
# refuses, in these words): its page says so instead.
CANCELLED = "a cancelled booking cannot be changed"
# The scheduler's refusals of a booking's room units, as the form says them.
UNIT_ERRORS = {"unit_not_found": "No such room unit.",
               "unit_without_sip_address": "This room unit has no SIP address to call.",
               "unit_of_another_organisation": "This room unit belongs to another organisation.",
               "too_many_units": "At most 20 room units."}


def _visible_orgs(session: Any, user: Principal) -> list[tuple[int, str, str]]:
    within = None if user.role == "operator" else subtree_ids(session, user.organisation_id or -1)
    return organisation_choices(session, within)


@page(BOOKERS)
async def calendar_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    def work() -> list[tuple[int, str, str]]:
        with admin.db.session() as session:
            return _visible_orgs(session, user)

    # The share shown is that of the organisation chosen (the user's own at first): an
    # operator, who books for any organisation, chooses one.
    return render(request, "calendar.html", zone=DEFAULT_ZONE,
                  organisations=await admin.run(work),
                  organisation_id=user.organisation_id)


def _instant(raw: str) -> datetime:
    """A time of the calendar's range as an instant: Prague's wall-clock time when it has
    no offset (as calendar.js asks), else the instant it names."""
    moment = datetime.fromisoformat(raw)
    return (moment.replace(tzinfo=TZ) if moment.tzinfo is None else moment).astimezone(UTC)


def _range(request: web.Request) -> tuple[datetime, datetime]:
    """The calendar's range, ``start`` and ``end`` of the query, as instants (_instant)."""
    try:
        return _instant(request.query["start"]), _instant(request.query["end"])
    except (KeyError, ValueError, OverflowError):
        raise web.HTTPBadRequest(
            text="start and end are ISO 8601 date-times (without an offset: Europe/Prague's)"
        ) from None


def _wall_clock(moment: datetime) -> str:
    """An instant as Prague's wall-clock time without an offset, as the calendar shows it."""
    return moment.astimezone(TZ).replace(tzinfo=None).isoformat()


@page(BOOKERS)
async def events(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    """Occurrences in [start, end) of the bookings this user may see, for the calendar.

    The calendar (calendar.js) runs on Prague's wall clock whatever the browser's zone:
    it asks for a range of Prague times and gets each occurrence's as Prague's, without
    an offset. Given with offsets, times of the browser's own zone moved the meetings on a
    computer set to another zone (a 10:00 meeting at 9:00 on one in UTC)."""
    start, end = _range(request)
    if end <= start or end - start > timedelta(days=62):
        raise web.HTTPBadRequest(text="ask for at most 62 days")

    def work() -> list[dict[str, object]]:
        with admin.db.session() as session:
            result = []
            for occurrence, booking, org in bookings.occurrences_between(session, user, start,
                                                                          end):
                result.append({
                    "id": str(occurrence.id), "groupId": str(booking.id), "title": booking.title,
                    "start": _wall_clock(occurrence.start_utc),
                    "end": _wall_clock(occurrence.end_utc),
                    "url": f"/admin/bookings/{booking.id}",
                    "classNames": [f"occ-{occurrence.state}", f"prio-{booking.priority}"],
                    "extendedProps": {"state": occurrence.state, "organisation": org.name,
                                      "units": occurrence.units}})
            return result

    return web.json_response(await admin.run(work))


def _booking_org(session: Any, user: Principal, organisation_id: int) -> OrgInfo:
    """The organisation ``user`` books for, as the booking form's preview takes it."""
    org = org_info(session, organisation_id)
    if org is None:
        raise NotFound("organisation_not_found", "No such organisation.")
    if user.role != "operator" and not can_see_booking(user, org):
        raise Forbidden("forbidden", "not your organisation")
    return org


def _share_json(share: ShareUse, organisation_id: int) -> dict[str, object]:
    """The organisation's share and its use, as the calendar and the form's preview say it."""
    return {"holder": share.holder.name if share.holder else None,
            "holder_is_own": share.holder is not None and share.holder.id == organisation_id,
            "share_percent": share.share_bp / 100, "quota_units": share.quota_units,
            "pool_units": share.pool_units, "izs_reserve_units": share.izs_reserve_units,
            "borrow_lead_hours": round(share.borrow_lead.total_seconds() / 3600),
            "peak_units": share.peak_units, "peak_at": _wall_clock(share.peak_at),
            "left_units": share.left_units}


@page(BOOKERS)
async def share(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    """The organisation's guaranteed share and how much of it its bookings use at the
    peak of the days the calendar shows, from now on (what is past is not left to book).

    ``start`` and ``end`` are Prague's wall-clock times, as events.json takes them;
    ``organisation_id``: the organisation chosen (the user's own by default)."""
    start, end = _range(request)
    raw = request.query.get("organisation_id", "")
    organisation_id = parse_id(raw) if raw else user.organisation_id
    if organisation_id is None:
        raise (web.HTTPNotFound(text="No such organisation.") if raw
               else web.HTTPBadRequest(text="organisation_id: choose an organisation"))
    now = admin.now()

    def work() -> dict[str, object]:
        with admin.db.session() as session:
            org = _booking_org(session, user, organisation_id)
            izs = {"izs": org.izs, "organisation": org.name}
            if end <= now:
                return {**izs, "past": True}
            return {**izs, **_share_json(share_use(session, admin.services.config, org,
                                                   max(start, now), end), org.id)}

    try:
        return web.json_response(await admin.run(work))
    except InvalidInput as exc:  # a range too long
        raise web.HTTPBadRequest(text=exc.message) from None
    except NotFound as exc:
        raise web.HTTPNotFound(text=exc.message) from None
    except Forbidden as exc:
        raise web.HTTPForbidden(text=exc.message) from None


def _refused(errors: dict[str, str], request: web.Request) -> web.Response:
    """The preview's errors in the page's language, as the form says them beside its
    fields (they were English on the Czech page)."""
    translate = translator(language(request))
    return web.json_response({"ok": False,
                              "errors": {name: translate(text) for name, text in errors.items()}})


@page(BOOKERS)
async def capacity(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    """What the form shows while a time is chosen: units needed and units free then.

    ``booking`` is the booking the change form changes: its times are in its zone and
    its organisation books, as saving takes them (the times were read as Prague's, so a
    booking in London was shown the capacity of another hour, and an operator's change
    form, whose organisation field is fixed, that of no organisation)."""
    q = request.query
    booking_id = parse_id(q["booking"]) if "booking" in q else None
    if "booking" in q and booking_id is None:
        return _refused({"date": "No such booking."}, request)
    parsed = booking_form.parse({**booking_form.blank(admin.now().date()), "title": "x",
                                 **{k: q.get(k, "") for k in ("date", "start", "end", *KINDS)}}, [])
    if parsed.schedule is None or parsed.participants is None:
        return _refused(parsed.errors, request)
    schedule, mix = parsed.schedule, parsed.participants
    organisation_id = parse_id(q.get("organisation_id", "")) or user.organisation_id
    now = admin.now()

    def work() -> dict[str, object]:
        with admin.db.session() as session:
            if booking_id is not None:
                booking, org = bookings.get_booking(session, booking_id)
                require_see_booking(user, org)
                times = dataclasses.replace(schedule, zone=booking.zone)
            else:
                org = org_info(session, organisation_id) if organisation_id else None
                if org is not None and user.role != "operator" and not can_see_booking(user, org):
                    raise Forbidden("forbidden", "not your organisation")
                times = schedule
            # The times as the booking takes them (expand: a time the clocks skip, a meeting
            # too long or too far ahead are refused), not replace(tzinfo=...), which made
            # 02:30 of the spring-forward night 03:30 and showed capacity for a time the
            # booking then refused as impossible_time.
            [occurrence], _ = expand(times, admin.services.config.limits, now)
            # A time already past: saving refuses a new booking, and a change of a single
            # meeting (a series keeps its meetings to come); the preview showed it as fitting.
            if booking_id is None:
                bookings.refuse_past_start(occurrence, now)
            elif q.get("repeat") == "none" and occurrence.start < now:
                raise InvalidInput("in_past", bookings.NO_FUTURE_OCCURRENCE)
            found = availability(session, admin.services.config, org, occurrence.start,
                                 occurrence.end, now, excluding_booking=booking_id)
            # The share and how much of it is booked then, beside the free figure.
            if org is not None:
                found["share"] = _share_json(
                    share_use(session, admin.services.config, org, occurrence.start,
                              occurrence.end, excluding_booking=booking_id), org.id)
            return found

    try:
        data = await admin.run(work)
    except RecurrenceError as exc:
        return _refused({FIELD_OF_CODE.get(exc.code, "date"): exc.message}, request)
    except SchedulerError as exc:
        return _refused({"date": exc.message}, request)
    free = min((s["free_units"] for s in data["segments"]), default=0)
    needed = mix.units(admin.services.config.unit_costs)
    return web.json_response({"ok": True, "needed_units": needed, "free_units": free,
                              "fits": needed <= free, "pool_units": data["pool_units"],
                              "quota_units": data["quota_units"], "share": data.get("share")})


def _callable_units(session: Any, organisations: list[int] | None) -> list[dict[str, Any]]:
    """Room units with a SIP address among ``organisations`` (None: all), for the form."""
    query = select(Endpoint.id, Endpoint.serial, Endpoint.site, Endpoint.sip_uri,
                   Endpoint.organisation_id, Organisation.name).join(Organisation,
                                           Organisation.id == Endpoint.organisation_id) \
        .where(Endpoint.sip_uri.is_not(None), Endpoint.sip_uri != "")
    if organisations is not None:
        query = query.where(Endpoint.organisation_id.in_(organisations))
    rows = session.execute(query.order_by(Organisation.name, Endpoint.serial)).all()
    owners = org_infos(session, {row.organisation_id for row in rows})
    # "within": the organisations a booking of which may call the unit (its own and
    # those above it), so that the form shows only those of the organisation chosen.
    return [{"id": row.id, "label": f"{row.site or row.serial} ({row.serial}, {row.name})",
             "sip_uri": row.sip_uri,
             "within": [row.organisation_id, *owners[row.organisation_id].ancestors]}
            for row in rows]


def _form_context(admin: Admin, user: Principal, organisation_id: int | None) -> dict[str, Any]:
    with admin.db.session() as session:
        # The units of the booking's organisation and those under it; an operator's new
        # booking names its organisation in the same form, so it sees every unit (the
        # scheduler refuses one of another organisation, next to this field).
        if organisation_id is not None:
            scope: list[int] | None = subtree_ids(session, organisation_id)
        elif user.role == "operator":
            scope = None
        else:
            scope = subtree_ids(session, user.organisation_id or -1)
        return {"organisations": _visible_orgs(session, user),
                "units": _callable_units(session, scope)}


async def _show_form(admin: Admin, request: web.Request, user: Principal, values: dict[str, str],
                     weekdays: list[str], errors: dict[str, str], *, booking_id: int | None = None,
                     refusal: dict[str, Any] | None = None, general: str = "",
                     status: int = 200) -> web.Response:
    if not values.get("organisation_id") and user.organisation_id is not None:
        values["organisation_id"] = str(user.organisation_id)
    context = await admin.run(_form_context, admin, user,
                              parse_id(values.get("organisation_id", "")))
    chosen = {int(v) for v in values.get("call_units", "").split(",") if v.isdigit()}
    return render(request, "booking_form.html", status=status, values=values, weekdays=weekdays,
                  errors=errors, booking_id=booking_id, refusal=refusal, general=general,
                  all_weekdays=booking_form.WEEKDAYS, kinds=KINDS,
                  priorities=("routine", "priority", "emergency") if user.role != "org_admin"
                  else ("routine", "priority"), chosen_units=chosen,
                  ends_on=booking_form.next_day_end(values), **context)


@page(BOOKERS)
async def new_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    values = booking_form.blank(admin.now().astimezone(TZ).date())
    for key in ("date", "start", "end"):
        if key in request.query:
            values[key] = request.query[key]
    return await _show_form(admin, request, user, values, [], {})


async def _submit(admin: Admin, request: web.Request, user: Principal,
                  booking: Booking | None) -> web.StreamResponse:
    data = await request.post()
    values = {k: v.strip() for k, v in data.items()
              if isinstance(v, str) and k not in ("weekday", "call_unit", "rule")}
    weekdays = [str(v) for v in data.getall("weekday", [])]
    booking_id = booking.id if booking is not None else None
    if booking is None:
        parsed = booking_form.parse(values, weekdays)
    else:
        # The times are the booking's zone's, as the form showed them; a rule the form
        # cannot show is the booking's, whatever came in for the fields it left out.
        kept = None if booking_form.representable(booking.rrule) else booking.rrule
        if kept is not None:
            values.update({"repeat": "kept", "rule": kept})
            weekdays = []
        values["zone"] = booking.zone
        parsed = booking_form.parse(values, weekdays, zone=booking.zone, kept_rule=kept)
    call_units = [parse_id(str(v)) for v in data.getall("call_unit", [])]
    if any(unit is None for unit in call_units):
        parsed.errors["call_units"] = "No such room unit."
    chosen = tuple(unit for unit in call_units if unit is not None)
    values["call_units"] = ",".join(map(str, chosen))  # checked again if the form returns
    org_raw = values.get("organisation_id", "")
    organisation_id = parse_id(org_raw) or user.organisation_id
    if organisation_id is None:
        parsed.errors["organisation_id"] = "Choose the organisation that books."
    if parsed.errors or parsed.schedule is None or parsed.participants is None:
        return await _show_form(admin, request, user, values, weekdays, parsed.errors,
                                booking_id=booking_id, status=422)
    now = admin.now()
    services = admin.services
    try:
        if booking_id is None:
            decision = await admin.run(
                bookings.create_booking, admin.db, services.config, user,
                bookings.BookingInput(organisation_id=organisation_id, title=values["title"],
                                      schedule=parsed.schedule, participants=parsed.participants,
                                      priority=values.get("priority", "routine"),
                                      description=values.get("description", ""),
                                      invitees=parsed.invitees, call_units=chosen),
                now, services.join_link)
            booking_id = decision.booking_id
        else:
            asked = parsed.schedule
            participants, invitees = parsed.participants, parsed.invitees

            def change(current: Booking) -> bookings.BookingChange:
                # The exceptions as the change reads the booking (update_booking), so
                # that one cancelled or moved meanwhile stays so.
                return bookings.BookingChange(
                    title=values["title"], description=values.get("description", ""),
                    invitees=invitees, participants=participants,
                    schedule=bookings.keeping_exceptions(current, asked), call_units=chosen)

            await admin.run(bookings.update_booking, admin.db, services.config, user, booking_id,
                            change, now, services.join_link)
    except CapacityRefused as refusal:
        return await _show_form(admin, request, user, values, weekdays, {}, booking_id=booking_id,
                                refusal={"message": refusal.message, **refusal.details}, status=409)
    except Forbidden as exc:
        return await _show_form(admin, request, user, values, weekdays,
                                {"organisation_id": exc.message}, booking_id=booking_id, status=403)
    except Conflict as exc:  # the booking kept changing under the change (update_booking)
        return await _show_form(admin, request, user, values, weekdays, {}, general=exc.message,
                                booking_id=booking_id, status=409)
    except (InvalidInput, NotFound) as exc:
        fieldname = "call_units" if exc.code in UNIT_ERRORS else FIELD_OF_CODE.get(exc.code)
        message = UNIT_ERRORS.get(exc.code, exc.message)
        return await _show_form(admin, request, user, values, weekdays,
                                {fieldname: message} if fieldname else {},
                                general="" if fieldname else exc.message, booking_id=booking_id,
                                status=422)
    await services.jobs.reschedule()  # the room opens on time for the new occurrences
    raise web.HTTPSeeOther(f"/admin/bookings/{booking_id}?saved=1")


@page(BOOKERS)
async def create(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    return await _submit(admin, request, user, None)


def _occurrence_start(admin: Admin, user: Principal, booking_id: int,
                      occurrence_id: int | None) -> datetime:
    """The local start of the booking's occurrence ``occurrence_id``, once ``user`` may
    change the booking (Forbidden before: NotFound only for a booking that does not
    exist, as on its page). Looked up first, an occurrence of another organisation's
    booking was 403 and any other id 404: an org admin could tell which ids are whose.
    The API asks the same in the same order (scheduler/api.py ``cancel_occurrence``)."""
    with admin.db.session() as session:
        _, org = bookings.get_booking(session, booking_id)
        require_change_booking(user, org)
        if occurrence_id is None:  # past any id a row can have
            raise NotFound("occurrence_not_found", "no such occurrence")
        return bookings.occurrence_local_start(session, booking_id, occurrence_id)


def _load(admin: Admin, user: Principal, booking_id: int) -> dict[str, Any]:
    with admin.db.session() as session:
        try:
            booking, org = bookings.get_booking(session, booking_id)
        except NotFound:
            raise web.HTTPNotFound(text=f"no booking {booking_id}") from None
        require_see_booking(user, org)
        occurrences = bookings.occurrences_of(session, booking.id)
        called = bookings.call_units_of(session, booking.id)
        units = [{"id": row.id, "label": f"{row.site or row.serial} ({row.serial})",
                  "sip_uri": row.sip_uri or ""}
                 for row in session.execute(select(Endpoint.id, Endpoint.serial, Endpoint.site,
                                                   Endpoint.sip_uri)
                                            .where(Endpoint.id.in_(called))
                                            .order_by(Endpoint.id))]
        return {"booking": booking, "organisation": org, "occurrences": occurrences,
                "call_units": units}


def _booking_id(request: web.Request) -> int:
    booking_id = parse_id(request.match_info["id"])
    if booking_id is None:  # past any id a row can have: no such booking
        raise web.HTTPNotFound(text="no such booking")
    return booking_id


async def _load_or_forbid(admin: Admin, request: web.Request,
                          user: Principal) -> dict[str, Any] | web.Response:
    try:
        return await admin.run(_load, admin, user, _booking_id(request))
    except Forbidden:
        return render(request, "forbidden.html", status=403)


@page(BOOKERS)
async def booking_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return await _show_booking(admin, request, user)


async def _show_booking(admin: Admin, request: web.Request, user: Principal, *,
                        error: str = "", status: int = 200) -> web.Response:
    """The booking's page; ``error``: the scheduler's refusal of what was asked there."""
    loaded = await _load_or_forbid(admin, request, user)
    if isinstance(loaded, web.Response):
        return loaded
    booking = loaded["booking"]
    now = admin.now()
    # The last occurrence to come has no button of its own: the scheduler refuses to
    # cancel it ("cancel the booking instead"), and that was a bare English error page.
    left = sum(1 for o in loaded["occurrences"] if o.state == "scheduled" and o.end_utc > now)
    # The occurrences in the booking's zone, as its "when" and its change form show them
    # (they were Prague's: a London booking's 9:00 was listed at 10:00, with no zone).
    return render(request, "booking.html", status=status, tz=ZoneInfo(booking.zone), now=now,
                  occurrences_left=left, error=error,
                  join_links={r: admin.services.join_link(booking.room_name, r, booking.izs)
                              for r in ("host", "guest")},
                  dial_in_number=dial_in.booking_number(booking.id),
                  sip_domain=request.url.host or "multipoint", **loaded)


@page(BOOKERS)
async def edit_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    loaded = await _load_or_forbid(admin, request, user)
    if isinstance(loaded, web.Response):
        return loaded
    if loaded["booking"].status == "cancelled":
        return await _show_booking(admin, request, user, error=CANCELLED, status=409)
    values, weekdays = booking_form.from_booking(loaded["booking"])
    values["zone"] = loaded["booking"].zone
    values["call_units"] = ",".join(str(unit["id"]) for unit in loaded["call_units"])
    return await _show_form(admin, request, user, values, weekdays, {},
                            booking_id=loaded["booking"].id)


@page(BOOKERS)
async def edit(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    loaded = await _load_or_forbid(admin, request, user)
    if isinstance(loaded, web.Response):
        return loaded
    if loaded["booking"].status == "cancelled":
        return await _show_booking(admin, request, user, error=CANCELLED, status=409)
    return await _submit(admin, request, user, loaded["booking"])


@page(BOOKERS)
async def cancel(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    booking_id = _booking_id(request)
    try:
        await admin.run(bookings.cancel_booking, admin.db, user, booking_id, admin.now(),
                        admin.services.join_link)
    except Forbidden:
        return render(request, "forbidden.html", status=403)
    except NotFound:
        raise web.HTTPNotFound(text=f"no booking {booking_id}") from None
    await admin.services.jobs.reschedule()
    raise web.HTTPSeeOther(f"/admin/bookings/{booking_id}")


@page(BOOKERS)
async def cancel_occurrence(admin: Admin, request: web.Request,
                            user: Principal) -> web.StreamResponse:
    """One occurrence of a series (scheduler.bookings.cancel_occurrence, which audits it)."""
    booking_id = _booking_id(request)
    occurrence_id = parse_id(request.match_info["occurrence_id"])
    try:
        local_start = await admin.run(_occurrence_start, admin, user, booking_id, occurrence_id)
        await admin.run(bookings.cancel_occurrence, admin.db, user, booking_id, local_start,
                        admin.now(), admin.services.join_link)
    except Forbidden:
        return render(request, "forbidden.html", status=403)
    except NotFound:
        raise web.HTTPNotFound(text=f"no occurrence {occurrence_id} of booking {booking_id}") \
            from None
    except InvalidInput as exc:  # the last one to come, one started...: said on its page
        return await _show_booking(admin, request, user, error=exc.message, status=422)
    await admin.services.jobs.reschedule()  # its room closes if it is open
    raise web.HTTPSeeOther(f"/admin/bookings/{booking_id}")


def routes(app: web.Application) -> None:
    app.router.add_get("/admin/bookings", calendar_page)
    app.router.add_get("/admin/bookings/events.json", events)
    app.router.add_get("/admin/bookings/capacity.json", capacity)
    app.router.add_get("/admin/bookings/share.json", share)
    app.router.add_get("/admin/bookings/new", new_page)
    app.router.add_post("/admin/bookings/new", create)
    app.router.add_get("/admin/bookings/{id:\\d+}", booking_page)
    app.router.add_get("/admin/bookings/{id:\\d+}/edit", edit_page)
    app.router.add_post("/admin/bookings/{id:\\d+}/edit", edit)
    app.router.add_post("/admin/bookings/{id:\\d+}/cancel", cancel)
    app.router.add_post("/admin/bookings/{id:\\d+}/occurrences/{occurrence_id:\\d+}/cancel",
                        cancel_occurrence)
