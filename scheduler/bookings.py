"""Bookings: the admission decision at booking time, and its one transaction.

The rules are in scheduler/capacity.py; here they are fed rows read inside the locked
transaction (scheduler/transactions.py) that then writes the booking, so no two
decisions can hand out the same capacity.
"""

from __future__ import annotations

import bisect
import dataclasses
import secrets
import threading
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, and_, func, insert, literal, or_, select, text, union_all, update
from sqlalchemy.orm import Session

from scheduler import capacity, notices
from scheduler.capacity import Allocation, CapacityPolicy, Request, Shortfall
from scheduler.config import SchedulerConfig
from scheduler.db import Database
from scheduler.errors import CapacityRefused, InvalidInput, NotFound, SchedulerError
from scheduler.group_commit import GroupCommit
from scheduler.models import Booking, BookingOccurrence, MediaNode, MediaWorker, Quota
from scheduler.notices import JoinLink
from scheduler.organisations import OrgInfo, holder_among, org_info, org_infos
from scheduler.permissions import Principal, require_book, require_change_booking
from scheduler.recurrence import (
    Occurrence,
    RecurrenceError,
    Schedule,
    expand,
    normalise_rrule,
)
from scheduler.transactions import days_touched, run_decision
from scheduler.units import ParticipantMix

# A booking may name a start this far in the past: "now" typed a moment ago is fine.
START_SLACK = timedelta(minutes=5)
MAX_PARTICIPANTS = 1000


@dataclass(frozen=True)
class BookingInput:
    organisation_id: int
    title: str
    schedule: Schedule
    participants: ParticipantMix
    priority: str = "routine"
    description: str = ""
    invitees: tuple[str, ...] = ()


@dataclass(frozen=True)
class BookingChange:
    """A change to a booking; ``None`` leaves a field as it is."""

    title: str | None = None
    description: str | None = None
    invitees: tuple[str, ...] | None = None
    participants: ParticipantMix | None = None
    schedule: Schedule | None = None


@dataclass
class Decision:
    booking_id: int
    displaced: list[int] = field(default_factory=list)  # occurrence ids
    skipped_holidays: list[date] = field(default_factory=list)


def pool_units(session: Session) -> int:
    total = session.scalar(select(func.coalesce(func.sum(MediaWorker.capacity_units), 0))
                           .join(MediaNode, MediaNode.id == MediaWorker.node_id)
                           .where(MediaWorker.enabled.is_(True), MediaNode.enabled.is_(True)))
    return int(total or 0)


# The pool and every share in one statement, built once (it runs in every decision).
_POLICY = union_all(
    select(literal(None, Integer), func.coalesce(func.sum(MediaWorker.capacity_units), 0))
    .join(MediaNode, MediaNode.id == MediaWorker.node_id)
    .where(MediaWorker.enabled.is_(True), MediaNode.enabled.is_(True)),
    select(Quota.organisation_id, Quota.share_bp))


def load_policy(session: Session, config: SchedulerConfig) -> CapacityPolicy:
    rows = session.connection().execute(_POLICY).all()
    units = next(int(value) for owner, value in rows if owner is None)
    return CapacityPolicy(pool_units=units,
                          izs_reserve_units=units * config.izs_reserve_percent // 100,
                          quotas={owner: units * share // 10000 for owner, share in rows
                                  if owner is not None},
                          borrow_lead=config.borrow_lead)


def load_allocations(session: Session, intervals: Sequence[tuple[datetime, datetime]],
                     max_duration: timedelta, *, exclude_booking: int | None = None,
                     ) -> list[Allocation]:
    """Scheduled occurrences overlapping any interval, sorted by start.

    ``start_utc >= start - max_duration`` lets the (state, start_utc) index bound the scan:
    no occurrence is longer than ``max_duration``.
    """
    if not intervals:
        return []
    merged = _merge(intervals)
    if session.get_bind().dialect.name == "postgresql":
        rows = session.connection().execute(_PG_ALLOCATIONS, {
            "starts": [start.astimezone(UTC).replace(tzinfo=None) for start, _ in merged],
            "ends": [end.astimezone(UTC).replace(tzinfo=None) for _, end in merged],
            "max_duration": max_duration, "exclude": exclude_booking or 0}).all()
    else:
        o = BookingOccurrence
        windows = [and_(o.start_utc >= start - max_duration, o.start_utc < end,
                        o.end_utc > start) for start, end in merged]
        query = select(o.start_utc, o.end_utc, o.units, o.holder_id, o.izs, o.priority, o.id) \
            .where(o.state == "scheduled", or_(*windows))
        if exclude_booking is not None:
            query = query.where(o.booking_id != exclude_booking)
        # Through the session's connection, not the ORM: plain rows, a third cheaper.
        rows = session.connection().execute(query).all()
    # Columns in Allocation's field order: a week is thousands of rows, and building each
    # tuple straight from its row is several times cheaper than by keyword.
    make = Allocation._make
    allocations = [make(row) for row in rows]
    allocations.sort(key=lambda a: a.start)
    return allocations


# PostgreSQL: one statement text whatever the number of windows (so it is prepared once
# and planned as one index range scan per window), returning instants already aware.
_PG_ALLOCATIONS = text("""
SELECT DISTINCT ON (o.id)
       (o.start_utc AT TIME ZONE 'UTC') AS start_utc, (o.end_utc AT TIME ZONE 'UTC') AS end_utc,
       o.units, o.holder_id, o.izs, o.priority, o.id
FROM unnest(CAST(:starts AS timestamp[]), CAST(:ends AS timestamp[])) AS w(s, e)
JOIN booking_occurrences AS o
  ON o.state = 'scheduled' AND o.start_utc >= w.s - CAST(:max_duration AS interval)
     AND o.start_utc < w.e AND o.end_utc > w.s
WHERE o.booking_id <> :exclude
""")


def _merge(intervals: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _near(allocations: list[Allocation], starts: list[datetime], start: datetime,
          end: datetime, max_duration: timedelta) -> list[Allocation]:
    """The allocations (sorted by start) that may overlap [start, end)."""
    low = bisect.bisect_left(starts, start - max_duration)
    high = bisect.bisect_left(starts, end)
    return [a for a in allocations[low:high] if a.end > start]


def _normalised(schedule: Schedule) -> Schedule:
    if not schedule.rrule:
        return schedule
    try:
        return dataclasses.replace(schedule, rrule=normalise_rrule(schedule.rrule,
                                                                   schedule.zone))
    except RecurrenceError as exc:
        raise InvalidInput(exc.code, exc.message) from None


def _expand(config: SchedulerConfig, schedule: Schedule,
            now: datetime) -> tuple[list[Occurrence], list[date]]:
    try:
        return expand(schedule, config.limits, now)
    except RecurrenceError as exc:
        raise InvalidInput(exc.code, exc.message) from None


def _units(config: SchedulerConfig, mix: ParticipantMix) -> int:
    if mix.total < 1:
        raise InvalidInput("no_participants", "a booking needs at least one participant")
    if mix.total > MAX_PARTICIPANTS:
        raise InvalidInput("too_many_participants",
                           f"a booking may expect at most {MAX_PARTICIPANTS} participants")
    return mix.units(config.unit_costs)


def _conflict_json(occurrence: Occurrence, shortfall: Shortfall, zone: str) -> dict[str, object]:
    return {"occurrence": occurrence.label(),
            "occurrence_start_utc": occurrence.start.isoformat(),
            "at": shortfall.at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"),
            "needed_units": shortfall.needed, "available_units": max(0, shortfall.available),
            "reason": shortfall.reason}


REASONS = {
    "pool_full": "the pool is full",
    "izs_reserve": "only the IZS reserve is left",
    "quota": "the rest is guaranteed to other organisations",
}


class _Calendar:
    """The scheduled occurrences a decision reads, sorted by start, as the batch changes
    them: occurrences admitted earlier in the batch are added, displaced ones dropped."""

    def __init__(self, allocations: list[Allocation], max_duration: timedelta) -> None:
        self.allocations = allocations
        self.starts = [a.start for a in allocations]
        self.max_duration = max_duration
        self.gone: set[int | None] = set()

    def near(self, start: datetime, end: datetime) -> list[Allocation]:
        return [a for a in _near(self.allocations, self.starts, start, end, self.max_duration)
                if a.ref is None or a.ref not in self.gone]

    def take(self, allocation: Allocation) -> None:
        index = bisect.bisect_right(self.starts, allocation.start)
        self.starts.insert(index, allocation.start)
        self.allocations.insert(index, allocation)

    def release(self, victims: list[Allocation]) -> None:
        self.gone.update(a.ref for a in victims)


def _check(calendar: _Calendar, policy: CapacityPolicy, org: OrgInfo, priority: str,
           units: int, occurrences: list[Occurrence], now: datetime,
           zone: str) -> tuple[int | None, list[Allocation]]:
    """Check every occurrence; returns the holder charged and the occurrences to displace.

    Raises CapacityRefused naming every occurrence that does not fit.
    """
    holder = holder_among(org, policy.quotas)
    conflicts: list[dict[str, object]] = []
    displaced: list[Allocation] = []
    for occurrence in occurrences:
        request = Request(occurrence.start, occurrence.end, units, holder, org.izs, priority)
        near = calendar.near(occurrence.start, occurrence.end)
        shortfall = capacity.check(request, near, policy, now)
        if shortfall is None:
            continue
        if priority == "emergency":
            chosen = capacity.choose_displacements(request, near, policy, now)
            if chosen is not None:
                displaced.extend(chosen)
                calendar.release(chosen)
                continue
        conflicts.append(_conflict_json(occurrence, shortfall, zone))
    if conflicts:
        first = conflicts[0]
        reason = REASONS.get(str(first["reason"]), str(first["reason"]))
        raise CapacityRefused(
            "capacity_exceeded",
            f"{len(conflicts)} of {len(occurrences)} occurrence(s) do not fit; the first, "
            f"{first['occurrence']}, needs {units} units but {first['available_units']} are "
            f"free at {first['at']}: {reason}",
            conflicts=conflicts[:50], conflict_count=len(conflicts))
    return holder, displaced


def _decide(session: Session, config: SchedulerConfig, org: OrgInfo, priority: str,
            units: int, occurrences: list[Occurrence], now: datetime, zone: str,
            exclude_booking: int | None = None) -> tuple[int | None, list[Allocation]]:
    """:func:`_check` against what the database holds now."""
    max_duration = config.limits.max_duration
    allocations = load_allocations(session, [(o.start, o.end) for o in occurrences],
                                   max_duration, exclude_booking=exclude_booking)
    return _check(_Calendar(allocations, max_duration), load_policy(session, config), org,
                  priority, units, occurrences, now, zone)


def _room_name() -> str:
    return "mtg-" + secrets.token_hex(6)


def _write_occurrences(session: Session, booking: Booking, occurrences: list[Occurrence],
                       holder: int | None, org: OrgInfo) -> list[BookingOccurrence]:
    rows = [BookingOccurrence(booking_id=booking.id, start_utc=o.start, end_utc=o.end,
                              units=booking.units, holder_id=holder, izs=org.izs,
                              priority=booking.priority, state="scheduled")
            for o in occurrences]
    session.add_all(rows)
    return rows


def _displace(session: Session, victims: list[Allocation], emergency: Booking, now: datetime,
              join_link: JoinLink) -> list[int]:
    ids = [a.ref for a in victims if a.ref is not None]
    if not ids:
        return []
    rows = session.scalars(select(BookingOccurrence).where(BookingOccurrence.id.in_(ids))).all()
    for row in rows:
        row.state = "displaced"
        row.displaced_by = emergency.id
        booking = session.get(Booking, row.booking_id)
        assert booking is not None
        booking.sequence += 1
        booking.updated_at = now
        notices.displaced(session, booking, row, emergency.title, now, join_link)
    return ids


def _check_priority(priority: str) -> None:
    if priority not in capacity.PRIORITY_CLASSES:
        raise InvalidInput("invalid_priority",
                           f"priority must be one of {', '.join(capacity.PRIORITY_CLASSES)}")


@dataclass
class NewBooking:
    """A booking checked for everything but capacity, waiting for its decision."""

    config: SchedulerConfig
    principal: Principal
    organisation_id: int
    priority: str
    units: int
    occurrences: list[Occurrence]
    skipped: list[date]
    fields: dict[str, object]  # the booking's columns, but for ``izs`` (from the org)
    ics: bytes | None
    now: datetime
    join_link: JoinLink


_queues: weakref.WeakKeyDictionary[Database, GroupCommit[NewBooking, Decision]] = \
    weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def admission_queue(db: Database) -> GroupCommit[NewBooking, Decision]:
    """The process's queue of new bookings for ``db``: they are decided in batches
    (scheduler/group_commit.py), each batch by :func:`admit_batch`."""
    with _queues_lock:
        queue = _queues.get(db)
        if queue is None:
            # The queue must not keep its database alive (the dictionary's key is weak).
            database = weakref.ref(db)
            queue = _queues[db] = GroupCommit(
                lambda batch: admit_batch(database(), batch))  # type: ignore[arg-type]
        return queue


def prepare_booking(config: SchedulerConfig, principal: Principal, data: BookingInput,
                    now: datetime, join_link: JoinLink) -> NewBooking:
    """Everything about a new booking that needs no database: checks, occurrences, the
    invitation. Raises InvalidInput."""
    _check_priority(data.priority)
    data = dataclasses.replace(data, schedule=_normalised(data.schedule))
    units = _units(config, data.participants)
    occurrences, skipped = _expand(config, data.schedule, now)
    if occurrences[0].start < now - START_SLACK:
        raise InvalidInput("in_past", f"the occurrence {occurrences[0].label()} is in the past")
    fields: dict[str, object] = dict(
        uid=f"{uuid.uuid4()}@multipoint", sequence=0, organisation_id=data.organisation_id,
        organiser_id=principal.user_id, organiser_email=principal.email,
        invitees=list(data.invitees), title=data.title, description=data.description,
        priority=data.priority, zone=data.schedule.zone,
        local_start=data.schedule.start, local_end=data.schedule.end,
        rrule=data.schedule.rrule, exdates=[d.isoformat() for d in data.schedule.exdates],
        skip_public_holidays=data.schedule.skip_public_holidays,
        participants=data.participants.as_dict(), units=units, room_name=_room_name(),
        status="confirmed", created_at=now, updated_at=now)
    # The invitation depends on nothing the decision reads: render it (milliseconds of
    # time-zone work) before queueing, not inside the transaction.
    ics = notices.render_invitation(Booking(**fields), [o.local_start for o in occurrences],
                                    now, join_link)
    return NewBooking(config, principal, data.organisation_id, data.priority, units,
                      occurrences, skipped, fields, ics, now, join_link)


def create_booking(db: Database, config: SchedulerConfig, principal: Principal,
                   data: BookingInput, now: datetime, join_link: JoinLink) -> Decision:
    new = prepare_booking(config, principal, data, now, join_link)
    try:
        if data.priority == "emergency":
            # Alone: what it displaces must be rows already written, never a booking
            # admitted earlier in the same batch (the database's locks still order it).
            outcome = admit_batch(db, [new])[0]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return admission_queue(db).submit(new)
    except CapacityRefused as refusal:
        with db.session() as session:
            org = org_info(session, data.organisation_id)
        assert org is not None  # refused for capacity, so it was found
        refusal.details["suggestions"] = suggest(db, config, org, data.priority, new.units,
                                                 refusal, data.schedule, now)
        raise


def admit_batch(db: Database, batch: Sequence[NewBooking]) -> list[Decision | BaseException]:
    """Decide a batch of new bookings in one locked transaction, in order.

    Each is checked against the calendar as the ones before it in the batch left it, so
    the batch admits exactly what one-by-one decisions would. A refusal or permission
    error belongs to its booking alone; anything else fails the batch (and
    GroupCommit then decides each on its own).
    """
    days = days_touched((o.start, o.end) for new in batch for o in new.occurrences)
    return run_decision(db, days, lambda session: _admit_batch_in(session, batch))


def _admit_batch_in(session: Session, batch: Sequence[NewBooking]) -> list[Decision | BaseException]:
    orgs = org_infos(session, {new.organisation_id for new in batch})
    max_duration = max(new.config.limits.max_duration for new in batch)
    calendar = _Calendar(load_allocations(session, [(o.start, o.end) for new in batch
                                                    for o in new.occurrences], max_duration),
                         max_duration)
    policies: dict[int, CapacityPolicy] = {}
    outcomes: list[Decision | BaseException] = []
    admitted: list[tuple[int, NewBooking, OrgInfo, int | None, list[Allocation]]] = []
    for index, new in enumerate(batch):
        try:
            org = orgs.get(new.organisation_id)
            if org is None:
                raise NotFound("organisation_not_found",
                               f"no organisation {new.organisation_id}")
            require_book(new.principal, org, new.priority)
            policy = policies.get(id(new.config))
            if policy is None:
                policy = policies[id(new.config)] = load_policy(session, new.config)
            holder, victims = _check(calendar, policy, org, new.priority, new.units,
                                     new.occurrences, new.now, str(new.fields["zone"]))
        except SchedulerError as refusal:
            outcomes.append(refusal)
            continue
        for o in new.occurrences:
            calendar.take(Allocation(o.start, o.end, new.units, holder, org.izs, new.priority))
        admitted.append((index, new, org, holder, victims))
        outcomes.append(Decision(0))  # its id once written
    if not admitted:
        return outcomes
    rows = [{**new.fields, "izs": org.izs} for _, new, org, _, _ in admitted]
    # Core inserts of many rows at once (the ORM's unit of work costs milliseconds each).
    connection = session.connection()
    ids = connection.execute(insert(Booking.__table__).returning(  # type: ignore[arg-type]
        Booking.__table__.c.id, sort_by_parameter_order=True), rows).scalars().all()
    connection.execute(insert(BookingOccurrence.__table__), [  # type: ignore[arg-type]
        {"booking_id": booking_id, "start_utc": o.start, "end_utc": o.end, "units": new.units,
         "holder_id": holder, "izs": org.izs, "priority": new.priority, "state": "scheduled"}
        for booking_id, (_, new, org, holder, _) in zip(ids, admitted, strict=True)
        for o in new.occurrences])
    for booking_id, row, (index, new, _, _, victims) in zip(ids, rows, admitted, strict=True):
        booking = Booking(id=booking_id, **row)  # not added: its row is written above
        displaced = _displace(session, victims, booking, new.now, new.join_link)
        notices.invite(session, booking, [], new.now, new.join_link, ics=new.ics)
        outcomes[index] = Decision(booking_id, displaced, new.skipped)
    return outcomes


def suggest(db: Database, config: SchedulerConfig, org: OrgInfo, priority: str, units: int,
            refusal: CapacityRefused, schedule: Schedule, now: datetime,
            exclude_booking: int | None = None) -> list[dict[str, str]]:
    """The nearest start times at which the first conflicting occurrence would fit."""
    conflicts = refusal.details.get("conflicts") or []
    if not conflicts:
        return []
    start = datetime.fromisoformat(str(conflicts[0]["occurrence_start_utc"]))  # type: ignore[index]
    duration = schedule.end - schedule.start
    tz = ZoneInfo(schedule.zone)
    slots: list[datetime] = []
    # Nearest first: most refusals find three slots within hours, so look half a day
    # either way, and only then three days (a person moves a meeting within the week).
    # Every hour more of the calendar is more rows to read and sweep.
    with db.session() as session:
        policy = load_policy(session, config)
        holder = holder_among(org, policy.quotas)
        request = Request(start, start + duration, units, holder, org.izs, priority)
        for search in (timedelta(hours=12), timedelta(days=3)):
            allocations = load_allocations(session,
                                           [(start - search, start + duration + search)],
                                           config.limits.max_duration,
                                           exclude_booking=exclude_booking)
            slots = capacity.nearest_slots(request, allocations, policy, now, search=search)
            if len(slots) == 3:
                break
    return [{"start": slot.astimezone(tz).strftime("%Y-%m-%dT%H:%M"),
             "end": (slot + duration).astimezone(tz).strftime("%Y-%m-%dT%H:%M")}
            for slot in slots]


def get_booking(session: Session, booking_id: int) -> tuple[Booking, OrgInfo]:
    booking = session.get(Booking, booking_id)
    if booking is None:
        raise NotFound("booking_not_found", f"no booking {booking_id}")
    org = org_info(session, booking.organisation_id)
    assert org is not None
    return booking, org


def update_booking(db: Database, config: SchedulerConfig, principal: Principal,
                   booking_id: int, change: BookingChange, now: datetime,
                   join_link: JoinLink) -> Decision:
    """Change a booking; a new time or size is checked again like a new booking.

    Occurrences that have started stay as they were; future ones are replaced.
    """
    with db.session() as session:
        booking, org = get_booking(session, booking_id)
        require_change_booking(principal, org)
        if booking.status == "cancelled":
            raise InvalidInput("booking_cancelled", "a cancelled booking cannot be changed")
        current = Schedule(booking.local_start, booking.local_end, booking.zone, booking.rrule,
                           tuple(datetime.fromisoformat(d) for d in booking.exdates),
                           booking.skip_public_holidays)
        mix = ParticipantMix(**booking.participants)
    schedule = _normalised(change.schedule or current)
    participants = change.participants or mix
    units = _units(config, participants)
    recheck = change.schedule is not None or change.participants is not None
    occurrences: list[Occurrence] = []
    skipped: list[date] = []
    if recheck:
        expanded, skipped = _expand(config, schedule, now)
        occurrences = [o for o in expanded if o.start >= now]
        if not occurrences:
            raise InvalidInput("in_past", "the changed schedule has no future occurrence")

    def decide(session: Session) -> Decision:
        booking, _ = get_booking(session, booking_id)
        displaced: list[int] = []
        if recheck:
            holder, victims = _decide(session, config, org, booking.priority, units,
                                      occurrences, now, schedule.zone,
                                      exclude_booking=booking.id)
            session.execute(update(BookingOccurrence)
                            .where(BookingOccurrence.booking_id == booking.id,
                                   BookingOccurrence.state == "scheduled",
                                   BookingOccurrence.start_utc >= now,
                                   BookingOccurrence.opened_at.is_(None))
                            .values(state="replaced"))
            booking.units = units
            booking.participants = participants.as_dict()
            booking.local_start, booking.local_end = schedule.start, schedule.end
            booking.zone, booking.rrule = schedule.zone, schedule.rrule
            booking.exdates = [d.isoformat() for d in schedule.exdates]
            booking.skip_public_holidays = schedule.skip_public_holidays
            _write_occurrences(session, booking, occurrences, holder, org)
            displaced = _displace(session, victims, booking, now, join_link)
        if change.title is not None:
            booking.title = change.title
        if change.description is not None:
            booking.description = change.description
        if change.invitees is not None:
            booking.invitees = list(change.invitees)
        booking.sequence += 1
        booking.updated_at = now
        session.flush()
        rows = session.scalars(select(BookingOccurrence)
                               .where(BookingOccurrence.booking_id == booking.id)).all()
        notices.invite(session, booking, rows, now, join_link, changed=True)
        return Decision(booking.id, displaced, skipped)

    days = days_touched((o.start, o.end) for o in occurrences)
    try:
        return run_decision(db, days, decide)
    except CapacityRefused as refusal:
        refusal.details["suggestions"] = suggest(db, config, org, booking.priority, units,
                                                 refusal, schedule, now,
                                                 exclude_booking=booking_id)
        raise


def cancel_booking(db: Database, principal: Principal, booking_id: int, now: datetime,
                   join_link: JoinLink) -> None:
    """Cancel a booking: its future occurrences free their capacity; invitees are told."""
    with db.write_session() as session:
        booking, org = get_booking(session, booking_id)
        require_change_booking(principal, org)
        if booking.status == "cancelled":
            return
        booking.status = "cancelled"
        booking.sequence += 1
        booking.updated_at = now
        session.execute(update(BookingOccurrence)
                        .where(BookingOccurrence.booking_id == booking.id,
                               BookingOccurrence.state == "scheduled",
                               BookingOccurrence.end_utc > now)
                        .values(state="cancelled"))
        notices.cancelled(session, booking, now, join_link)
