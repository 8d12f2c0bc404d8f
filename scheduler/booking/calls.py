"""Call records (who joined which room when, for how long, from where) and usage."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Select, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from scheduler.booking.recurrence import DEFAULT_ZONE
from scheduler.booking.units import KINDS
from scheduler.grants.csv_cells import neutralise
from scheduler.models import (
    Booking,
    BookingOccurrence,
    CallRecord,
    Room,
    StandingBridge,
    UsageDaily,
    UsageDayRolledUp,
)


def record_join(session: Session, room_name: str, now: datetime, *, participant: str = "",
                kind: str = "hd", organisation_id: int | None = None,
                worker_id: int | None = None) -> int:
    """Start a call record; the organisation defaults to the room's owner, the worker to
    the room's (a room spread over several workers names the participant's own)."""
    room = session.scalar(select(Room).where(Room.name == room_name))
    booking_id = room.booking_id if room else None
    if organisation_id is None and room is not None:
        if room.booking_id is not None:
            organisation_id = session.scalar(select(Booking.organisation_id)
                                             .where(Booking.id == room.booking_id))
        elif room.bridge_id is not None:
            organisation_id = session.scalar(select(StandingBridge.organisation_id)
                                             .where(StandingBridge.id == room.bridge_id))
    record = CallRecord(room_name=room_name, booking_id=booking_id,
                        organisation_id=organisation_id, participant=participant[:200],
                        kind=kind if kind in KINDS else "hd",
                        worker_id=worker_id or (room.worker_id if room else None),
                        joined_at=now)
    session.add(record)
    session.flush()
    return record.id


def record_leave(session: Session, record_id: int, now: datetime) -> None:
    record = session.get(CallRecord, record_id)
    if record is not None and record.left_at is None:
        record.left_at = max(now, record.joined_at)


def end_calls_on_workers(session: Session, worker_ids: Collection[int], at: datetime) -> int:
    """The open calls on these workers ended by ``at`` (their node died or restarted:
    nobody is in them any more). How many were open.

    Nobody else would close them: the front that kept them in memory is gone, and an
    open record counts in its worker's live load (admission) and in usage forever.
    """
    if not worker_ids:
        return 0
    records = session.scalars(select(CallRecord).where(
        CallRecord.worker_id.in_(list(worker_ids)), CallRecord.left_at.is_(None))).all()
    for record in records:
        record.left_at = max(at, record.joined_at)
    return len(records)


def reopen_calls(session: Session, record_ids: Collection[int], at: datetime) -> dict[int, int]:
    """The participants of these call records are still in their calls, but the records
    were ended: their node was reaped while only paused (a SIGSTOP, a long GC pause, a
    frozen VM) and woke up with them connected. A new record for each from ``at``, as
    the old one was (room, booking, organisation, participant, kind, worker), so usage
    and the worker's live load count them again; the gap is the pause, when their media
    stood still. Old id -> new id; records still open get none.
    """
    if not record_ids:
        return {}
    reopened: dict[int, int] = {}
    for old in session.scalars(select(CallRecord).where(
            CallRecord.id.in_(list(record_ids)), CallRecord.left_at.is_not(None))
            .order_by(CallRecord.id)):
        new = CallRecord(room_name=old.room_name, booking_id=old.booking_id,
                         organisation_id=old.organisation_id, participant=old.participant,
                         kind=old.kind, worker_id=old.worker_id, joined_at=max(at, old.left_at))
        session.add(new)
        session.flush()
        reopened[old.id] = new.id
    return reopened


def record_kind(session: Session, record_id: int, kind: str) -> None:
    """The participant of an open call record is of another kind now (switched to mixed
    or back): its worker's live load counts it so (scheduler/media/rooms.py)."""
    record = session.get(CallRecord, record_id)
    if record is not None and record.left_at is None:
        record.kind = kind


def _records_in(start: datetime, end: datetime, organisation_id: int | None) -> Select[tuple[CallRecord]]:
    query = select(CallRecord).where(CallRecord.joined_at >= start, CallRecord.joined_at < end)
    if organisation_id is not None:
        query = query.where(CallRecord.organisation_id == organisation_id)
    return query


def call_records(session: Session, start: datetime, end: datetime,
                 organisation_id: int | None = None, limit: int | None = None,
                 offset: int = 0) -> list[CallRecord]:
    """The calls joined in [start, end), by when; every one of them unless ``limit``."""
    query = _records_in(start, end, organisation_id) \
        .order_by(CallRecord.joined_at, CallRecord.id).limit(limit).offset(offset)
    return list(session.scalars(query))


def count_call_records(session: Session, start: datetime, end: datetime,
                       organisation_id: int | None = None) -> int:
    query = _records_in(start, end, organisation_id).subquery()
    return int(session.scalar(select(func.count()).select_from(query)) or 0)


def call_record_json(record: CallRecord, now: datetime) -> dict[str, object]:
    until = record.left_at or now
    return {"id": record.id, "room": record.room_name, "booking_id": record.booking_id,
            "organisation_id": record.organisation_id, "participant": record.participant,
            "kind": record.kind, "joined_at": record.joined_at.isoformat(),
            "left_at": record.left_at.isoformat() if record.left_at else None,
            "duration_s": int((until - record.joined_at).total_seconds())}


def to_csv(rows: list[dict[str, object]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    # Participant names are whatever people typed at join: never a formula in a spreadsheet.
    writer.writerows({k: neutralise(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


# Usage is counted per calendar day where its readers live: a month's report is that
# month in Prague, not from 23:00 (22:00 in summer) of the last day of the month before.
USAGE_ZONE = ZoneInfo(DEFAULT_ZONE)


def usage_day(instant: datetime) -> date:
    """The day of usage (in :data:`USAGE_ZONE`) that ``instant`` falls on."""
    return instant.astimezone(USAGE_ZONE).date()


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    """The day in :data:`USAGE_ZONE`, in UTC: 23 or 25 hours on the days the clocks
    change (midnight itself always exists in Prague)."""
    return (datetime.combine(day, time(0), tzinfo=USAGE_ZONE).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), time(0), tzinfo=USAGE_ZONE).astimezone(UTC))


def rollup_day(session: Session, day: date, now: datetime) -> int:
    """Recompute the usage of one day (in :data:`USAGE_ZONE`) per organisation;
    idempotent (replaces the day). A day over by ``now`` is marked done in the same
    transaction; one still running (rolled up by hand) is done again after it ends."""
    start, end = _day_bounds(day)
    if end <= now:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(UsageDayRolledUp).values(day=day)
                        .on_conflict_do_nothing(index_elements=["day"]))
    totals: dict[int, dict[str, float]] = {}
    records = session.execute(select(CallRecord.organisation_id, CallRecord.joined_at,
                                     CallRecord.left_at)
                              .where(CallRecord.joined_at < end,
                                     func.coalesce(CallRecord.left_at, end) > start)).all()
    for org, joined, left in records:
        if org is None:
            continue
        seconds = (min(left or end, end) - max(joined, start)).total_seconds()
        entry = totals.setdefault(org, {"calls": 0, "seconds": 0.0, "unit_hours": 0.0})
        entry["calls"] += 1 if joined >= start else 0
        entry["seconds"] += max(0.0, seconds)
    o = BookingOccurrence
    booked = session.execute(select(Booking.organisation_id, o.start_utc, o.end_utc, o.units)
                             .join(Booking, Booking.id == o.booking_id)
                             .where(o.state == "scheduled", o.start_utc < end,
                                    o.end_utc > start)).all()
    for org, occ_start, occ_end, units in booked:
        hours = (min(occ_end, end) - max(occ_start, start)).total_seconds() / 3600
        entry = totals.setdefault(org, {"calls": 0, "seconds": 0.0, "unit_hours": 0.0})
        entry["unit_hours"] += units * hours
    session.execute(delete(UsageDaily).where(UsageDaily.day == day))
    for org, entry in totals.items():
        session.add(UsageDaily(day=day, organisation_id=org, calls=int(entry["calls"]),
                               participant_seconds=int(entry["seconds"]),
                               booked_unit_hours=round(entry["unit_hours"], 3)))
    return len(totals)


def usage(session: Session, first: date, last: date,
          organisation_id: int | None = None) -> list[dict[str, object]]:
    """Rolled-up usage per organisation over [first, last] (days the roll-up has done)."""
    query = (select(UsageDaily.organisation_id, func.sum(UsageDaily.calls),
                    func.sum(UsageDaily.participant_seconds),
                    func.sum(UsageDaily.booked_unit_hours))
             .where(UsageDaily.day >= first, UsageDaily.day <= last)
             .group_by(UsageDaily.organisation_id).order_by(UsageDaily.organisation_id))
    if organisation_id is not None:
        query = query.where(UsageDaily.organisation_id == organisation_id)
    return [{"organisation_id": org, "calls": int(calls or 0),
             "participant_hours": round(int(seconds or 0) / 3600, 2),
             "booked_unit_hours": round(float(hours or 0), 2)}
            for org, calls, seconds, hours in session.execute(query)]
