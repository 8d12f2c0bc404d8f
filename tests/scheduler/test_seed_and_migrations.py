"""Migrations build the schema the models describe; `seed` loads the real organisations."""

from __future__ import annotations

from collections import Counter

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from scheduler.booking.dial_in import bridge_number, dial_in
from scheduler.db import Base, Database, upgrade
from scheduler.models import MediaWorker, Organisation, Quota, StandingBridge, UsageDayRolledUp
from scheduler.seed import seed

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
