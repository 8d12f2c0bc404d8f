"""The trigger that changes ``capacity_days.version`` whenever a scheduled occurrence changes.

An occurrence touches the UTC days from its start to just before its end. Inserting,
deleting or changing (state, time, size, holder, class) an occurrence that is or was
``scheduled`` gives every day it touches, before and after the change, a new version:

- PostgreSQL: the writing transaction's id (``txid_current()``), which never repeats, so
  a decision knows the versions its own writes leave without reading them back; a day
  written twice in one transaction is updated once.
- SQLite: the version plus one (one writer at a time; a decision reads them back).

Being a trigger, it also covers writers outside scheduler/booking/bookings.py: another process, a
data fix in psql. The in-memory day cache (scheduler/booking/occupancy.py) relies on it to know
when what it holds is out of date.

The day rows are created by the decisions that lock them (scheduler/booking/transactions.py); a
write to a day with no row yet bumps nothing, and no cache can hold such a day, because
a cached day is always one whose version was read.

The statements run from ``Base.metadata.create_all`` (an ``after_create`` listener in
scheduler/models.py) and from the migration that introduced them, so both kinds of
schema have them.
"""

from __future__ import annotations

from sqlalchemy import Connection

# Columns whose change moves capacity; opened_at, reminded_at and the like do not.
CAPACITY_COLUMNS = "state, start_utc, end_utc, units, holder_id, izs, priority"


def _postgresql_touch(row: str) -> str:
    return f"""
  IF {row}.state = 'scheduled' THEN
    UPDATE capacity_days SET version = txid_current()
     WHERE day BETWEEN CAST({row}.start_utc AS date)
                   AND CAST({row}.end_utc - interval '1 microsecond' AS date)
       AND version <> txid_current();
  END IF;"""


_POSTGRESQL = [
    f"""
CREATE OR REPLACE FUNCTION capacity_days_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN {_postgresql_touch("OLD")}
  END IF;
  IF TG_OP <> 'DELETE' THEN {_postgresql_touch("NEW")}
  END IF;
  RETURN NULL;
END $$
""",
    f"""
CREATE TRIGGER booking_occurrences_capacity_days
AFTER INSERT OR DELETE OR UPDATE OF {CAPACITY_COLUMNS} ON booking_occurrences
FOR EACH ROW EXECUTE FUNCTION capacity_days_touched()
""",
]


def _sqlite_bump(row: str) -> str:
    # Instants are stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC, days as 'YYYY-MM-DD'.
    return (f"UPDATE capacity_days SET version = version + 1 WHERE day BETWEEN "
            f"date({row}.start_utc) AND date({row}.end_utc, '-0.001 seconds');")


_SQLITE = [
    f"""
CREATE TRIGGER booking_occurrences_capacity_days_insert AFTER INSERT ON booking_occurrences
WHEN NEW.state = 'scheduled'
BEGIN {_sqlite_bump("NEW")} END
""",
    f"""
CREATE TRIGGER booking_occurrences_capacity_days_delete AFTER DELETE ON booking_occurrences
WHEN OLD.state = 'scheduled'
BEGIN {_sqlite_bump("OLD")} END
""",
    f"""
CREATE TRIGGER booking_occurrences_capacity_days_update
AFTER UPDATE OF {CAPACITY_COLUMNS} ON booking_occurrences
WHEN OLD.state = 'scheduled' OR NEW.state = 'scheduled'
BEGIN {_sqlite_bump("OLD")} {_sqlite_bump("NEW")} END
""",
]


def create_triggers(connection: Connection) -> None:
    """Create the trigger(s) on ``booking_occurrences`` for the connection's database."""
    statements = _POSTGRESQL if connection.dialect.name == "postgresql" else _SQLITE
    for statement in statements:
        connection.exec_driver_sql(statement)
