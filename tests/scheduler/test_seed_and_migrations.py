"""Migrations build the schema the models describe; `seed` loads the real organisations."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from scheduler.booking.bookings import BookingChange, BookingInput, create_booking, update_booking
from scheduler.booking.dial_in import bridge_number, dial_in
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.db import Base, Database, alembic_config, upgrade
from scheduler.models import (
    Booking,
    BookingOccurrence,
    MediaWorker,
    Organisation,
    Quota,
    StandingBridge,
    UsageDayRolledUp,
)
from scheduler.seed import seed
from tests.scheduler.conftest import NOW, join_link, make_world

ORP_PER_REGION = {
    "Středočeský kraj": 26, "Jihočeský kraj": 17, "Plzeňský kraj": 15, "Karlovarský kraj": 7,
    "Ústecký kraj": 16, "Liberecký kraj": 10, "Královéhradecký kraj": 15,
    "Pardubický kraj": 15, "Kraj Vysočina": 15, "Jihomoravský kraj": 21,
    "Olomoucký kraj": 13, "Zlínský kraj": 13, "Moravskoslezský kraj": 22,
}


def test_migrations_match_the_models(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)  # a second run changes nothing
    database = Database(db_url)
    try:
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection),
                                           Base.metadata)
    finally:
        database.dispose()
    assert differences == []


def test_seed_loads_regions_and_orp_idempotently(db_url: str) -> None:
    upgrade(db_url)
    database = Database(db_url)
    try:
        with database.session() as session:
            first = seed(session, local_workers=2)
        with database.session() as session:
            second = seed(session, local_workers=2)
            organisations = session.scalars(select(Organisation)).all()
            workers = session.scalars(select(MediaWorker)).all()
            quotas = session.scalars(select(Quota)).all()
    finally:
        database.dispose()
    assert first.created["region"] == 14 and first.created["orp"] == 205
    assert second.created == {}
    by_id = {org.id: org for org in organisations}
    kinds = Counter(org.kind for org in organisations)
    assert kinds["region"] == 14 and kinds["orp"] == 205 and kinds["izs"] >= 3 * 14
    assert kinds["central"] >= 14
    per_region = Counter(by_id[org.parent_id].name for org in organisations
                         if org.kind == "orp" and org.parent_id is not None)
    assert all(by_id[o.parent_id].kind == "region" for o in organisations  # type: ignore[index]
               if o.kind == "orp")
    assert per_region == Counter(ORP_PER_REGION)
    assert len(workers) == 2
    assert sum(q.share_bp for q in quotas) + 2000 <= 10000  # leaves the 20 % IZS reserve


def test_meetings_and_bridges_made_before_pins_get_one_each(db_url: str) -> None:
    upgrade(db_url, "0010")
    database = Database(db_url)
    try:
        with database.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO organisations (id, name, kind, email, created_at) "
                "VALUES (1, 'HZS', 'izs', '', CURRENT_TIMESTAMP)"))
            for number in (1, 2):
                connection.execute(text(
                    "INSERT INTO standing_bridges (id, organisation_id, name, room_name, participants,"
                    " units, active, created_at) VALUES (:id, 1, 'Štáb', :room, '{}', 10, true,"
                    " CURRENT_TIMESTAMP)"), {"id": number, "room": f"izs-{number}"})
        upgrade(db_url)
        with database.session() as session:
            pins = [bridge.dial_in_pin for bridge in session.scalars(select(StandingBridge))]
            found = dial_in(session, bridge_number(2))
    finally:
        database.dispose()
    assert len(pins) == 2 and all(len(pin) == 6 and pin.isdigit() for pin in pins)
    assert found is not None and found.room == "izs-2" and found.pin == pins[1]


def test_days_rolled_up_before_the_marks_are_marked_done(db_url: str) -> None:
    """Migration 0014: the days with usage rows were rolled up, so they are not done
    again (a quiet day among them is, once)."""
    upgrade(db_url, "0013")
    database = Database(db_url)
    try:
        with database.engine.begin() as connection:
            for day, organisation in (("2026-11-02", 1), ("2026-11-02", 2), ("2026-11-04", 1)):
                connection.execute(text(
                    "INSERT INTO usage_daily (day, organisation_id, calls, participant_seconds,"
                    " booked_unit_hours) VALUES (:day, :org, 1, 60, 1.0)"),
                    {"day": day, "org": organisation})
        upgrade(db_url)
        with database.session() as session:
            days = session.scalars(select(UsageDayRolledUp.day).order_by(UsageDayRolledUp.day))
            assert [day.isoformat() for day in days] == ["2026-11-02", "2026-11-04"]
    finally:
        database.dispose()


def test_occurrences_displaced_before_the_fix_become_exceptions_of_their_series(db_url: str) -> None:
    """Migration 0015: an occurrence of a series displaced by an emergency before
    _displace made it an exception lacked one, and a later change of the series booked
    it again (at the emergency's time, beside the meeting its organiser was told is off)."""
    upgrade(db_url, "0014")
    database = Database(db_url)
    try:
        world = make_world(database)
        # Three Mondays at 10:00 Prague, across the change to summer time: the second is
        # at 08:00 UTC, not 09:00.
        series = create_booking(
            database,
            world.config,
            world.principal("admin_a"),
            BookingInput(
                organisation_id=world.region_a,
                title="Porada",
                participants=ParticipantMix(hd=40),
                schedule=Schedule(
                    datetime(2027, 3, 22, 10), datetime(2027, 3, 22, 11), rrule="FREQ=WEEKLY;COUNT=3"
                ),
            ),
            NOW,
            join_link,
        ).booking_id
        emergency = BookingInput(
            organisation_id=world.izs,
            title="Povodně",
            participants=ParticipantMix(hd=90),
            priority="emergency",
            schedule=Schedule(datetime(2027, 3, 29, 10), datetime(2027, 3, 29, 11)),
        )
        create_booking(database, world.config, world.principal("izs"), emergency, NOW, join_link)
        with database.session() as session:
            booking = session.get(Booking, series)
            assert booking is not None and booking.exdates == ["2027-03-29T10:00:00"]
            booking.exdates = []  # as _displace left it before the fix

        upgrade(db_url)

        def exdates() -> list[str]:
            with database.session() as session:
                booking = session.get(Booking, series)
                assert booking is not None
                return booking.exdates

        assert exdates() == ["2027-03-29T10:00:00"]
        # Downgrading keeps them (valid at 0014 too); upgrading again adds none twice.
        command.downgrade(alembic_config(db_url), "0014")
        assert exdates() == ["2027-03-29T10:00:00"]
        upgrade(db_url)
        assert exdates() == ["2027-03-29T10:00:00"]

        update_booking(
            database,
            world.config,
            world.principal("admin_a"),
            series,
            BookingChange(participants=ParticipantMix(hd=41)),
            NOW,
            join_link,
        )
        with database.session() as session:
            rows = session.execute(
                select(BookingOccurrence.start_utc, BookingOccurrence.state)
                .where(BookingOccurrence.booking_id == series, BookingOccurrence.state != "replaced")
                .order_by(BookingOccurrence.start_utc)
            ).all()
    finally:
        database.dispose()
    assert [(start.strftime("%m-%d %H:%M"), state) for start, state in rows] == [
        ("03-22 09:00", "scheduled"),
        ("03-29 08:00", "displaced"),
        ("04-05 08:00", "scheduled"),
    ]
