"""The REST API through a real HTTP server: the booking flow, roles, bad input, exports."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from icalendar import Calendar
from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session

from scheduler.access.auth import create_session, issue_api_token
from scheduler.api import setup_api
from scheduler.booking import bookings
from scheduler.booking.dial_in import DialIn, booking_number, bridge_number, dial_in
from scheduler.booking.recurrence import Schedule
from scheduler.db import Database
from scheduler.models import (
    AuditEntry,
    Booking,
    BookingOccurrence,
    CallRecord,
    Notification,
    Organisation,
)
from scheduler.services import SchedulerServices
from tests.scheduler.conftest import NOW, FakeClock, World, join_link, make_world

Client = TestClient  # type: ignore[type-arg]


class Api:
    def __init__(self, client: Client, tokens: dict[str, str], services: SchedulerServices,
                 world: World, clock: FakeClock) -> None:
        self.client, self.tokens, self.services = client, tokens, services
        self.world, self.clock = world, clock

    async def call(self, who: str | None, method: str, path: str, body: object = None,
                   raw: bytes | None = None):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        kwargs: dict[str, object] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        return await self.client.request(method, "/api/v1" + path, **kwargs)

    def count(self, model: type) -> int:
        with self.world.db.session() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@contextlib.asynccontextmanager
async def serving(world: World) -> AsyncIterator[Api]:
    """The API of ``world`` through a real HTTP server, on a clock the test moves."""
    clock = FakeClock(NOW)
    services = SchedulerServices(world.db, world.config, join_link=join_link, clock=clock,
                                 run_jobs=False)
    app = web.Application()
    setup_api(app, services)
    with world.db.session() as session:
        tokens = {name: issue_api_token(session, principal.user_id)
                  for name, principal in world.users.items()}
    async with TestClient(TestServer(app)) as client:
        yield Api(client, tokens, services, world, clock)


@pytest.fixture
async def api(world: World) -> AsyncIterator[Api]:
    async with serving(world) as served:
        yield served


def meeting(organisation: int | None = None, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {"title": "Porada starostů", "start": "2026-12-03T10:00",
                               "end": "2026-12-03T11:00", "participants": {"hd": 4, "audio": 2}}
    if organisation is not None:
        body["organisation_id"] = organisation
    body.update(changes)
    return body


async def test_orp_admin_books_a_recurring_meeting_that_opens_and_admits(api: Api) -> None:
    body = meeting(recurrence={"rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=4",
                               "skip_public_holidays": True},
                   start="2026-12-21T10:00", end="2026-12-21T11:30",
                   invitees=["starosta@mesto.cz"])
    response = await api.call("admin_orp_a", "POST", "/bookings", body)
    assert response.status == 201, await response.text()
    booking = await response.json()
    # Mondays 21 Dec, 28 Dec, 4 Jan, 11 Jan: none is a holiday (Christmas is 24-26 Dec).
    assert booking["organisation_id"] == api.world.orp_a
    assert booking["occurrence_count"] == 4 and booking["units"] == 4 * 11 + 2 * 2
    assert booking["join_links"]["guest"].startswith("http://multipoint.test/call/")
    # Room units dial its number and key in its PIN (signaling/sip/units.py).
    assert booking["dial_in"]["number"] == booking_number(booking["id"])
    with api.services.db.read_session() as session:
        assert dial_in(session, booking["dial_in"]["number"]) == DialIn(booking["room"],
                                                                        booking["dial_in"]["pin"])
        assert dial_in(session, booking_number(booking["id"] + 1)) is None
        assert dial_in(session, "5" + booking["dial_in"]["number"][1:]) is None
        assert dial_in(session, booking["room"]) is None
    assert len(booking["dial_in"]["pin"]) == 6 and booking["dial_in"]["pin"].isdigit()

    response = await api.call("admin_orp_a", "GET", f"/bookings/{booking['id']}/invitation.ics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/calendar")
    calendar = Calendar.from_ical(await response.read())
    assert calendar["METHOD"] == "REQUEST"
    event = next(iter(calendar.walk("VEVENT")))
    assert str(event["UID"]) == booking["uid"]
    assert event["DTSTART"].params["TZID"] == "Europe/Prague"
    assert event["RRULE"]["FREQ"] == ["WEEKLY"]
    assert booking["join_links"]["guest"] in str(event["DESCRIPTION"])
    assert [tz["TZID"] for tz in calendar.walk("VTIMEZONE")] == ["Europe/Prague"]

    # 21 Dec 10:00 Prague is 09:00 UTC; the room opens ten minutes before.
    api.clock.now = booking_time = NOW + timedelta(days=21, minutes=52)
    await api.services.jobs.tick()
    decision = api.services.admit_join(booking["room"], now=booking_time)
    assert decision.allowed and decision.worker_id is not None


async def test_refusal_is_409_with_the_occurrence_and_nearest_slots(api: Api) -> None:
    full = meeting(api.world.izs, participants={"hd": 54})  # 594: 206 left for region A
    assert (await api.call("izs", "POST", "/bookings", full)).status == 201
    response = await api.call("admin_a", "POST", "/bookings",
                              meeting(participants={"hd": 30}))
    assert response.status == 409
    error = (await response.json())["error"]
    assert error["code"] == "capacity_exceeded"
    assert error["conflicts"][0]["occurrence"] == "2026-12-03 10:00"
    assert error["conflicts"][0]["available_units"] == 206
    # The nearest hours either side of the IZS meeting (10:00-11:00).
    assert [s["start"][11:] for s in error["suggestions"]] == ["09:00", "11:00", "11:15"]


async def test_availability_shows_what_is_left(api: Api) -> None:
    await api.call("admin_a", "POST", "/bookings", meeting(participants={"hd": 10}))
    response = await api.call("admin_orp_a", "GET",
                              "/availability?from=2026-12-03T09:00&to=2026-12-03T12:00")
    data = await response.json()
    assert response.status == 200 and data["pool_units"] == 1000
    assert [(s["start"][11:16], s["free_units"], s["own_used_units"])
            for s in data["segments"]] == [("09:00", 600, 0), ("10:00", 490, 110),
                                           ("11:00", 600, 0)]


async def test_every_role_is_refused_what_it_must_not_do(api: Api) -> None:
    world = api.world
    created = await api.call("admin_orp_b", "POST", "/bookings", meeting())
    assert created.status == 201
    other = (await created.json())["id"]
    izs_booking = (await (await api.call("izs", "POST", "/bookings", meeting())).json())["id"]
    before = (api.count(Booking), api.count(BookingOccurrence), api.count(Organisation))
    forbidden: dict[str | None, list[tuple[str, str, object]]] = {
        "coordinator": [
            ("POST", "/bookings", meeting(world.region_a)),
            ("GET", "/bookings", None),
            ("GET", f"/bookings/{other}", None),
            ("DELETE", f"/bookings/{other}", None),
            ("GET", "/nodes", None),
            ("POST", "/nodes", {"name": "n2", "workers": 2}),
            ("PUT", f"/quotas/{world.region_a}", {"share_percent": 50}),
            ("GET", "/bridges", None),
            ("POST", "/organisations", {"name": "X", "kind": "other"}),
            ("POST", "/users", {"name": "eve", "role": "operator"}),
        ],
        "admin_orp_a": [
            ("GET", f"/bookings/{other}", None),
            ("PATCH", f"/bookings/{other}", {"title": "mine now"}),
            ("DELETE", f"/bookings/{other}", None),
            ("GET", f"/bookings/{other}/invitation.ics", None),
            ("POST", "/bookings", meeting(world.orp_b)),
            ("POST", "/bookings", meeting(world.region_a)),
            ("POST", "/bookings", meeting(priority="emergency")),
            ("GET", "/nodes", None),
            ("PATCH", "/nodes/1", {"enabled": False}),
            ("PUT", f"/quotas/{world.orp_a}", {"share_percent": 10}),
            ("POST", "/bridges", {"name": "b", "participants": {"hd": 1}}),
            ("GET", f"/usage?organisation_id={world.orp_b}", None),
            ("GET", f"/calls?organisation_id={world.orp_b}", None),
            ("POST", "/users", {"name": "eve", "role": "operator"}),
            ("POST", "/organisations", {"name": "X", "kind": "other"}),
        ],
        "admin_a": [
            ("GET", f"/bookings/{other}", None),  # another region's ORP
            ("GET", f"/bookings/{izs_booking}", None),
        ],
        "izs": [
            ("POST", "/bookings", meeting(world.region_a)),
            ("GET", f"/bookings/{other}", None),
            ("POST", "/bridges", {"name": "b", "organisation_id": world.region_a,
                                  "participants": {"hd": 1}}),
            ("GET", "/nodes", None),
            ("PUT", f"/quotas/{world.izs}", {"share_percent": 10}),
            ("POST", "/users/1/tokens", {}),
        ],
        "operator": [
            ("POST", "/bookings", meeting(world.region_a, priority="emergency")),
        ],
    }
    for who, attempts in forbidden.items():
        for method, path, body in attempts:
            response = await api.call(who, method, path, body)
            assert response.status == 403, (who, method, path, await response.text())
            assert (await response.json())["error"]["code"] == "forbidden"
    for method, path in (("GET", "/bookings"), ("POST", "/bookings"), ("GET", "/me")):
        response = await api.call(None, method, path, meeting())
        assert response.status == 401
    api.tokens["forged"] = "mpt_" + "x" * 43
    assert (await api.call("forged", "GET", "/me")).status == 401
    assert (api.count(Booking), api.count(BookingOccurrence), api.count(Organisation)) == before
    listed = await (await api.call("admin_orp_a", "GET", "/bookings?from=2026-12-01T00:00")).json()
    assert listed["bookings"] == []


async def test_bad_input_gets_clear_errors_and_writes_nothing(api: Api) -> None:
    cases: list[tuple[object, str]] = [
        (meeting(start="2027-03-28T02:30", end="2027-03-28T03:30"), "impossible_time"),
        (meeting(time_zone="Europe/Atlantis"), "unknown_time_zone"),
        (meeting(start="tomorrow"), "invalid_time"),
        (meeting(end="2026-12-03T09:00"), "invalid_interval"),
        (meeting(recurrence={"rrule": "FREQ=DAILY;COUNT=100000"}), "too_many_occurrences"),
        (meeting(recurrence={"rrule": "FREQ=DAILY"}), "unbounded_rrule"),
        (meeting(recurrence={"rrule": "RUBBISH"}), "invalid_rrule"),
        (meeting(participants={"hd": "3"}), "invalid_input"),
        (meeting(participants={"hd": -1}), "invalid_input"),
        (meeting(participants={}), "no_participants"),
        (meeting(title=""), "invalid_input"),
        (meeting(start=1700000000), "invalid_input"),
        (meeting(colour="blue"), "invalid_input"),
        (meeting(invitees=["not an address"]), "invalid_input"),
        (meeting(priority="urgent"), "invalid_input"),
        ([1, 2, 3], "invalid_input"),
    ]
    for body, code in cases:
        response = await api.call("admin_a", "POST", "/bookings", body)
        error = (await response.json())["error"]
        assert response.status == 422, (body, error)
        assert error["code"] == code, (body, error)
        assert error["message"]
    response = await api.call("admin_a", "POST", "/bookings", raw=b"{not json")
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_json"
    typed = await (await api.call("admin_a", "POST", "/bookings",
                                  meeting(participants={"hd": "3"}))).json()
    assert typed["error"]["fields"][0]["field"] == "participants.hd"
    assert api.count(Booking) == api.count(BookingOccurrence) == api.count(Notification) == 0
    assert (await api.call("admin_a", "GET", "/bookings/abc")).status == 404
    assert (await api.call("admin_a", "GET", "/bookings/999")).status == 404
    assert (await api.call("admin_a", "GET", "/availability?from=2026-12-01&to=2027-06-01")
            ).status == 422


async def test_change_and_cancel_through_the_api(api: Api) -> None:
    booking = await (await api.call("admin_a", "POST", "/bookings", meeting())).json()
    response = await api.call("admin_a", "PATCH", f"/bookings/{booking['id']}",
                              {"start": "2026-12-04T13:00", "end": "2026-12-04T14:00"})
    changed = await response.json()
    assert response.status == 200, changed
    assert changed["sequence"] == 1 and changed["start"] == "2026-12-04T13:00"
    assert [o["state"] for o in changed["occurrences"]] == ["scheduled"]
    response = await api.call("admin_a", "DELETE", f"/bookings/{booking['id']}")
    assert (await response.json())["status"] == "cancelled"
    ics = await (await api.call("admin_a", "GET",
                                f"/bookings/{booking['id']}/invitation.ics")).read()
    assert Calendar.from_ical(ics)["METHOD"] == "CANCEL"


async def test_operator_manages_nodes_quotas_bridges_and_users(api: Api) -> None:
    response = await api.call("operator", "POST", "/nodes", {"name": "node-2", "workers": 2})
    assert response.status == 201
    quotas = await (await api.call("admin_a", "GET", "/quotas")).json()
    assert quotas["pool_units"] == 2000 and quotas["izs_reserve_units"] == 400
    response = await api.call("operator", "PUT", f"/quotas/{api.world.central}",
                              {"share_percent": 50})
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "shares_exceed_pool"
    assert (await api.call("operator", "PUT", f"/quotas/{api.world.central}",
                           {"share_percent": 15})).status == 200
    nodes = await (await api.call("operator", "GET", "/nodes")).json()
    assert [len(n["workers"]) for n in nodes["nodes"]] == [2, 2]

    bridge = await api.call("izs", "POST", "/bridges",
                            {"name": "Krizový štáb", "participants": {"hd": 10}})
    assert bridge.status == 201
    made = await bridge.json()
    room = made["room"]
    assert api.services.admit_join(room).allowed
    assert made["dial_in"]["number"] == bridge_number(made["id"]) and len(made["dial_in"]["pin"]) == 6
    listed = await (await api.call("izs", "GET", "/bridges")).json()
    assert [b["room"] for b in listed["bridges"]] == [room]

    user = await (await api.call("operator", "POST", "/users",
                                 {"name": "nova", "role": "org_admin",
                                  "organisation_id": api.world.orp_b})).json()
    token = await (await api.call("operator", "POST", f"/users/{user['id']}/tokens",
                                  {"label": "cli"})).json()
    api.tokens["nova"] = token["token"]
    me = await (await api.call("nova", "GET", "/me")).json()
    assert me["role"] == "org_admin" and me["organisation_id"] == api.world.orp_b


async def test_call_records_and_usage_export_as_csv(api: Api) -> None:
    booking = await (await api.call("admin_a", "POST", "/bookings", meeting())).json()
    start = NOW + timedelta(days=3, hours=1, minutes=55)  # 3 Dec 09:55 UTC
    assert api.services.admit_join(booking["room"], now=start).allowed
    record = api.services.record_join(booking["room"], participant="Jana", now=start)
    api.services.record_leave(record, now=start + timedelta(minutes=30))
    await api.services.jobs.rollup(start.date())

    response = await api.call("coordinator", "GET",
                              "/calls?from=2026-12-01T00:00&to=2026-12-05T00:00&format=csv")
    assert response.status == 200 and response.content_type == "text/csv"
    lines = (await response.text()).splitlines()
    assert lines[0].startswith("id,room,booking_id,organisation_id,participant")
    assert len(lines) == 2 and "Jana" in lines[1] and lines[1].endswith(",1800")
    # A name typed at join is never a formula in the coordinator's spreadsheet.
    api.services.record_join(booking["room"], participant="=HYPERLINK(\"http://x\")", now=start)
    response = await api.call("coordinator", "GET",
                              "/calls?from=2026-12-01T00:00&to=2026-12-05T00:00&format=csv")
    cells = [row[4] for row in csv.reader(io.StringIO(await response.text()))]
    assert cells == ["participant", "Jana", "'=HYPERLINK(\"http://x\")"]
    usage = await (await api.call("admin_a", "GET",
                                  "/usage?from=2026-12-01T00:00&to=2026-12-05T00:00")).json()
    assert usage["usage"] == [{"organisation_id": api.world.region_a, "calls": 1,
                               "participant_hours": 0.5, "booked_unit_hours": 48.0}]


async def test_every_call_record_of_the_window_is_exported_and_counted(api: Api) -> None:
    """A busy day of 10,001 calls. The export used to stop at 10,000 records without a
    word (the CSV one short, the JSON's total 10,000 and no next page), so a report
    built on it missed calls; the window asked for is what is limited."""
    first = datetime(2026, 11, 29, 6, 0, tzinfo=ZoneInfo("UTC"))
    with api.world.db.session() as session:
        session.execute(insert(CallRecord), [
            {"room_name": "porada", "organisation_id": api.world.region_a, "participant": f"p{n}",
             "kind": "hd", "joined_at": first + timedelta(seconds=n),
             "left_at": first + timedelta(seconds=n + 60)} for n in range(10_001)])
    window = "from=2026-11-29T00:00&to=2026-11-30T00:00"
    response = await api.call("coordinator", "GET", f"/calls?{window}&format=csv")
    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert len(rows) == 10_001 and rows[-1]["participant"] == "p10000"
    page = await (await api.call("coordinator", "GET",
                                 f"/calls?{window}&limit=1000&offset=10000")).json()
    assert page["total"] == 10_001 and [c["participant"] for c in page["calls"]] == ["p10000"]
    assert page["next"] is None

    too_long = await api.call("coordinator", "GET",
                              "/calls?from=2026-01-01T00:00&to=2026-11-30T00:00&format=csv")
    assert too_long.status == 422
    assert (await too_long.json())["error"]["code"] == "range_too_long"
    backwards = await api.call("coordinator", "GET",
                               "/calls?from=2026-11-30T00:00&to=2026-11-29T00:00")
    assert (await backwards.json())["error"]["code"] == "invalid_interval"


async def test_usage_is_counted_per_day_in_prague_so_a_month_is_prague_s_month(
        api: Api) -> None:
    """A call at 00:30 on 1 December in Prague (23:30 UTC on 30 November) is December's
    usage, and one on 30 November at 10:00 is November's; the nightly roll-up (00:10 in
    Prague) does the day that has just ended there."""
    utc = ZoneInfo("UTC")
    calls_at = {"2026-11-30T10:00": datetime(2026, 11, 30, 9, 15, tzinfo=utc),
                "2026-12-01T00:15": datetime(2026, 11, 30, 23, 30, tzinfo=utc)}
    for start, joined in calls_at.items():
        created = await api.call("admin_a", "POST", "/bookings", meeting(
            start=start, end=start[:11] + f"{int(start[11:13]) + 1:02d}" + start[13:]))
        assert created.status == 201, await created.text()
        room = (await created.json())["room"]
        assert api.services.admit_join(room, now=joined).allowed
        record = api.services.record_join(room, participant="Jana", now=joined)
        api.services.record_leave(record, now=joined + timedelta(minutes=30))
    await api.services.jobs.rollup(datetime(2026, 11, 30).date())
    api.clock.now = datetime(2026, 12, 1, 23, 10, tzinfo=utc)  # 2 Dec 00:10 in Prague
    await api.services.jobs.rollup()  # 1 December, Prague's

    async def usage(query: str) -> list[dict[str, object]]:
        response = await api.call("admin_a", "GET", "/usage?" + query)
        assert response.status == 200, await response.text()
        return (await response.json())["usage"]

    one = [{"organisation_id": api.world.region_a, "calls": 1, "participant_hours": 0.5,
            "booked_unit_hours": 48.0}]
    assert await usage("from=2026-12-01T00:00&to=2026-12-31T23:59") == one
    assert await usage("from=2026-11-01T00:00&to=2026-11-30T23:59") == one
    # The same days asked for in UTC: 30 November 23:30 UTC is 1 December in Prague.
    assert await usage("from=2026-11-30T23:30Z&to=2026-12-01T12:00Z") == one


async def test_openapi_lists_every_route(api: Api) -> None:
    response = await api.call(None, "GET", "/openapi.json")
    document = await response.json()
    assert document["openapi"].startswith("3.")
    assert {"get", "post"} <= set(document["paths"]["/api/v1/bookings"])
    assert "BookingIn" in document["components"]["schemas"]
    from scheduler.api import ROUTES

    assert len([op for path in document["paths"].values() for op in path]) == len(ROUTES) == 26
    occurrence = document["paths"]["/api/v1/bookings/{id}/occurrences/{start}"]["delete"]
    assert [p["schema"]["type"] for p in occurrence["parameters"]] == ["integer", "string"]


async def test_lists_come_in_pages_that_say_how_many_there_are(api: Api) -> None:
    for hour in (8, 10, 12):
        created = await api.call("admin_a", "POST", "/bookings", meeting(
            start=f"2026-12-03T{hour:02}:00", end=f"2026-12-03T{hour:02}:30"))
        assert created.status == 201, await created.text()
    window = "from=2026-12-01T00:00&to=2026-12-05T00:00"
    # Followed page by page through 'next', two at a time: all of them, each once.
    seen, url, pages = [], f"/api/v1/bookings?{window}&limit=2", 0
    while url is not None:
        page = await (await api.client.get(url, headers={
            "Authorization": f"Bearer {api.tokens['admin_a']}"})).json()
        assert page["total"] == 3 and page["limit"] == 2
        seen += [b["id"] for b in page["bookings"]]
        url, pages = page["next"], pages + 1
    assert pages == 2 and len(seen) == len(set(seen)) == 3
    whole = await (await api.call("admin_a", "GET", f"/bookings?{window}")).json()
    assert [b["id"] for b in whole["bookings"]] == seen and whole["next"] is None
    # Every list is paged the same way.
    organisations = await (await api.call("operator", "GET", "/organisations?limit=1&offset=1")).json()
    assert len(organisations["organisations"]) == 1 and organisations["offset"] == 1
    assert organisations["total"] > 1
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
        refused = await api.call("admin_a", "GET", f"/bookings?{window}&{bad}")
        assert refused.status == 422, bad
        error = (await refused.json())["error"]
        assert error["code"] == "invalid_parameter" and bad.split("=")[0] in error["message"]


async def test_openapi_says_the_real_status_codes_and_the_page_envelope(api: Api) -> None:
    document = await (await api.call(None, "GET", "/openapi.json")).json()
    paths = document["paths"]
    assert "201" in paths["/api/v1/bookings"]["post"]["responses"]
    assert "204" in paths["/api/v1/bridges/{id}"]["delete"]["responses"]
    listed = paths["/api/v1/bookings"]["get"]
    assert {"limit", "offset"} <= {p["name"] for p in listed["parameters"]}
    envelope = listed["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(envelope["required"]) == {"bookings", "total", "limit", "offset", "next"}
    # And what the server answers agrees with what the document says.
    created = await api.call("admin_a", "POST", "/bookings", meeting())
    assert str(created.status) in paths["/api/v1/bookings"]["post"]["responses"]
    page = await (await api.call("admin_a", "GET", "/bookings?from=2026-12-01T00:00"
                                                   "&to=2026-12-05T00:00")).json()
    assert set(envelope["required"]) <= set(page)
    for operation in (op for path in paths.values() for op in path.values()):
        assert {"400", "401", "403", "404"} <= set(operation["responses"])


async def test_browser_sessions_authenticate_and_changes_need_the_csrf_header(api: Api) -> None:
    with api.world.db.session() as session:
        secret = create_session(session, api.world.principal("admin_a").user_id, NOW,
                                timedelta(hours=1))
    cookies = {"multipoint_session": secret}
    me = await api.client.get("/api/v1/me", cookies=cookies)
    assert me.status == 200 and (await me.json())["name"] == "admin_a"
    refused = await api.client.post("/api/v1/bookings", json=meeting(), cookies=cookies)
    assert refused.status == 401 and (await refused.json())["error"]["code"] == "csrf"
    assert api.count(Booking) == 0
    accepted = await api.client.post("/api/v1/bookings", json=meeting(), cookies=cookies,
                                     headers={"X-Multipoint-Request": "1"})
    assert accepted.status == 201
    api.clock.now = NOW + timedelta(hours=2)
    expired = await api.client.get("/api/v1/me", cookies=cookies)
    assert expired.status == 401 and (await expired.json())["error"]["code"] == "session_expired"


async def test_changes_through_the_api_are_in_the_audit_log(api: Api) -> None:
    from scheduler.access.audit import entries

    created = await api.call("admin_a", "POST", "/bookings", meeting())
    assert created.status == 201
    refused = await api.call("admin_a", "POST", "/bookings", meeting(start="nonsense"))
    assert refused.status >= 400  # refused: not a change, not in the log
    listed = await api.call("admin_a", "GET", "/bookings")
    assert listed.status == 200
    with api.world.db.session() as session:
        log = entries(session)
    # Written by the booking service in the booking's own transaction.
    assert [(e.action, e.actor) for e in log] == [("booking.create", api.world.users["admin_a"].name)]
    assert log[0].target == f"booking:{(await created.json())['id']}"
    assert log[0].details == {"title": "Porada starostů"}
    # Every other change through the API is audited in its own transaction too.
    changes = [("POST", "/nodes", {"name": "node-9", "workers": 1}, "node.register", "node:node-9"),
               ("PUT", f"/quotas/{api.world.region_b}", {"share_percent": 10}, "quota.set",
                f"organisation:{api.world.region_b}"),
               ("POST", "/users", {"name": "novak", "role": "coordinator"}, "user.create",
                "user:novak"),
               ("POST", "/organisations", {"name": "Obec X", "kind": "other"},
                "organisation.create", None)]
    for method, path, body, action, target in changes:
        response = await api.call("operator", method, path, body)
        assert response.status < 300, await response.text()
        with api.world.db.session() as session:
            latest = entries(session, limit=1)[0]
        assert latest.action == action and latest.actor == "operator"
        assert target is None or latest.target == target


def _local(instant: datetime) -> str:
    return instant.astimezone(ZoneInfo("Europe/Prague")).strftime("%Y-%m-%dT%H:%M")


def _occurrences(api: Api, booking_id: int) -> list[tuple[int, str, int, bool]]:
    """(id, state, units, opened) of each of the booking's occurrences, by id."""
    with api.world.db.session() as session:
        rows = session.scalars(select(BookingOccurrence)
                               .where(BookingOccurrence.booking_id == booking_id)
                               .order_by(BookingOccurrence.id)).all()
        return [(o.id, o.state, o.units, o.opened_at is not None) for o in rows]


async def test_changing_the_size_of_an_opened_meeting_never_books_it_twice(db: Database) -> None:
    # A pool of 800 units, 160 of them the IZS reserve.
    async with serving(make_world(db, workers=2, capacity=400)) as api:
        start, end = NOW + timedelta(minutes=7), NOW + timedelta(minutes=67)
        when = {"start": _local(start), "end": _local(end)}
        created = await api.call("admin_a", "POST", "/bookings",
                                 meeting(**when, participants={"hd": 30}))  # 330 units
        assert created.status == 201, await created.text()
        x = (await created.json())["id"]
        await api.services.jobs.tick()  # within the open lead: its room opens at once
        [(opened_id, _, _, opened)] = _occurrences(api, x)
        assert opened
        other = await api.call("admin_orp_b", "POST", "/bookings",
                               meeting(**when, participants={"hd": 20, "sd": 15}))  # 310
        assert other.status == 201, await other.text()

        async def used() -> list[int]:
            response = await api.call("admin_a", "GET",
                                      f"/availability?from={when['start']}&to={when['end']}")
            assert response.status == 200
            return [s["used_units"] for s in (await response.json())["segments"]]

        for participants, units in (({"hd": 20, "sd": 15, "audio": 5}, 320),
                                    ({"hd": 20, "sd": 15, "audio": 5}, 320),
                                    ({"hd": 29, "sd": 1}, 325)):
            response = await api.call("admin_a", "PATCH", f"/bookings/{x}",
                                      {"participants": participants})
            assert response.status == 200, await response.text()
            body = await response.json()
            assert body["occurrence_count"] == 1 and body["units"] == units
            # The opened occurrence is changed in place: the same row, still open.
            assert _occurrences(api, x) == [(opened_id, "scheduled", units, True)]
            assert await used() == [units + 310]

        # 340 + 310 would leave 150 of the 160-unit IZS reserve: refused, nothing changed.
        with api.world.db.session() as session:
            booking_before = session.get(Booking, x)
            assert booking_before is not None
            before = (booking_before.sequence, booking_before.units, booking_before.participants)
        notifications = api.count(Notification)
        refused = await api.call("admin_a", "PATCH", f"/bookings/{x}",
                                 {"participants": {"hd": 20, "sd": 20}})
        assert refused.status == 409
        error = (await refused.json())["error"]
        assert error["code"] == "capacity_exceeded" and error["conflicts"][0]["reason"] == "izs_reserve"
        with api.world.db.session() as session:
            booking_after = session.get(Booking, x)
            assert booking_after is not None
            assert (booking_after.sequence, booking_after.units,
                    booking_after.participants) == before
        assert _occurrences(api, x) == [(opened_id, "scheduled", 325, True)]
        assert api.count(Notification) == notifications
        assert await used() == [325 + 310]


async def test_an_unknown_time_zone_in_the_query_is_a_400_naming_it(api: Api) -> None:
    for path in ("/bookings?time_zone=Mars/Olympus",
                 "/bookings?from=2026-12-01T00:00&time_zone=Mars/Olympus",
                 "/availability?time_zone=Mars/Olympus",
                 "/availability?from=2026-12-03T09:00&to=2026-12-03T12:00"
                 "&time_zone=Mars/Olympus",
                 "/usage?time_zone=" + "x" * 5000,
                 "/calls?time_zone=../../etc/passwd"):
        response = await api.call("admin_a", "GET", path)
        assert response.status == 400, path
        assert response.content_type == "application/json"
        error = (await response.json())["error"]
        assert error["code"] == "unknown_time_zone" and error["parameter"] == "time_zone"
        assert "time_zone" in error["message"]
    known = await api.call("admin_a", "GET", "/availability?time_zone=Europe/Bratislava")
    assert known.status == 200 and "segments" in await known.json()


async def test_a_range_at_the_ends_of_the_calendar_is_a_422_not_a_500(api: Api) -> None:
    # Midnight of 1 January of year 1 in Prague is before year 1 in UTC; a range near the
    # end of year 9999 reaches past it (a default end a month later, whole days).
    for path in ("/bookings?from=0001-01-01T00:00", "/usage?from=0001-01-01T00:30",
                 "/calls?from=0001-01-01T00:00&to=2026-12-01T00:00",
                 "/availability?from=0001-01-01T02:00", "/bookings?from=9999-12-31T23:00",
                 "/availability?from=9999-12-31T00:00", "/usage?to=9999-12-31T23:59Z"):
        response = await api.call("admin_a", "GET", path)
        assert response.status == 422, (path, await response.text())
        error = (await response.json())["error"]
        assert error["code"] == "invalid_time" and "out of range" in error["message"], path
    response = await api.call("admin_a", "GET", "/bookings?from=9998-12-31T00:00")
    assert response.status == 200 and (await response.json())["bookings"] == []


async def test_a_deeply_nested_body_is_a_400_and_writes_nothing(api: Api) -> None:
    response = await api.call("admin_a", "POST", "/bookings", raw=b"[" * 100_000)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "body_too_deep"
    nested = b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await api.call("admin_a", "POST", "/bookings", raw=nested)
    assert response.status == 400
    assert api.count(Booking) == 0


async def test_unknown_routes_wrong_methods_and_huge_bodies_answer_json(api: Api) -> None:
    for path in ("/api/v1/nothing-here", "/api/v2/bookings", "/api/", "/api/v1/bookings/1/x"):
        response = await api.client.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"
    response = await api.call("admin_a", "PUT", "/bookings", meeting())
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
    big = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await api.call("admin_a", "POST", "/bookings", raw=big)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read until the limit
        for _ in range(40):
            yield b"x" * 65536

    response = await api.client.post("/api/v1/bookings", data=chunks(), headers={
        "Authorization": f"Bearer {api.tokens['admin_a']}"})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"
    assert api.count(Booking) == 0


async def test_ids_no_row_can_have_are_404_and_out_of_range_query_ids_422(api: Api) -> None:
    for raw in (str(2**31), str(2**63), str(2**64), "9" * 5000, "0", "١٢"):
        for method, path in (("GET", f"/bookings/{raw}"), ("PATCH", f"/bookings/{raw}"),
                             ("DELETE", f"/bookings/{raw}"),
                             ("GET", f"/bookings/{raw}/invitation.ics"),
                             ("GET", f"/organisations/{raw}")):
            response = await api.call("operator", method, path,
                                      {"title": "x"} if method == "PATCH" else None)
            assert response.status == 404, (method, path)
            assert (await response.json())["error"]["code"] == "not_found"
        for method, path, body in (("PATCH", f"/nodes/{raw}", {"enabled": False}),
                                   ("PUT", f"/quotas/{raw}", {"share_percent": 1}),
                                   ("DELETE", f"/bridges/{raw}", None),
                                   ("POST", f"/users/{raw}/tokens", {"label": "x"})):
            response = await api.call("operator", method, path, body)
            assert response.status == 404, (method, path)
    for path in (f"/bookings?organisation_id={2**63}", f"/organisations?parent_id={2**63}",
                 f"/availability?organisation_id={2**31}"):
        response = await api.call("operator", "GET", path)
        assert response.status == 422, path
        assert (await response.json())["error"]["parameter"] in path
    response = await api.call("operator", "POST", "/bookings",
                              meeting(organisation=2**63))
    assert response.status == 422
    assert (await response.json())["error"]["fields"][0]["field"] == "organisation_id"


async def test_api_answers_are_not_cached(api: Api) -> None:
    created = await api.call("admin_a", "POST", "/bookings", meeting())
    assert created.status == 201 and "token=" in (await created.json())["join_links"]["host"]
    assert created.headers["Cache-Control"] == "no-store"
    booking_id = (await created.json())["id"]
    for path in (f"/bookings/{booking_id}", "/bookings?from=2026-12-01T00:00",
                 f"/bookings/{booking_id}/invitation.ics"):
        response = await api.call("admin_a", "GET", path)
        assert response.status == 200 and response.headers["Cache-Control"] == "no-store"


async def occurrence_starts(api: Api, booking_id: int) -> list[str]:
    response = await api.call("admin_orp_a", "GET", f"/bookings/{booking_id}")
    body = await response.json()
    return [o["start"] for o in body["occurrences"] if o["state"] == "scheduled"]


async def test_a_series_moves_with_its_exceptions(api: Api) -> None:
    # Mondays 7, 14, 21 Dec at 10:00; the 14th is left out.
    body = meeting(recurrence={"rrule": "FREQ=WEEKLY;COUNT=3", "exdates": ["2026-12-14T10:00"]},
                   start="2026-12-07T10:00", end="2026-12-07T11:00")
    response = await api.call("admin_orp_a", "POST", "/bookings", body)
    assert response.status == 201, await response.text()
    booking = await response.json()
    assert booking["occurrence_count"] == 2
    # Moved to Tuesdays at 9:00: the exception follows, so the 15th stays out.
    response = await api.call("admin_orp_a", "PATCH", f"/bookings/{booking['id']}",
                              {"start": "2026-12-08T09:00", "end": "2026-12-08T10:00"})
    assert response.status == 200, await response.text()
    moved = await response.json()
    assert moved["recurrence"]["exdates"] == ["2026-12-15T09:00:00"]
    starts = await occurrence_starts(api, booking["id"])
    assert [s[:16] for s in starts] == ["2026-12-08T09:00", "2026-12-22T09:00"]
    response = await api.call("admin_orp_a", "GET", f"/bookings/{booking['id']}/invitation.ics")
    event = next(iter(Calendar.from_ical(await response.read()).walk("VEVENT")))
    assert [d.dt.strftime("%Y-%m-%d %H:%M") for d in event["EXDATE"].dts] == ["2026-12-15 09:00"]


async def test_exceptions_must_name_an_occurrence_and_a_date_names_that_days(api: Api) -> None:
    rule = "FREQ=WEEKLY;COUNT=3"
    for exdate in ("2026-12-14T11:00", "2026-12-15T10:00"):  # wrong hour, wrong day
        body = meeting(recurrence={"rrule": rule, "exdates": [exdate]},
                       start="2026-12-07T10:00", end="2026-12-07T11:00")
        response = await api.call("admin_orp_a", "POST", "/bookings", body)
        assert response.status == 422, exdate
        error = (await response.json())["error"]
        assert error["code"] == "unmatched_exception" and exdate in error["message"]
    # A date alone is that day's occurrence.
    body = meeting(recurrence={"rrule": rule, "exdates": ["2026-12-14"]},
                   start="2026-12-07T10:00", end="2026-12-07T11:00")
    response = await api.call("admin_orp_a", "POST", "/bookings", body)
    assert response.status == 201, await response.text()
    booking = await response.json()
    assert booking["recurrence"]["exdates"] == ["2026-12-14T10:00:00"]
    assert booking["occurrence_count"] == 2
    assert api.count(Booking) == 1  # the refused ones wrote nothing


async def test_count_and_until_together_are_refused(api: Api) -> None:
    body = meeting(recurrence={"rrule": "FREQ=WEEKLY;COUNT=3;UNTIL=20261231"},
                   start="2026-12-07T10:00", end="2026-12-07T11:00")
    response = await api.call("admin_orp_a", "POST", "/bookings", body)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "invalid_rrule" and "COUNT and UNTIL" in error["message"]
    assert api.count(Booking) == 0


async def test_one_occurrence_of_a_series_is_cancelled_and_stays_cancelled(api: Api) -> None:
    body = meeting(recurrence={"rrule": "FREQ=WEEKLY;COUNT=3"}, start="2026-12-07T10:00",
                   end="2026-12-07T11:00", participants={"hd": 10})
    booking = await (await api.call("admin_orp_a", "POST", "/bookings", body)).json()
    path = f"/bookings/{booking['id']}/occurrences"
    response = await api.call("admin_orp_a", "DELETE", f"{path}/2026-12-14T10:00")
    assert response.status == 200, await response.text()
    changed = await response.json()
    assert changed["recurrence"]["exdates"] == ["2026-12-14T10:00:00"]
    assert changed["sequence"] == booking["sequence"] + 1
    assert [s[:10] for s in await occurrence_starts(api, booking["id"])] == ["2026-12-07",
                                                                           "2026-12-21"]
    # Its capacity is free again.
    response = await api.call("admin_orp_a", "GET",
                              "/availability?from=2026-12-14T10:00&to=2026-12-14T11:00")
    assert [s["own_used_units"] for s in (await response.json())["segments"]] == [0]
    # An edit of the whole series does not bring it back.
    response = await api.call("admin_orp_a", "PATCH", f"/bookings/{booking['id']}",
                              {"participants": {"hd": 12}})
    assert response.status == 200
    assert len(await occurrence_starts(api, booking["id"])) == 2
    # The audit entry is the change's own, written with it (one per change).
    with api.world.db.session() as session:
        actions = session.scalars(select(AuditEntry.action)
                                  .where(AuditEntry.target == f"booking:{booking['id']}")
                                  .order_by(AuditEntry.id)).all()
    assert actions == ["booking.create", "booking.cancel_occurrence", "booking.update"]
    # What cannot be cancelled this way says why, and changes nothing.
    for start, status, code in (("2026-12-14T10:00", 404, "occurrence_not_found"),
                                ("2026-12-15T10:00", 404, "occurrence_not_found"),
                                ("yesterday", 422, "invalid_time")):
        response = await api.call("admin_orp_a", "DELETE", f"{path}/{start}")
        assert response.status == status, start
        assert (await response.json())["error"]["code"] == code
    assert (await api.call("admin_orp_b", "DELETE", f"{path}/2026-12-21T10:00")).status == 403
    await api.call("admin_orp_a", "DELETE", f"{path}/2026-12-21T10:00")
    response = await api.call("admin_orp_a", "DELETE", f"{path}/2026-12-07T10:00")
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "last_occurrence"


async def test_the_router_refuses_every_role_a_route_does_not_name(api: Api) -> None:
    from scheduler.api import PREFIX, ROUTES

    checked = 0
    for route in ROUTES:
        allowed = route.allowed_roles
        if allowed is None or route.public:
            continue
        for who, principal in api.world.users.items():
            if principal.role in allowed:
                continue
            path = route.path.removeprefix(PREFIX).replace("{id}", "1")
            path = path.replace("{start}", "2026-12-14T10:00")
            response = await api.call(who, route.method, path, {})  # before the body is read
            assert response.status == 403, (who, route.method, route.path)
            error = (await response.json())["error"]
            assert error["code"] == "forbidden" and principal.role in error["message"]
            checked += 1
    assert checked > 40


def _series(**changes: object) -> dict[str, object]:
    """Four Mondays from 7 December 2026, 10:00-11:00."""
    return meeting(**{"start": "2026-12-07T10:00", "end": "2026-12-07T11:00",
                      "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"}, **changes})


def _starts(booking: dict[str, object]) -> list[str]:
    return [str(o["start"])[:16] for o in booking["occurrences"]  # type: ignore[attr-defined]
            if o["state"] == "scheduled"]


async def _invitation_events(api: Api, booking_id: int) -> tuple[list[str], list[tuple[str, ...]]]:
    """The invitation's EXDATEs, and (RECURRENCE-ID, DTSTART, DTEND) of each moved
    occurrence's event."""
    ics = await (await api.call("admin_a", "GET", f"/bookings/{booking_id}/invitation.ics")).read()
    fmt = "%Y-%m-%dT%H:%M"
    events = Calendar.from_ical(ics).walk("VEVENT")
    found = events[0].get("EXDATE")
    lists = found if isinstance(found, list) else [found] if found is not None else []
    return ([d.dt.strftime(fmt) for exdate in lists for d in exdate.dts],
            [(e["RECURRENCE-ID"].dt.strftime(fmt), e["DTSTART"].dt.strftime(fmt),
              e["DTEND"].dt.strftime(fmt)) for e in events if "RECURRENCE-ID" in e])


async def test_one_occurrence_of_a_series_is_moved_and_a_series_change_keeps_it(
        api: Api) -> None:
    created = await api.call("admin_a", "POST", "/bookings", _series(
        participants={"hd": 40}, invitees=["starosta@mesto.cz"]))  # 440 units
    assert created.status == 201, await created.text()
    booking = await created.json()
    path = f"/bookings/{booking['id']}/occurrences"
    updates = api.count(Notification)

    # 14 December 10:00 moves to 15 December 14:00, as long as before.
    response = await api.call("admin_a", "PATCH", f"{path}/2026-12-14T10:00",
                              {"start": "2026-12-15T14:00"})
    body = await response.json()
    assert response.status == 200, body
    assert _starts(body) == ["2026-12-07T10:00", "2026-12-15T14:00", "2026-12-21T10:00",
                             "2026-12-28T10:00"]
    assert body["occurrences"][1]["end"].startswith("2026-12-15T15:00")
    assert body["recurrence"]["exdates"] == ["2026-12-14T10:00:00"]
    assert body["sequence"] == 1 and body["occurrence_count"] == 4
    assert api.count(Notification) == updates + 2  # the update, to both
    # One event for the series (no EXDATE: the 14th is moved, not gone) and one for the
    # moved occurrence, with the series' start it stands for as its RECURRENCE-ID.
    assert await _invitation_events(api, booking["id"]) == (
        [], [("2026-12-14T10:00", "2026-12-15T14:00", "2026-12-15T15:00")])
    with api.world.db.session() as session:
        actions = session.scalars(select(AuditEntry.action)
                                  .where(AuditEntry.target == f"booking:{booking['id']}")
                                  .order_by(AuditEntry.id)).all()
    assert actions == ["booking.create", "booking.move_occurrence"]

    # Admitted like a new booking: refused where it does not fit, nothing changed.
    izs = await api.call("izs", "POST", "/bookings", meeting(
        start="2026-12-16T10:00", end="2026-12-16T11:00", participants={"hd": 54}))
    assert izs.status == 201, await izs.text()
    response = await api.call("admin_a", "PATCH", f"{path}/2026-12-21T10:00",
                              {"start": "2026-12-16T10:00", "end": "2026-12-16T11:00"})
    assert response.status == 409
    error = (await response.json())["error"]
    assert error["code"] == "capacity_exceeded" and error["suggestions"]
    assert error["conflicts"][0]["occurrence"] == "2026-12-16 10:00"
    # Nor onto another occurrence of the series: one room, one meeting at a time.
    response = await api.call("admin_a", "PATCH", f"{path}/2026-12-21T10:00",
                              {"start": "2026-12-28T10:30"})
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "occurrence_overlap"
    for start, status, code in (("2026-12-14T10:00", 404, "occurrence_not_found"),
                                ("tomorrow", 422, "invalid_time")):
        response = await api.call("admin_a", "PATCH", f"{path}/{start}",
                                  {"start": "2026-12-17T10:00"})
        assert response.status == status, start
        assert (await response.json())["error"]["code"] == code
    unchanged = await (await api.call("admin_a", "GET", f"/bookings/{booking['id']}")).json()
    assert _starts(unchanged) == _starts(body) and unchanged["sequence"] == 1

    # A change of the whole series keeps the moved one where it was put, with the new
    # size, and never books the 14th beside it.
    response = await api.call("admin_a", "PATCH", f"/bookings/{booking['id']}",
                              {"start": "2026-12-07T13:00", "end": "2026-12-07T14:00",
                               "participants": {"hd": 30}})
    changed = await response.json()
    assert response.status == 200, changed
    assert _starts(changed) == ["2026-12-07T13:00", "2026-12-15T14:00", "2026-12-21T13:00",
                                "2026-12-28T13:00"]
    assert changed["recurrence"]["exdates"] == ["2026-12-14T13:00:00"]
    assert {units for _, state, units, _ in _occurrences(api, booking["id"])
            if state == "scheduled"} == {330}
    assert await _invitation_events(api, booking["id"]) == (
        [], [("2026-12-14T13:00", "2026-12-15T14:00", "2026-12-15T15:00")])

    # The moved one can be cancelled in turn; nothing brings it, or the 14th, back.
    response = await api.call("admin_a", "DELETE", f"{path}/2026-12-15T14:00")
    assert response.status == 200, await response.text()
    response = await api.call("admin_a", "PATCH", f"/bookings/{booking['id']}",
                              {"participants": {"hd": 20}})
    again = await response.json()
    assert response.status == 200, again
    assert _starts(again) == ["2026-12-07T13:00", "2026-12-21T13:00", "2026-12-28T13:00"]
    assert again["recurrence"]["exdates"] == ["2026-12-14T13:00:00"]


async def test_exceptions_given_without_a_moved_occurrence_give_the_series_it_back(
        api: Api) -> None:
    booking = await (await api.call("admin_a", "POST", "/bookings", _series())).json()
    path = f"/bookings/{booking['id']}/occurrences"
    response = await api.call("admin_a", "PATCH", f"{path}/2026-12-14T10:00",
                              {"start": "2026-12-15T14:00", "end": "2026-12-15T14:30"})
    assert response.status == 200, await response.text()
    response = await api.call("admin_a", "PATCH", f"/bookings/{booking['id']}",
                              {"recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4", "exdates": []}})
    body = await response.json()
    assert response.status == 200, body
    assert _starts(body) == _starts(booking)  # the 14th at 10:00 again, and only once
    # Moved back to its series time, an occurrence is no exception any more.
    moved = await (await api.call("admin_a", "PATCH", f"{path}/2026-12-14T10:00",
                                  {"start": "2026-12-14T15:00"})).json()
    assert moved["recurrence"]["exdates"] == ["2026-12-14T10:00:00"]
    back = await api.call("admin_a", "PATCH", f"{path}/2026-12-14T15:00",
                          {"start": "2026-12-14T10:00"})
    back_body = await back.json()
    assert back.status == 200, back_body
    assert _starts(back_body) == _starts(booking)
    assert back_body["recurrence"]["exdates"] == []


async def test_successful_answers_match_the_documented_schemas(api: Api) -> None:
    import jsonschema

    document = await (await api.call(None, "GET", "/openapi.json")).json()

    def schema_of(method: str, path: str, status: str) -> dict:
        answer = document["paths"]["/api/v1" + path][method]["responses"][status]
        schema = answer["content"]["application/json"]["schema"]
        if "$ref" in schema:
            return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        items = schema["properties"][next(iter(schema["required"]))]["items"]
        page = dict(schema, properties=dict(schema["properties"]))
        key = next(iter(schema["required"]))
        page["properties"][key] = {"type": "array", "items": document["components"]["schemas"][
            items["$ref"].rsplit("/", 1)[1]]}
        return page

    booking = meeting(api.world.region_a, recurrence={"rrule": "FREQ=WEEKLY;COUNT=2"})
    calls = [("post", "/bookings", "/bookings", booking, "201"),
             ("get", "/bookings/{id}", "/bookings/1", None, "200"),
             ("get", "/bookings", "/bookings?from=2026-12-01T00:00&to=2026-12-20T00:00", None, "200"),
             ("get", "/me", "/me", None, "200"),
             ("get", "/organisations", "/organisations", None, "200"),
             ("get", "/nodes", "/nodes", None, "200"),
             ("get", "/quotas", "/quotas", None, "200"),
             ("get", "/availability", "/availability?from=2026-12-03T09:00&to=2026-12-03T12:00"
              f"&organisation_id={api.world.region_a}", None, "200"),
             ("post", "/bridges", "/bridges",
              {"organisation_id": api.world.izs, "name": "Povodně", "participants": {"hd": 4}}, "201"),
             ("post", "/users", "/users", {"name": "svoboda", "role": "coordinator"}, "201")]
    for method, documented, path, body, status in calls:
        response = await api.call("operator", method.upper(), path, body)
        assert str(response.status) == status, (path, await response.text())
        jsonschema.validate(await response.json(), schema_of(method, documented, status))


async def test_a_time_in_the_repeated_autumn_hour_is_the_first_or_refused_never_shifted(
        api: Api) -> None:
    """31 October 2027: the clocks go back from 03:00 CEST to 02:00 CET, so 02:30 in Prague
    is both 00:30 and 01:30 UTC. A booking keeps wall-clock time (and its invitation a
    DTSTART with a TZID, which RFC 5545 reads as the first): 02:30 is 00:30 UTC."""
    def starts(booking_id: int) -> list[tuple[datetime, datetime]]:
        with api.world.db.session() as session:
            return [(o.start_utc, o.end_utc) for o in session.scalars(
                select(BookingOccurrence).where(BookingOccurrence.booking_id == booking_id,
                                                BookingOccurrence.state == "scheduled"))]

    utc = ZoneInfo("UTC")
    # The second 02:30, with its offset or in UTC as calendars write it: refused by name,
    # nothing written. It used to be booked at 01:30 UTC while the invitation said 02:30
    # (00:30 UTC), and the next change of its size put it there, an hour earlier.
    before = api.count(BookingOccurrence)
    for start, end in (("2027-10-31T02:30+01:00", "2027-10-31T03:30+01:00"),
                       ("2027-10-31T01:30:00Z", "2027-10-31T02:30:00Z"),
                       ("2027-10-31T01:00", "2027-10-31T02:45+01:00")):  # its end
        response = await api.call("admin_a", "POST", "/bookings", meeting(start=start, end=end))
        error = (await response.json())["error"]
        assert response.status == 422 and error["code"] == "ambiguous_time", (start, error)
        assert "02:" in error["message"] and "first" in error["message"]
    assert api.count(BookingOccurrence) == before

    # The first 02:30, written either way, and the same without an offset: 00:30 UTC,
    # as the invitation says, and still there after a change of size.
    for start in ("2027-10-31T02:30+02:00", "2027-10-31T00:30Z", "2027-10-31T02:30"):
        created = await api.call("admin_a", "POST", "/bookings",
                                 meeting(start=start, end="2027-10-31T03:30"))
        assert created.status == 201, await created.text()
        booking = await created.json()
        expected = [(datetime(2027, 10, 31, 0, 30, tzinfo=utc),
                     datetime(2027, 10, 31, 2, 30, tzinfo=utc))]
        assert starts(booking["id"]) == expected
        changed = await api.call("admin_a", "PATCH", f"/bookings/{booking['id']}",
                                 {"participants": {"hd": 5}})
        assert changed.status == 200, await changed.text()
        assert starts(booking["id"]) == expected
        ics = await (await api.call("admin_a", "GET",
                                    f"/bookings/{booking['id']}/invitation.ics")).read()
        event = next(iter(Calendar.from_ical(ics).walk("VEVENT")))
        assert event["DTSTART"].dt.astimezone(utc) == expected[0][0]

    # Moving an occurrence of a series to the second 02:30 is refused the same way.
    series = await (await api.call("admin_a", "POST", "/bookings", meeting(
        start="2027-10-24T10:00", end="2027-10-24T11:00",
        recurrence={"rrule": "FREQ=WEEKLY;COUNT=3"}))).json()
    response = await api.call("admin_a", "PATCH",
                              f"/bookings/{series['id']}/occurrences/2027-10-31T10:00",
                              {"start": "2027-10-31T01:30Z"})
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "ambiguous_time"


async def test_a_moved_occurrence_displaced_is_cancelled_by_the_recurrence_id_calendars_hold(
        api: Api) -> None:
    created = await api.call("admin_a", "POST", "/bookings", _series(
        participants={"hd": 40}, invitees=["starosta@mesto.cz"]))  # 440 units
    booking = await created.json()
    moved = await api.call("admin_a", "PATCH",
                           f"/bookings/{booking['id']}/occurrences/2026-12-14T10:00",
                           {"start": "2026-12-15T14:00", "end": "2026-12-15T14:30"})
    assert moved.status == 200, await moved.text()
    _, overrides = await _invitation_events(api, booking["id"])
    assert overrides == [("2026-12-14T10:00", "2026-12-15T14:00", "2026-12-15T14:30")]

    # An IZS emergency needs the whole pool then: the moved occurrence is displaced.
    emergency = await api.call("izs", "POST", "/bookings", meeting(
        start="2026-12-15T14:00", end="2026-12-15T15:00", participants={"hd": 90},
        priority="emergency"))
    assert emergency.status == 201, await emergency.text()
    with api.world.db.session() as session:
        notice = session.scalars(select(Notification).where(
            Notification.kind == "displaced", Notification.booking_id == booking["id"],
            Notification.to_address == "starosta@mesto.cz")).one()
    assert "2026-12-15 14:00" in notice.subject  # people are told when it was to be
    event = next(iter(Calendar.from_ical(notice.ics).walk("VEVENT")))
    fmt = "%Y-%m-%dT%H:%M"
    # The event the invitees' calendars hold for it is the one with the series' start as
    # its RECURRENCE-ID; the CANCEL used to name 15 December 14:00, which no calendar
    # holds, so the moved meeting stayed in them.
    assert event["RECURRENCE-ID"].dt.strftime(fmt) == "2026-12-14T10:00"
    assert (event["DTSTART"].dt.strftime(fmt), event["DTEND"].dt.strftime(fmt)) \
        == ("2026-12-15T14:00", "2026-12-15T14:30")


@pytest.mark.parametrize("meanwhile", ["cancel", "move"])
async def test_a_patch_keeps_an_occurrence_cancelled_or_moved_while_it_was_decided(
    api: Api, meanwhile: str
) -> None:
    """Another request (another process) cancels or moves one occurrence of the series
    right after the PATCH's read of the booking. The PATCH worked out the series'
    exceptions from that read and wrote them, and a schedule without the occurrence's:
    the cancelled meeting was booked again, the moved one put back at its series time."""
    booking = await (await api.call("admin_a", "POST", "/bookings", _series())).json()
    admin, world = api.world.principal("admin_a"), api.world
    other_process = Database(world.db.url)
    pending = [True]

    def change_meanwhile(session: Session) -> None:
        # A transaction of the PATCH that read the booking has just committed.
        read_it = any(isinstance(o, Booking) and o.id == booking["id"] for o in session.identity_map.values())
        if pending and read_it and session.get_bind().engine is world.db.engine:
            pending.clear()
            if meanwhile == "cancel":
                bookings.cancel_occurrence(
                    other_process, admin, booking["id"], datetime(2026, 12, 14, 10), NOW, join_link
                )
            else:
                bookings.move_occurrence(
                    other_process,
                    world.config,
                    admin,
                    booking["id"],
                    datetime(2026, 12, 14, 10),
                    datetime(2026, 12, 15, 14),
                    None,
                    NOW,
                    join_link,
                )

    event.listen(Session, "after_commit", change_meanwhile)
    try:
        patched = await api.call(
            "admin_a",
            "PATCH",
            f"/bookings/{booking['id']}",
            {"end": "2026-12-07T11:30", "participants": {"hd": 5}},
        )
    finally:
        event.remove(Session, "after_commit", change_meanwhile)
        other_process.dispose()
    assert not pending, "the other change did not run"
    assert patched.status == 200, await patched.text()
    body = await patched.json()
    assert body["recurrence"]["exdates"] == ["2026-12-14T10:00:00"]
    assert body["end"] == "2026-12-07T11:30" and body["participants"]["hd"] == 5
    kept = ["2026-12-15T14:00"] if meanwhile == "move" else []
    assert _starts(body) == ["2026-12-07T10:00", *kept, "2026-12-21T10:00", "2026-12-28T10:00"]


async def test_an_occurrence_displaced_stays_out_of_the_series_through_its_changes(
        api: Api) -> None:
    """An emergency displaced one meeting of a series: the organiser was told it does not
    take place. A later change of the series (its size, its time) used to book that
    occurrence again: refused (409, the emergency holds the pool then) while the emergency
    lasted, so the series could not be changed at all, and after it a second meeting at
    that time beside the displaced one, nobody told."""
    created = await api.call("admin_a", "POST", "/bookings", _series(participants={"hd": 40}))
    booking = await created.json()
    emergency = await api.call("izs", "POST", "/bookings", meeting(
        start="2026-12-14T10:00", end="2026-12-14T11:00", participants={"hd": 90},
        priority="emergency"))
    assert emergency.status == 201, await emergency.text()
    assert len((await emergency.json())["displaced_occurrences"]) == 1
    path = f"/bookings/{booking['id']}"

    def states(body: dict[str, object]) -> list[tuple[str, str]]:
        return [(str(o["start"])[:16], o["state"])  # type: ignore[index]
                for o in body["occurrences"]]  # type: ignore[attr-defined]

    bigger = await api.call("admin_a", "PATCH", path, {"participants": {"hd": 40, "audio": 1}})
    assert bigger.status == 200, await bigger.text()
    changed = await bigger.json()
    assert changed["recurrence"]["exdates"] == ["2026-12-14T10:00:00"]
    assert states(changed) == [("2026-12-07T10:00", "scheduled"), ("2026-12-14T10:00", "displaced"),
                               ("2026-12-21T10:00", "scheduled"), ("2026-12-28T10:00", "scheduled")]
    later = await api.call("admin_a", "PATCH", path, {"start": "2026-12-07T10:30",
                                                      "end": "2026-12-07T11:30"})
    assert later.status == 200, await later.text()
    assert _starts(await later.json()) == ["2026-12-07T10:30", "2026-12-21T10:30",
                                           "2026-12-28T10:30"]

    # The emergency over, a change still leaves the displaced meeting out.
    await api.call("izs", "DELETE", f"/bookings/{(await emergency.json())['id']}")
    again = await api.call("admin_a", "PATCH", path, {"participants": {"hd": 41}})
    assert again.status == 200, await again.text()
    assert _starts(await again.json()) == ["2026-12-07T10:30", "2026-12-21T10:30",
                                           "2026-12-28T10:30"]


async def test_the_form_cuts_a_series_short_before_an_occurrence_cancelled_in_it(
        api: Api) -> None:
    """The admin web changes a series through keeping_exceptions (its form has no field for
    exceptions). After the last of four Mondays was cancelled, a change to three meetings
    failed with unmatched_exception: the kept exception named no occurrence any more."""
    booking = await (await api.call("admin_a", "POST", "/bookings", _series())).json()
    cancelled = await api.call("admin_a", "DELETE",
                               f"/bookings/{booking['id']}/occurrences/2026-12-14T10:00")
    assert cancelled.status == 200
    cancelled = await api.call("admin_a", "DELETE",
                               f"/bookings/{booking['id']}/occurrences/2026-12-28T10:00")
    assert cancelled.status == 200
    asked = Schedule(datetime(2026, 12, 7, 10), datetime(2026, 12, 7, 11),
                     rrule="FREQ=WEEKLY;COUNT=3")
    with api.world.db.session() as session:
        row = session.get(Booking, booking["id"])
        assert row is not None
        schedule = bookings.keeping_exceptions(row, asked)
    # The one still within the series stays left out.
    assert schedule.exdates == (datetime(2026, 12, 14, 10),)
    bookings.update_booking(api.world.db, api.world.config, api.world.principal("admin_a"),
                            booking["id"], bookings.BookingChange(schedule=schedule),
                            api.clock(), join_link)
    after = await (await api.call("admin_a", "GET", f"/bookings/{booking['id']}")).json()
    assert _starts(after) == ["2026-12-07T10:00", "2026-12-21T10:00"]
