"""A booking names room units to call at its start: the API, its checks, both write paths,
and what the job that opens the room hands the media side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from scheduler.booking.bookings import (
    BookingInput,
    admit_batch,
    call_units_of,
    prepare_booking,
)
from scheduler.booking.jobs import due_actions
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.errors import InvalidInput
from scheduler.models import AuditEntry, Booking, BookingUnit, Endpoint
from tests.scheduler.conftest import NOW, World, join_link
from tests.scheduler.test_api import Api, serving

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


def test_the_job_that_opens_the_room_hands_over_the_units_and_their_start(world: World) -> None:
    named = add_unit(world, "SN-1", world.orp_a, "sip:zasedacka@10.0.0.5",
                     site="Zasedací místnost")
    bare = add_unit(world, "SN-2", world.orp_a, "sip:sn2@10.0.0.6")
    loses_address = add_unit(world, "SN-3", world.orp_a, "sip:sn3@10.0.0.9")
    now = NOW
    new = prepare_booking(world.config, world.principal("admin_orp_a"),
                          _input(timedelta(hours=2), (named, bare, loses_address),
                                 world.orp_a), now, join_link)
    decision = admit_batch(world.db, [new])[0]
    assert not isinstance(decision, BaseException)
    with world.db.session() as session:
        session.get(Endpoint, loses_address).sip_uri = None  # taken away since booking
        booking = session.get(Booking, decision.booking_id)
        start = booking.local_start.replace(tzinfo=PRAGUE)
    # The room opens ahead of the start (the open lead); the units are rung at the start.
    opening = start - timedelta(minutes=4)
    actions = due_actions(world.db, world.config, opening, join_link)
    assert [a.kind for a in actions] == ["open"]
    info = actions[0].info
    assert info is not None
    assert info.call_units == (("Zasedací místnost", "sip:zasedacka@10.0.0.5"),
                               ("SN-2", "sip:sn2@10.0.0.6"))
    assert info.starts_at is not None and info.opened_at is not None
    assert info.starts_at - info.opened_at == timedelta(minutes=4)
