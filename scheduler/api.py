"""The REST API under /api/v1: organisations, nodes, quotas, bookings, availability,
standing bridges, usage and call records. docs/scheduler.md describes it for people;
/api/v1/openapi.json for machines (built from the same route table, scheduler/openapi.py).

Handlers parse and authorise, then run the blocking database work in a thread, so a
decision waiting for a row lock never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler import openapi
from scheduler.access import audit, auth
from scheduler.access.permissions import (
    Principal,
    can_see_booking,
    report_scope,
    require_bridges,
    require_see_booking,
)
from scheduler.api_models import (
    BookingIn,
    BookingPatch,
    BridgeIn,
    NodeIn,
    NodePatch,
    OccurrencePatch,
    OrganisationIn,
    ParticipantsIn,
    QuotaIn,
    RecurrenceIn,
    TokenIn,
    UserIn,
)
from scheduler.booking import bookings, bridges, calls, dial_in, invitations, notices
from scheduler.booking.availability import availability
from scheduler.booking.recurrence import (
    DEFAULT_ZONE,
    RecurrenceError,
    Schedule,
    parse_instant,
    parse_local,
    zone,
)
from scheduler.booking.units import ParticipantMix
from scheduler.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SchedulerError,
    Unauthenticated,
)
from scheduler.ids import MAX_ID, parse_id
from scheduler.media import nodes
from scheduler.models import Booking, BookingOccurrence, Organisation, StandingBridge, User
from scheduler.organisations import OrgInfo, org_info, organisation_json, subtree_ids
from scheduler.services import SchedulerServices

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
SESSION_COOKIE = "multipoint_session"
# Cookie-authenticated changes must carry this header: a cross-site form cannot send it.
CSRF_HEADER = "X-Multipoint-Request"
MAX_BODY = 256 * 1024
Handler = Callable[["Api", web.Request, Principal | None], Awaitable[web.StreamResponse]]


DEFAULT_PAGE = 100  # items of a list per page unless the caller asks for more
MAX_PAGE = 1000
CALLS_WINDOW = timedelta(days=92)  # call records asked for at once: a quarter


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: str = "any"  # who may call it, for the OpenAPI document
    body: type[BaseModel] | None = None
    query: tuple[str, ...] = ()
    public: bool = False
    status: int = 200  # what it answers when it succeeds (201 created, 204 nothing to say)
    paged: str | None = None  # a list: the key of its items (limit, offset, total, next)
    response: str | None = None  # the answer's schema (a page's items), scheduler/openapi.py

    @property
    def allowed_roles(self) -> frozenset[str] | None:
        """The roles that may call it (None: any signed-in role); the router checks it."""
        if self.roles == "any":
            return None
        return frozenset(role.strip() for role in self.roles.split(","))


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _error(exc: SchedulerError) -> web.Response:
    return _json(exc.as_json(), status=exc.status)


def _mix(value: ParticipantsIn) -> ParticipantMix:
    return ParticipantMix(**value.model_dump())


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput("invalid_parameter", f"{name} must be an integer",
                           parameter=name) from None
    if not -MAX_ID <= value <= MAX_ID:  # no id is that large (and the database refuses it)
        raise InvalidInput("invalid_parameter", f"{name} is out of range", parameter=name)
    return value


def _page_param(request: web.Request) -> tuple[int, int]:
    """``limit`` (1 to MAX_PAGE, default DEFAULT_PAGE) and ``offset`` (from 0) of a list."""
    limit = _int_param(request, "limit")
    offset = _int_param(request, "offset")
    limit = DEFAULT_PAGE if limit is None else limit
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_parameter", f"limit must be 1 to {MAX_PAGE}",
                           parameter="limit")
    if offset is not None and offset < 0:
        raise InvalidInput("invalid_parameter", "offset must be 0 or more", parameter="offset")
    return limit, offset or 0


def _page(request: web.Request, key: str, items: list[Any], total: int, limit: int,
          offset: int, **extra: object) -> web.Response:
    """One page of a list: its items, how many there are in all, and the next page's URL
    (None on the last page), so a client never mistakes a page for the whole list."""
    following = offset + len(items)
    next_url = str(request.rel_url.update_query(limit=limit, offset=following)) \
        if following < total else None
    return _json({**extra, key: items, "total": total, "limit": limit, "offset": offset,
                  "next": next_url})


def _zone_param(request: web.Request) -> ZoneInfo:
    """The query's time_zone (default Europe/Prague); an unknown one is the caller's error."""
    raw = request.query.get("time_zone", DEFAULT_ZONE)
    try:
        return zone(raw)
    except RecurrenceError as exc:
        raise SchedulerError(exc.code, f"time_zone: {exc.message}", parameter="time_zone") \
            from None


def _time_param(request: web.Request, name: str, default: datetime) -> datetime:
    tz = _zone_param(request)  # checked even when the time itself is left out
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return parse_instant(raw, tz, name)
    except RecurrenceError as exc:
        raise InvalidInput(exc.code, exc.message) from None


def _path_id(request: web.Request, name: str = "id") -> int:
    value = parse_id(request.match_info[name])
    if value is None:  # not a number, or one that no row can have
        raise NotFound("not_found", f"{request.match_info[name][:40]!r} is not an id")
    return value


class Api:
    def __init__(self, services: SchedulerServices) -> None:
        self.services = services
        self.db = services.db
        self.config = services.config

    # Plumbing --------------------------------------------------------------------------

    def _principal(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        now = self.services.clock()
        with self.db.session() as session:
            if header.startswith("Bearer "):
                principal = auth.authenticate_token(session, header[7:].strip())
                if principal is None:
                    raise Unauthenticated("bad_token", "the API token is not valid")
                return principal
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                principal = auth.authenticate_session(session, cookie, now)
                if principal is None:
                    raise Unauthenticated("session_expired", "the session has expired")
                if request.method not in ("GET", "HEAD") and CSRF_HEADER not in request.headers:
                    raise Unauthenticated("csrf", f"send the {CSRF_HEADER} header with changes")
                return principal
        raise Unauthenticated("unauthenticated",
                              "send 'Authorization: Bearer <API token>' or sign in")

    async def _body(self, request: web.Request, model: type[BaseModel]) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise PayloadTooLarge("body_too_large", f"the body may be at most {MAX_BODY} bytes")
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise PayloadTooLarge("body_too_large", f"the body may be at most {MAX_BODY} bytes")
        try:
            data = json.loads(raw or b"null")
        except RecursionError:  # e.g. 100,000 nested '[': no request of ours is that deep
            raise SchedulerError("body_too_deep", "the body's JSON is nested too deeply") \
                from None
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput("invalid_json", "the body is not valid JSON") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            fields = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                      for e in exc.errors(include_url=False, include_input=False)]
            first = fields[0] if fields else {"field": "body", "message": "invalid"}
            raise InvalidInput("invalid_input", f"{first['field']}: {first['message']}",
                               fields=fields) from None

    def wrap(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                principal = None
                if not route.public:
                    principal = await asyncio.to_thread(self._principal, request)
                    allowed = route.allowed_roles
                    if allowed is not None and principal.role not in allowed:
                        raise Forbidden("forbidden", f"the role {principal.role!r} may not "
                                        f"{route.summary[0].lower()}{route.summary[1:]}")
                return await route.handler(self, request, principal)
            except SchedulerError as exc:
                return _error(exc)
            except IntegrityError:
                return _error(Conflict("conflict", "this conflicts with existing data"))

        return handle

    @staticmethod
    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def _org(self, session: Session, organisation_id: int) -> OrgInfo:
        org = org_info(session, organisation_id)
        if org is None:
            raise NotFound("organisation_not_found", f"no organisation {organisation_id}")
        return org

    # Documents and identity ------------------------------------------------------------

    async def openapi_doc(self, request: web.Request, _: Principal | None) -> web.Response:
        return _json(openapi.document(ROUTES))

    async def me(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None
        return _json({"id": principal.user_id, "name": principal.name, "role": principal.role,
                      "organisation_id": principal.organisation_id, "email": principal.email})

    # Organisations ---------------------------------------------------------------------

    async def list_organisations(self, request: web.Request, _: Principal | None) -> web.Response:
        kind, parent = request.query.get("kind"), _int_param(request, "parent_id")
        limit, offset = _page_param(request)

        def work() -> list[dict[str, object]]:
            with self.db.session() as session:
                query = select(Organisation).order_by(Organisation.id)
                if kind:
                    query = query.where(Organisation.kind == kind)
                if parent is not None:
                    query = query.where(Organisation.parent_id == parent)
                return [organisation_json(org) for org in session.scalars(query)]

        rows = await self.run(work)
        return _page(request, "organisations", rows[offset:offset + limit], len(rows), limit,
                     offset)

    async def get_organisation(self, request: web.Request, _: Principal | None) -> web.Response:
        organisation_id = _path_id(request)

        def work() -> dict[str, object]:
            with self.db.session() as session:
                org = session.get(Organisation, organisation_id)
                if org is None:
                    raise NotFound("organisation_not_found", f"no organisation {organisation_id}")
                return organisation_json(org)

        return _json(await self.run(work))

    async def create_organisation(self, request: web.Request,
                                  principal: Principal | None) -> web.Response:
        assert principal is not None
        data: OrganisationIn = await self._body(request, OrganisationIn)

        def work() -> dict[str, object]:
            with self.db.write_session() as session:
                if data.parent_id is not None:
                    self._org(session, data.parent_id)
                org = Organisation(name=data.name, kind=data.kind, parent_id=data.parent_id,
                                   code=data.code, email=data.email)
                session.add(org)
                session.flush()
                audit.record(session, principal, "organisation.create", f"organisation:{org.id}",
                             {"name": data.name, "kind": data.kind})
                return organisation_json(org)

        return _json(await self.run(work), status=201)

    # Nodes and quotas ------------------------------------------------------------------

    async def list_nodes(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None

        limit, offset = _page_param(request)

        def work() -> list[dict[str, object]]:
            with self.db.session() as session:
                return nodes.nodes_json(session, self.config)

        rows = await self.run(work)
        return _page(request, "nodes", rows[offset:offset + limit], len(rows), limit, offset)

    async def register_node(self, request: web.Request,
                            principal: Principal | None) -> web.Response:
        assert principal is not None
        data: NodeIn = await self._body(request, NodeIn)
        node_id = await self.run(functools.partial(
            nodes.register_node, self.db, data.name, data.workers,
            data.capacity_units or self.config.worker_capacity_units, self.services.clock(),
            actor=principal))
        return _json({"id": node_id}, status=201)

    async def patch_node(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None
        node_id = _path_id(request)
        data: NodePatch = await self._body(request, NodePatch)
        await self.run(nodes.set_node_enabled, self.db, node_id, data.enabled, principal)
        return _json({"id": node_id, "enabled": data.enabled})

    async def list_quotas(self, request: web.Request, _: Principal | None) -> web.Response:
        def work() -> dict[str, object]:
            with self.db.session() as session:
                return nodes.quotas_json(session, self.config)

        return _json(await self.run(work))

    async def put_quota(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None
        organisation_id = _path_id(request)
        data: QuotaIn = await self._body(request, QuotaIn)
        await self.run(nodes.set_quota, self.db, self.config, organisation_id,
                       data.share_percent, principal)
        return _json({"organisation_id": organisation_id, "share_percent": data.share_percent})

    # Bookings --------------------------------------------------------------------------

    def _schedule(self, start: str, end: str, time_zone: str,
                  recurrence: Any) -> Schedule:
        try:
            tz = zone(time_zone)
            local_start = parse_local(start, tz, "start")
            local_end = parse_local(end, tz, "end")
            exdates = tuple(_exception(d, tz, local_start)
                            for d in (recurrence.exdates if recurrence else ()))
        except RecurrenceError as exc:
            raise InvalidInput(exc.code, exc.message) from None
        return Schedule(local_start, local_end, time_zone,
                        recurrence.rrule if recurrence else None, exdates,
                        bool(recurrence and recurrence.skip_public_holidays))

    def _moved_exceptions(self, booking: Booking, start: str, time_zone: str) -> list[str]:
        """The series' exceptions moved with its start, so they leave out the same
        occurrences (a series moved from Monday 9:00 to Tuesday 10:00 moves them so)."""
        try:
            new_start = parse_local(start, zone(time_zone), "start")
        except RecurrenceError as exc:
            raise InvalidInput(exc.code, exc.message) from None
        shift = new_start - booking.local_start
        return [(datetime.fromisoformat(d) + shift).isoformat() for d in booking.exdates]

    def booking_json(self, session: Session, booking: Booking, *,
                     occurrences: bool = True) -> dict[str, object]:
        tz = ZoneInfo(booking.zone)
        rows = bookings.occurrences_of(session, booking.id, limit=10_000)
        now = self.services.clock()
        upcoming = next((o for o in rows if o.state == "scheduled" and o.end_utc > now), None)
        data: dict[str, object] = {
            "id": booking.id, "uid": booking.uid, "sequence": booking.sequence,
            "organisation_id": booking.organisation_id, "title": booking.title,
            "description": booking.description, "priority": booking.priority,
            "izs": booking.izs, "status": booking.status, "time_zone": booking.zone,
            "start": booking.local_start.isoformat(timespec="minutes"),
            "end": booking.local_end.isoformat(timespec="minutes"),
            "recurrence": ({"rrule": booking.rrule, "exdates": booking.exdates,
                            "skip_public_holidays": booking.skip_public_holidays}
                           if booking.rrule else None),
            "participants": booking.participants, "units": booking.units,
            "invitees": booking.invitees, "room": booking.room_name,
            "call_units": bookings.call_units_of(session, booking.id),
            "join_links": {role: self.services.join_link(booking.room_name, role, booking.izs)
                           for role in ("host", "guest")},
            "dial_in": {"number": dial_in.booking_number(booking.id), "pin": booking.dial_in_pin},
            "occurrence_count": sum(o.state == "scheduled" for o in rows),
            "displaced_count": sum(o.state == "displaced" for o in rows),
            "next_occurrence": (upcoming.start_utc.astimezone(tz).isoformat()
                                if upcoming else None),
            "created_at": booking.created_at.isoformat(),
            "updated_at": booking.updated_at.isoformat(),
        }
        if occurrences:
            data["occurrences"] = [
                {"id": o.id, "start": o.start_utc.astimezone(tz).isoformat(),
                 "end": o.end_utc.astimezone(tz).isoformat(), "state": o.state,
                 "displaced_by": o.displaced_by} for o in rows[:500]]
        return data

    def _seen_booking(self, principal: Principal, booking_id: int) -> Booking:
        """The booking, if ``principal`` may see it (its organisation's, or below)."""
        with self.db.session() as session:
            booking, org = bookings.get_booking(session, booking_id)
            require_see_booking(principal, org)
            return booking

    def _read_booking(self, principal: Principal, booking_id: int) -> dict[str, object]:
        with self.db.session() as session:
            booking, org = bookings.get_booking(session, booking_id)
            require_see_booking(principal, org)
            return self.booking_json(session, booking)

    async def list_bookings(self, request: web.Request,
                            principal: Principal | None) -> web.Response:
        assert principal is not None
        now = self.services.clock()
        start = _time_param(request, "from", now)
        end = _time_param(request, "to", start + timedelta(days=31))
        organisation_id = _int_param(request, "organisation_id")
        if end <= start or end - start > timedelta(days=400):
            raise InvalidInput("invalid_interval", "'to' must be after 'from', within 400 days")
        limit, offset = _page_param(request)

        def work() -> tuple[list[dict[str, object]], int]:
            with self.db.session() as session:
                o = BookingOccurrence
                query = select(Booking).where(Booking.id.in_(
                    select(o.booking_id).where(o.start_utc < end, o.end_utc > start,
                                               o.state != "replaced")))
                if organisation_id is not None:
                    query = query.where(Booking.organisation_id == organisation_id)
                if principal.role != "operator":  # what can_see_booking allows, in SQL
                    scope = subtree_ids(session, principal.organisation_id or -1)
                    query = query.where(Booking.organisation_id.in_(scope))
                total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
                result = []
                for booking in session.scalars(query.order_by(Booking.local_start, Booking.id)
                                               .limit(limit).offset(offset)):
                    org = org_info(session, booking.organisation_id)
                    if org is not None and can_see_booking(principal, org):
                        result.append(self.booking_json(session, booking, occurrences=False))
                return result, total

        items, total = await self.run(work)
        return _page(request, "bookings", items, total, limit, offset)

    async def create_booking(self, request: web.Request,
                             principal: Principal | None) -> web.Response:
        assert principal is not None
        data: BookingIn = await self._body(request, BookingIn)
        organisation_id = data.organisation_id or principal.organisation_id
        if organisation_id is None:
            raise InvalidInput("organisation_required", "say which organisation books")
        schedule = self._schedule(data.start, data.end, data.time_zone, data.recurrence)
        booking_input = bookings.BookingInput(
            organisation_id=organisation_id, title=data.title, schedule=schedule,
            participants=_mix(data.participants), priority=data.priority,
            description=data.description, invitees=tuple(data.invitees),
            call_units=tuple(data.call_units))
        decision = await self.run(bookings.create_booking, self.db, self.config, principal,
                                  booking_input, self.services.clock(), self.services.join_link)
        await self.services.jobs.reschedule()
        body = await self.run(self._read_booking, principal, decision.booking_id)
        body["displaced_occurrences"] = decision.displaced
        body["skipped_holidays"] = [d.isoformat() for d in decision.skipped_holidays]
        return _json(body, status=201)

    async def get_booking(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None
        return _json(await self.run(self._read_booking, principal, _path_id(request)))

    async def patch_booking(self, request: web.Request,
                            principal: Principal | None) -> web.Response:
        assert principal is not None
        booking_id = _path_id(request)
        data: BookingPatch = await self._body(request, BookingPatch)
        await self.run(self._seen_booking, principal, booking_id)  # 404 for one not seen

        def change(booking: Booking) -> bookings.BookingChange:
            # What the PATCH leaves out is the booking's as the change reads it, so that
            # it does not undo a change that committed meanwhile (update_booking).
            schedule = None
            if any(v is not None for v in (data.start, data.end, data.time_zone,
                                           data.recurrence)) or data.remove_recurrence:
                recurrence = data.recurrence
                if recurrence is None and booking.rrule and not data.remove_recurrence:
                    exdates = booking.exdates
                    if data.start is not None:
                        exdates = self._moved_exceptions(booking, data.start,
                                                         data.time_zone or booking.zone)
                    recurrence = RecurrenceIn.model_construct(
                        rrule=booking.rrule, exdates=exdates,
                        skip_public_holidays=booking.skip_public_holidays)
                schedule = self._schedule(
                    data.start or booking.local_start.isoformat(),
                    data.end or booking.local_end.isoformat(),
                    data.time_zone or booking.zone, recurrence)
            return bookings.BookingChange(
                title=data.title, description=data.description,
                invitees=tuple(data.invitees) if data.invitees is not None else None,
                participants=_mix(data.participants) if data.participants else None,
                schedule=schedule,
                call_units=tuple(data.call_units) if data.call_units is not None else None)

        decision = await self.run(bookings.update_booking, self.db, self.config, principal,
                                  booking_id, change, self.services.clock(),
                                  self.services.join_link)
        await self.services.jobs.reschedule()
        body = await self.run(self._read_booking, principal, booking_id)
        body["displaced_occurrences"] = decision.displaced
        return _json(body)

    async def cancel_booking(self, request: web.Request,
                             principal: Principal | None) -> web.Response:
        assert principal is not None
        booking_id = _path_id(request)
        await self.run(bookings.cancel_booking, self.db, principal, booking_id,
                       self.services.clock(), self.services.join_link)
        await self.services.jobs.reschedule()
        return _json(await self.run(self._read_booking, principal, booking_id))

    async def cancel_occurrence(self, request: web.Request,
                                principal: Principal | None) -> web.Response:
        assert principal is not None
        booking_id = _path_id(request)
        tz = zone((await self.run(self._seen_booking, principal, booking_id)).zone)
        try:
            local_start = parse_local(request.match_info["start"], tz, "start")
        except RecurrenceError as exc:
            raise InvalidInput(exc.code, exc.message) from None
        await self.run(bookings.cancel_occurrence, self.db, principal, booking_id, local_start,
                       self.services.clock(), self.services.join_link)
        await self.services.jobs.reschedule()
        return _json(await self.run(self._read_booking, principal, booking_id))

    async def move_occurrence(self, request: web.Request,
                              principal: Principal | None) -> web.Response:
        assert principal is not None
        booking_id = _path_id(request)
        data: OccurrencePatch = await self._body(request, OccurrencePatch)
        tz = zone((await self.run(self._seen_booking, principal, booking_id)).zone)
        try:
            local_start = parse_local(request.match_info["start"], tz, "occurrence")
            start = parse_local(data.start, tz, "start")
            end = parse_local(data.end, tz, "end") if data.end is not None else None
        except RecurrenceError as exc:
            raise InvalidInput(exc.code, exc.message) from None
        decision = await self.run(bookings.move_occurrence, self.db, self.config, principal,
                                  booking_id, local_start, start, end, self.services.clock(),
                                  self.services.join_link)
        await self.services.jobs.reschedule()  # the old room closes, the new one opens
        body = await self.run(self._read_booking, principal, booking_id)
        body["displaced_occurrences"] = decision.displaced
        return _json(body)

    async def invitation(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None
        booking_id = _path_id(request)

        def work() -> bytes:
            with self.db.session() as session:
                booking, org = bookings.get_booking(session, booking_id)
                require_see_booking(principal, org)
                link = self.services.join_link(booking.room_name, "guest", booking.izs)
                now = self.services.clock()
                if booking.status == "cancelled":
                    return invitations.cancellation(booking, now, link)
                rows = session.scalars(select(BookingOccurrence)
                                       .where(BookingOccurrence.booking_id == booking.id)).all()
                return invitations.invitation(booking, notices.active_local_starts(booking, rows),
                                              now, link, notices.moved_occurrences(booking, rows))

        body = await self.run(work)
        method = "CANCEL" if b"METHOD:CANCEL" in body else "REQUEST"
        return web.Response(body=body, headers={
            "Content-Type": f"text/calendar; charset=utf-8; method={method}",
            "Content-Disposition": f'attachment; filename="booking-{booking_id}.ics"'})

    async def get_availability(self, request: web.Request,
                               principal: Principal | None) -> web.Response:
        assert principal is not None
        now = self.services.clock()
        start = _time_param(request, "from", now)
        end = _time_param(request, "to", start + timedelta(days=7))
        organisation_id = _int_param(request, "organisation_id") or principal.organisation_id
        time_zone = _zone_param(request).key

        def work() -> dict[str, object]:
            with self.db.session() as session:
                org = self._org(session, organisation_id) if organisation_id else None
                return availability(session, self.config, org, start, end, now, time_zone)

        return _json(await self.run(work))

    # Standing bridges ------------------------------------------------------------------

    async def list_bridges(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None

        def work() -> list[dict[str, object]]:
            with self.db.session() as session:
                scope = None if principal.role == "operator" else \
                    subtree_ids(session, principal.organisation_id or -1)
                return [bridges.bridge_json(b, self.services.join_link)
                        for b in bridges.bridges(session, scope)]

        limit, offset = _page_param(request)
        rows = await self.run(work)
        return _page(request, "bridges", rows[offset:offset + limit], len(rows), limit, offset)

    async def create_bridge(self, request: web.Request,
                            principal: Principal | None) -> web.Response:
        assert principal is not None
        data: BridgeIn = await self._body(request, BridgeIn)
        organisation_id = data.organisation_id or principal.organisation_id
        if organisation_id is None:
            raise InvalidInput("organisation_required", "say which organisation owns the bridge")

        def work() -> dict[str, object]:
            with self.db.write_session() as session:
                org = self._org(session, organisation_id)
                require_bridges(principal, org)
                bridge = bridges.create_bridge(session, self.config, org, data.name,
                                               _mix(data.participants))
                audit.record(session, principal, "bridge.create", f"bridge:{bridge.id}",
                             {"name": data.name})
                return bridges.bridge_json(bridge, self.services.join_link)

        return _json(await self.run(work), status=201)

    async def delete_bridge(self, request: web.Request,
                            principal: Principal | None) -> web.Response:
        assert principal is not None
        bridge_id = _path_id(request)

        def work() -> None:
            with self.db.write_session() as session:
                bridge = session.get(StandingBridge, bridge_id)
                if bridge is None or not bridge.active:
                    raise NotFound("bridge_not_found", f"no standing bridge {bridge_id}")
                require_bridges(principal, self._org(session, bridge.organisation_id))
                bridges.switch_off(session, bridge)
                audit.record(session, principal, "bridge.switch_off", f"bridge:{bridge.id}",
                             {"name": bridge.name})

        await self.run(work)
        await self.services.jobs.reschedule()  # its room, if open, closes now
        return web.Response(status=204)

    # Reports ---------------------------------------------------------------------------

    def _report_org(self, request: web.Request, principal: Principal) -> int | None:
        asked = _int_param(request, "organisation_id")
        scope = report_scope(principal)
        if scope is None:
            return asked
        if asked is not None and asked != scope:
            raise Forbidden("forbidden", "you see only your own organisation's reports")
        return scope

    async def usage(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None
        now = self.services.clock()
        start = _time_param(request, "from", now - timedelta(days=30))
        end = _time_param(request, "to", now)
        # The days of usage (Prague's) that the range's ends fall on.
        first, last = calls.usage_day(start), calls.usage_day(end)
        organisation_id = self._report_org(request, principal)

        def work() -> list[dict[str, object]]:
            with self.db.session() as session:
                return calls.usage(session, first, last, organisation_id)

        rows = await self.run(work)
        if request.query.get("format") == "csv":
            return self._csv(calls.to_csv(rows, ["organisation_id", "calls", "participant_hours",
                                                 "booked_unit_hours"]), "usage.csv")
        limit, offset = _page_param(request)
        return _page(request, "usage", rows[offset:offset + limit], len(rows), limit, offset,
                     **{"from": first.isoformat(), "to": last.isoformat()})

    async def call_records(self, request: web.Request,
                           principal: Principal | None) -> web.Response:
        assert principal is not None
        now = self.services.clock()
        start = _time_param(request, "from", now - timedelta(days=7))
        end = _time_param(request, "to", now)
        if end <= start:
            raise InvalidInput("invalid_interval", "'to' must be after 'from'")
        # The CSV is every call of the window, so the window is what is bounded.
        if end - start > CALLS_WINDOW:
            raise InvalidInput("range_too_long",
                               f"ask for at most {CALLS_WINDOW.days} days of calls at once")
        organisation_id = self._report_org(request, principal)
        csv_asked = request.query.get("format") == "csv"
        limit, offset = (None, 0) if csv_asked else _page_param(request)

        def work() -> tuple[list[dict[str, object]], int]:
            with self.db.session() as session:
                rows = [calls.call_record_json(r, now) for r in calls.call_records(
                    session, start, end, organisation_id, limit, offset)]
                total = len(rows) if csv_asked else \
                    calls.count_call_records(session, start, end, organisation_id)
                return rows, total

        rows, total = await self.run(work)
        if csv_asked:
            return self._csv(calls.to_csv(rows, ["id", "room", "booking_id", "organisation_id",
                                                 "participant", "kind", "joined_at", "left_at",
                                                 "duration_s"]), "calls.csv")
        assert limit is not None
        return _page(request, "calls", rows, total, limit, offset)

    @staticmethod
    def _csv(text: str, filename: str) -> web.Response:
        return web.Response(text=text, content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    # Users and tokens ------------------------------------------------------------------

    async def create_user(self, request: web.Request, principal: Principal | None) -> web.Response:
        assert principal is not None
        data: UserIn = await self._body(request, UserIn)

        def work() -> dict[str, object]:
            with self.db.write_session() as session:
                user = auth.create_user(session, data.name, data.role, data.organisation_id,
                                        data.email)
                audit.record(session, principal, "user.create", f"user:{user.name}",
                             {"role": data.role, "organisation_id": data.organisation_id})
                return {"id": user.id, "name": user.name, "role": user.role,
                        "organisation_id": user.organisation_id, "email": user.email}

        return _json(await self.run(work), status=201)

    async def create_token(self, request: web.Request,
                           principal: Principal | None) -> web.Response:
        assert principal is not None
        user_id = _path_id(request)
        data: TokenIn = await self._body(request, TokenIn)

        def work() -> str:
            with self.db.write_session() as session:
                user = session.get(User, user_id)
                if user is None:
                    raise NotFound("user_not_found", f"no user {user_id}")
                audit.record(session, principal, "user.token", f"user:{user.name}",
                             {"label": data.label})  # never the token itself
                return auth.issue_api_token(session, user_id, data.label)

        return _json({"token": await self.run(work)}, status=201)


P = PREFIX
ROUTES: tuple[Route, ...] = (
    Route("GET", f"{P}/openapi.json", Api.openapi_doc, "This document", public=True),
    Route("GET", f"{P}/me", Api.me, "Who the caller is", response="Me"),
    Route("GET", f"{P}/organisations", Api.list_organisations, "List organisations",
          query=("kind", "parent_id"), paged="organisations", response="Organisation"),
    Route("POST", f"{P}/organisations", Api.create_organisation, "Create an organisation",
          roles="operator", body=OrganisationIn, status=201, response="Organisation"),
    Route("GET", f"{P}/organisations/{{id}}", Api.get_organisation, "One organisation",
          response="Organisation"),
    Route("GET", f"{P}/nodes", Api.list_nodes, "Media nodes, workers and their load",
          roles="operator", paged="nodes", response="Node"),
    Route("POST", f"{P}/nodes", Api.register_node, "Register a media node (or refresh it)",
          roles="operator", body=NodeIn, status=201, response="NodeRegistered"),
    Route("PATCH", f"{P}/nodes/{{id}}", Api.patch_node, "Enable or disable a media node",
          roles="operator", body=NodePatch, response="NodeState"),
    Route("GET", f"{P}/quotas", Api.list_quotas, "The pool, the IZS reserve and the shares",
          response="Quotas"),
    Route("PUT", f"{P}/quotas/{{id}}", Api.put_quota,
          "Set an organisation's guaranteed share (0 removes it)", roles="operator",
          body=QuotaIn, response="Quota"),
    Route("GET", f"{P}/bookings", Api.list_bookings,
          "Bookings with an occurrence in [from, to) that the caller may see",
          roles="operator, org_admin, izs_operator",
          query=("from", "to", "time_zone", "organisation_id"), paged="bookings", response="Booking"),
    Route("POST", f"{P}/bookings", Api.create_booking,
          "Book: every occurrence is admitted or the whole booking is refused (409)",
          roles="operator, org_admin, izs_operator", body=BookingIn, status=201, response="Booking"),
    Route("GET", f"{P}/bookings/{{id}}", Api.get_booking, "One booking with its occurrences",
          roles="operator, org_admin, izs_operator", response="Booking"),
    Route("PATCH", f"{P}/bookings/{{id}}", Api.patch_booking,
          "Change a booking; a new time or size is admitted again",
          roles="operator, org_admin, izs_operator", body=BookingPatch, response="Booking"),
    Route("DELETE", f"{P}/bookings/{{id}}", Api.cancel_booking, "Cancel a booking",
          roles="operator, org_admin, izs_operator", response="Booking"),
    Route("DELETE", f"{P}/bookings/{{id}}/occurrences/{{start}}", Api.cancel_occurrence,
          "Cancel one occurrence of a series, named by its local start (2026-12-14T10:00): "
          "it becomes an exception of the series", roles="operator, org_admin, izs_operator",
          response="Booking"),
    Route("PATCH", f"{P}/bookings/{{id}}/occurrences/{{start}}", Api.move_occurrence,
          "Move one occurrence of a series, named by its local start; the new time is "
          "admitted like a new booking (409)", roles="operator, org_admin, izs_operator",
          body=OccurrencePatch, response="Booking"),
    Route("GET", f"{P}/bookings/{{id}}/invitation.ics", Api.invitation,
          "The booking as an iCalendar invitation", roles="operator, org_admin, izs_operator"),
    Route("GET", f"{P}/availability", Api.get_availability,
          "Free capacity over [from, to) as an organisation sees it",
          query=("from", "to", "time_zone", "organisation_id"), response="Availability"),
    Route("GET", f"{P}/bridges", Api.list_bridges, "Standing IZS bridges",
          roles="operator, izs_operator", paged="bridges", response="Bridge"),
    Route("POST", f"{P}/bridges", Api.create_bridge, "Create a standing IZS bridge",
          roles="operator, izs_operator", body=BridgeIn, status=201, response="Bridge"),
    Route("DELETE", f"{P}/bridges/{{id}}", Api.delete_bridge, "Switch a standing bridge off",
          roles="operator, izs_operator", status=204),
    Route("GET", f"{P}/usage", Api.usage, "Usage per organisation (JSON or CSV)",
          query=("from", "to", "time_zone", "organisation_id", "format"), paged="usage"),
    Route("GET", f"{P}/calls", Api.call_records, "Call records (JSON or CSV)",
          query=("from", "to", "time_zone", "organisation_id", "format"), paged="calls"),
    Route("POST", f"{P}/users", Api.create_user, "Create a user", roles="operator",
          body=UserIn, status=201, response="User"),
    Route("POST", f"{P}/users/{{id}}/tokens", Api.create_token,
          "Issue an API token for a user (shown once)", roles="operator", body=TokenIn,
          status=201, response="Token"),
)


SERVICES = web.AppKey("scheduler", SchedulerServices)
API_PATHS = "/api/"
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
HTTP_ERROR_MESSAGES = {
    404: "no such API resource; see /api/v1/openapi.json",
    405: "this resource does not take that method",
    413: f"the body may be at most {MAX_BODY} bytes",
}


def _exception(value: object, tz: ZoneInfo, series_start: datetime) -> datetime:
    """An exception of a series as its occurrence's local start; a date alone
    (2026-12-24) means that day's occurrence, at the series' time of day."""
    if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
        try:
            return datetime.combine(date.fromisoformat(value), series_start.time())
        except ValueError:
            pass  # not a date after all: parse_local names the problem
    return parse_local(value, tz, "recurrence.exdates")


@web.middleware
async def api_errors(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
    """Everything under /api/ answers in the API's JSON: unknown routes (404), wrong
    methods (405, with Allow), bodies over aiohttp's limit (413) and anything unexpected
    (500, logged here, never shown). Its answers are never cached: they are the caller's
    own data, and some carry join links (tokens)."""
    if not request.path.startswith(API_PATHS):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_ERROR_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
        message = HTTP_ERROR_MESSAGES.get(exc.status, exc.reason)
        response = _json({"error": {"code": code, "message": message}}, status=exc.status)
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except Exception:
        logger.exception("API request %s %s failed", request.method, request.path)
        response = _json({"error": {"code": "internal_error",
                                    "message": "the server could not handle this request"}},
                         status=500)
    response.headers["Cache-Control"] = "no-store"
    return response


def setup_api(app: web.Application, services: SchedulerServices) -> None:
    """Register every /api/v1 route, and start/stop the scheduler's jobs with the app.

    The services stay reachable as ``app[SERVICES]`` (signaling's admission at join).
    """
    app[SERVICES] = services
    app.middlewares.append(api_errors)
    api = Api(services)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, api.wrap(route))

    async def on_startup(_: web.Application) -> None:
        await services.start()

    async def on_cleanup(_: web.Application) -> None:
        await services.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
