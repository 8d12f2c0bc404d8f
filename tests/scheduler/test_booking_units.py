"""A booking names room units to call at its start: the API, its checks, both write paths,
and what the job that opens the room hands the media side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from scheduler.booking.bookings import (
    BookingInput,
    admit_batch,
    call_units_of,
    prepare_booking,
)
from scheduler.booking.jobs import due_actions, next_due
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.db import Database
from scheduler.errors import InvalidInput
from scheduler.media.leases import reap_dead_nodes, renew_lease
from scheduler.media.nodes import register_node
from scheduler.media.rooms import recall_units
from scheduler.models import AuditEntry, Booking, BookingUnit, Endpoint, MediaWorker, Room
from tests.scheduler.conftest import NOW, World, join_link, make_world
from tests.scheduler.test_api import Api, serving
from tests.scheduler.test_nodes import workers_of

PRAGUE = ZoneInfo("Europe/Prague")


@pytest.fixture
async def api(world: World) -> AsyncIterator[Api]:
    async with serving(world) as served:
        yield served


def add_unit(world: World, serial: str, organisation: int, sip_uri: str | None,
             site: str = "") -> int:
    with world.db.session() as session:
        unit = Endpoint(serial=serial, model="X30", site=site, organisation_id=organisation,
                        status="in_service", sip_uri=sip_uri)
        session.add(unit)
        session.flush()
        return unit.id


def meeting(api: Api, **changes: object) -> dict[str, object]:
    """A meeting tomorrow at the clock's hour, local time in Prague."""
    start = (api.clock() + timedelta(days=1)).astimezone(PRAGUE).replace(minute=0, second=0,
                                                                         microsecond=0)
    body: dict[str, object] = {"title": "Porada s jednotkami",
                               "start": start.strftime("%Y-%m-%dT%H:%M"),
                               "end": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
                               "participants": {"hd": 2, "mixed": 2}}
    body.update(changes)
    return body


def count(world: World, model: type) -> int:
    with world.db.session() as session:
        return len(session.scalars(select(model)).all())


async def test_a_booking_names_its_units_changes_them_and_shows_them(api: Api) -> None:
    world = api.world
    in_orp = add_unit(world, "SN-ORP", world.orp_a, "sip:orp@10.0.0.5")
    in_region = add_unit(world, "SN-REG", world.region_a, "sip:kraj@10.0.0.6")

    # A region's admin may name its own units and those of an ORP under it.
    response = await api.call("admin_a", "POST", "/bookings",
                              meeting(api, call_units=[in_region, in_orp, in_orp]))
    booking = await response.json()
    assert response.status == 201, booking
    assert booking["call_units"] == sorted([in_orp, in_region])  # each once
    path = f"/bookings/{booking['id']}"
    assert (await (await api.call("admin_a", "GET", path)).json())["call_units"] \
        == sorted([in_orp, in_region])

    changed = await (await api.call("admin_a", "PATCH", path, {"call_units": [in_orp]})).json()
    assert changed["call_units"] == [in_orp]
    # Which units ring is not news for the invitees: the invitation stays as it was.
    assert changed["sequence"] == booking["sequence"]
    # A change that does not name them leaves them as they are; [] calls none.
    renamed = await (await api.call("admin_a", "PATCH", path, {"title": "Jiná porada"})).json()
    assert renamed["call_units"] == [in_orp]
    cleared = await (await api.call("admin_a", "PATCH", path, {"call_units": []})).json()
    assert cleared["call_units"] == []
    assert count(world, BookingUnit) == 0
    with world.db.session() as session:
        details = [e.details for e in session.scalars(
            select(AuditEntry).where(AuditEntry.action == "booking.update")
            .order_by(AuditEntry.id))]
    assert [d.get("call_units") for d in details] == [[in_orp], None, []]

    listed = await (await api.call("admin_a", "GET", "/bookings?from="
                                   + (api.clock() - timedelta(hours=1)).isoformat().replace(
                                       "+00:00", "Z"))).json()
    assert [b["call_units"] for b in listed["bookings"]] == [[]]


async def test_units_that_cannot_be_called_are_refused_and_nothing_is_written(api: Api) -> None:
    world = api.world
    silent = add_unit(world, "SN-NOSIP", world.orp_a, None)
    elsewhere = add_unit(world, "SN-ORPB", world.orp_b, "sip:b@10.0.0.7")
    above = add_unit(world, "SN-REG", world.region_a, "sip:kraj@10.0.0.6")
    own = add_unit(world, "SN-ORPA", world.orp_a, "sip:a@10.0.0.8")
    cases: list[tuple[str, list[object], str]] = [
        ("admin_orp_a", [own, 2_000_000], "unit_not_found"),
        ("admin_orp_a", [silent], "unit_without_sip_address"),
        ("admin_orp_a", [elsewhere], "unit_of_another_organisation"),
        # The region's unit is above the ORP, not under it: not the ORP's to ring.
        ("admin_orp_a", [above], "unit_of_another_organisation"),
        ("admin_a", [elsewhere], "unit_of_another_organisation"),
        ("admin_orp_a", ["1"], "invalid_input"),
        ("admin_orp_a", [-1], "invalid_input"),
        ("admin_orp_a", list(range(1, 22)), "invalid_input"),
    ]
    for who, units, code in cases:
        response = await api.call(who, "POST", "/bookings", meeting(api, call_units=units))
        error = (await response.json())["error"]
        assert response.status == 422, (units, error)
        assert error["code"] == code, (units, error)
        assert error["message"]
    assert count(world, Booking) == count(world, BookingUnit) == 0

    booking = await (await api.call("admin_orp_a", "POST", "/bookings",
                                    meeting(api, call_units=[own]))).json()
    path = f"/bookings/{booking['id']}"
    for units, code in (([elsewhere], "unit_of_another_organisation"),
                        ([own, silent], "unit_without_sip_address")):
        response = await api.call("admin_orp_a", "PATCH", path,
                                  {"call_units": units, "title": "Změněno"})
        assert (await response.json())["error"]["code"] == code
    after = await (await api.call("admin_orp_a", "GET", path)).json()
    assert after["call_units"] == [own]
    assert after["title"] == booking["title"] and after["sequence"] == booking["sequence"]


def _input(start_in: timedelta, units: tuple[int, ...], organisation: int) -> BookingInput:
    """A one-hour meeting ``start_in`` after the tests' clock, as a booking input."""
    start = (NOW + start_in).astimezone(PRAGUE).replace(tzinfo=None,
                                                                          second=0, microsecond=0)
    return BookingInput(organisation_id=organisation, title="Dávka",
                        schedule=Schedule(start, start + timedelta(hours=1), "Europe/Prague"),
                        participants=ParticipantMix(hd=2), call_units=units)


def test_in_one_batch_each_booking_gets_its_own_units_and_its_own_refusal(world: World) -> None:
    # The batch path: on PostgreSQL its bookings are written by one JSON statement.
    own = add_unit(world, "SN-ORPA", world.orp_a, "sip:a@10.0.0.8")
    elsewhere = add_unit(world, "SN-ORPB", world.orp_b, "sip:b@10.0.0.7")
    now = NOW
    principal = world.principal("admin_orp_a")
    batch = [prepare_booking(world.config, principal,
                             _input(timedelta(days=1, hours=hours), units, world.orp_a),
                             now, join_link)
             for hours, units in ((0, (own,)), (2, (elsewhere,)), (4, ()))]
    first, refused, plain = admit_batch(world.db, batch)
    assert isinstance(refused, InvalidInput) and refused.code == "unit_of_another_organisation"
    assert not isinstance(first, BaseException) and not isinstance(plain, BaseException)
    with world.db.session() as session:
        assert call_units_of(session, first.booking_id) == [own]
        assert call_units_of(session, plain.booking_id) == []
        assert len(session.scalars(select(Booking)).all()) == 2


def _booked_with_units(world: World, start_in: timedelta) -> tuple[int, datetime, int, int]:
    """A booking of ORP A ``start_in`` ahead naming three units, one of which has lost its
    SIP address since: the booking, its start, and the units that keep an address."""
    named = add_unit(world, "SN-1", world.orp_a, "sip:zasedacka@10.0.0.5",
                     site="Zasedací místnost")
    bare = add_unit(world, "SN-2", world.orp_a, "sip:sn2@10.0.0.6")
    loses_address = add_unit(world, "SN-3", world.orp_a, "sip:sn3@10.0.0.9")
    new = prepare_booking(world.config, world.principal("admin_orp_a"),
                          _input(start_in, (named, bare, loses_address), world.orp_a), NOW,
                          join_link)
    decision = admit_batch(world.db, [new])[0]
    assert not isinstance(decision, BaseException)
    with world.db.session() as session:
        session.get(Endpoint, loses_address).sip_uri = None  # taken away since booking
        booking = session.get(Booking, decision.booking_id)
        start = booking.local_start.replace(tzinfo=PRAGUE).astimezone(UTC)
    return decision.booking_id, start, named, bare


def room_worker(world: World, room: str) -> int:
    with world.db.session() as session:
        worker = session.scalar(select(Room.worker_id).where(Room.name == room))
        assert worker is not None
        return worker


UNITS = (("Zasedací místnost", "sip:zasedacka@10.0.0.5"), ("SN-2", "sip:sn2@10.0.0.6"))


def test_the_units_are_called_at_the_start_once_by_the_node_that_has_the_room(world: World) -> None:
    _, start, _, _ = _booked_with_units(world, timedelta(hours=2))
    # The room opens ahead of the start (the open lead): nobody is called yet.
    opening = start - timedelta(minutes=4)
    (opened,) = due_actions(world.db, world.config, opening, join_link)
    assert opened.kind == "open" and opened.units == ()
    here = room_worker(world, opened.room)
    with world.db.session() as session:
        other = set(session.scalars(select(MediaWorker.id))) - {here}
    assert other, "the world has a second worker"
    assert next_due(world.db, world.config, opening, [here]) == start
    # Another node's runner (its workers do not have the room) calls nobody, and is
    # not woken for it.
    assert due_actions(world.db, world.config, start, join_link, other) == []
    assert next_due(world.db, world.config, start, other) == start + timedelta(hours=1) \
        + world.config.close_grace
    # At the start, the node with the room calls the units that have an address.
    (call,) = due_actions(world.db, world.config, start, join_link, [here])
    assert (call.kind, call.room, call.worker_id, call.units) == ("call", opened.room, here, UNITS)
    assert due_actions(world.db, world.config, start + timedelta(minutes=1), join_link, [here]) == []

    # The node restarts: its calls are gone, so they are made again, once.
    later = start + timedelta(minutes=10)
    with world.db.write_session() as session:
        assert recall_units(session, later, workers=other) == 0  # not that node's room
        assert recall_units(session, later, workers=[here]) == 1
    assert next_due(world.db, world.config, later, [here]) == later  # overdue: at once
    (again,) = due_actions(world.db, world.config, later, join_link, [here])
    assert (again.kind, again.units) == ("call", UNITS)
    assert due_actions(world.db, world.config, later, join_link, [here]) == []

    # Once the meeting is over and closed, nothing is called again.
    after = start + timedelta(hours=1) + world.config.close_grace
    assert [a.kind for a in due_actions(world.db, world.config, after, join_link)] == ["close"]
    with world.db.write_session() as session:
        assert recall_units(session, after, workers=[here]) == 0


def test_a_meeting_whose_room_opens_after_its_start_calls_its_units_at_once(world: World) -> None:
    _, start, _, _ = _booked_with_units(world, timedelta(hours=2))
    # The service was down over the opening and the start: the first tick does both.
    late = start + timedelta(minutes=3)
    actions = due_actions(world.db, world.config, late, join_link)
    assert [(a.kind, a.units) for a in actions] == [("open", ()), ("call", UNITS)]


def test_a_room_moved_off_a_dead_node_has_its_units_called_by_the_new_one(db: Database) -> None:
    world = make_world(db, workers=0)
    # Two nodes with leases: the booking fits their pool.
    brno, ostrava = (register_node(db, name, 1, 500, NOW, labels=[], addresses=[f"https://{name}.test"],
                                   lease=timedelta(minutes=10)) for name in ("brno", "ostrava"))
    _, start, _, _ = _booked_with_units(world, timedelta(hours=2))
    # Both renewed their leases up to the opening: live at it and at the start.
    opening = start - timedelta(minutes=4)
    for node in (brno, ostrava):
        renew_lease(db, node, opening, timedelta(minutes=10))
    nodes = {brno: workers_of(db, brno), ostrava: workers_of(db, ostrava)}
    (opened,) = due_actions(db, world.config, opening, join_link)
    first = next(n for n, workers in nodes.items() if room_worker(world, opened.room) in workers)
    second = ostrava if first == brno else brno
    (call,) = due_actions(db, world.config, start, join_link, nodes[first])
    assert call.kind == "call"
    # The first node dies; the second renews its lease, reaps, and takes the room.
    dead_at = start + timedelta(minutes=7)
    renew_lease(db, second, dead_at, timedelta(minutes=10))
    assert [worker for _, worker in reap_dead_nodes(db, dead_at)] == list(nodes[second])
    assert due_actions(db, world.config, dead_at, join_link, nodes[first]) == []
    (again,) = due_actions(db, world.config, dead_at, join_link, nodes[second])
    assert (again.kind, again.room, again.units) == ("call", opened.room, UNITS)
