"""bookings: an occurrence of a series displaced by an emergency becomes an exception of it

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

Since then ``_displace`` (scheduler/booking/bookings.py) adds the occurrence to its
series' ``exdates``; ones displaced before lack it, and a later change of their series
would book them again. Data only: the schema stays.
"""

from datetime import UTC
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bookings = sa.table(
        "bookings",
        sa.column("id", sa.Integer),
        sa.column("zone", sa.String),
        sa.column("rrule", sa.String),
        sa.column("exdates", sa.JSON),
    )
    occurrences = sa.table(
        "booking_occurrences",
        sa.column("booking_id", sa.Integer),
        sa.column("state", sa.String),
        sa.column("start_utc", sa.DateTime),  # naive UTC (models.UTCDateTime)
        sa.column("instance_local", sa.DateTime),
    )
    connection = op.get_bind()
    displaced = connection.execute(
        sa.select(
            bookings.c.id,
            bookings.c.zone,
            bookings.c.exdates,
            occurrences.c.start_utc,
            occurrences.c.instance_local,
        )
        .join(occurrences, occurrences.c.booking_id == bookings.c.id)
        .where(occurrences.c.state == "displaced", bookings.c.rrule.is_not(None), bookings.c.rrule != "")
    ).all()
    exdates: dict[int, set[str]] = {}
    changed: set[int] = set()
    for booking_id, zone, current, start_utc, instance_local in displaced:
        # The wall-clock start of the series' occurrence it stands for, as _instance():
        # an occurrence moved on its own names it; one at its series time is its start.
        if instance_local is None:
            instance_local = start_utc.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        excepted = exdates.setdefault(booking_id, set(current or []))
        if instance_local.isoformat() not in excepted:
            excepted.add(instance_local.isoformat())
            changed.add(booking_id)
    for booking_id in changed:
        connection.execute(
            bookings.update().where(bookings.c.id == booking_id).values(exdates=sorted(exdates[booking_id]))
        )


def downgrade() -> None:
    # Nothing to undo: the exceptions are what the displaced occurrences are at 0014 too
    # (cancelled ones are excepted alike), and they cannot be told from ones added since.
    pass
