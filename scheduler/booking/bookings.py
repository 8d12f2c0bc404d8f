"""Bookings: the admission decision at booking time, and its one transaction.

The rules are in scheduler/booking/capacity.py; here they are fed rows read inside the locked
transaction (scheduler/booking/transactions.py) that then writes the booking, so no two
decisions can hand out the same capacity.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import threading
import uuid
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr
from sqlalchemy import (
    Connection,
    Integer,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from scheduler.access import audit
from scheduler.access.permissions import (
    Principal,
    can_see_booking,
    require_book,
    require_change_booking,
)
from scheduler.booking import capacity, notices
from scheduler.booking.capacity import Allocation, CapacityPolicy, Request, Segment, Shortfall
from scheduler.booking.group_commit import GroupCommit
from scheduler.booking.notices import JoinLink
from scheduler.booking.occupancy import (
    Day,
    DayCache,
    by_day,
    day_cache,
    load_allocations,
    versions_after,
)
from scheduler.booking.pool_version import pool_cache
from scheduler.booking.recurrence import (
    Occurrence,
    RecurrenceError,
    Schedule,
    expand,
    normalise_rrule,
    to_utc,
)
from scheduler.booking.transactions import days_of, days_touched, run_decision
from scheduler.booking.units import ParticipantMix
from scheduler.config import SchedulerConfig
from scheduler.db import Database
from scheduler.errors import CapacityRefused, Conflict, InvalidInput, NotFound, SchedulerError
from scheduler.models import (
    AuditEntry,
    Booking,
    BookingOccurrence,
    BookingUnit,
    Endpoint,
    MediaNode,
    MediaWorker,
    Quota,
    Room,
    new_pin,
)
from scheduler.organisations import (
    OrgInfo,
    all_org_infos,
    holder_among,
    org_info,
    org_infos,
    subtree_ids,
)

# A booking may name a start this far in the past: "now" typed a moment ago is fine.
START_SLACK = timedelta(minutes=5)
# The refusal of a change that leaves no meeting to come (the form's preview says it too).
NO_FUTURE_OCCURRENCE = "the changed schedule has no future occurrence"
MAX_PARTICIPANTS = 1000
MAX_CALL_UNITS = 20  # room units one booking calls at its start


@dataclass(frozen=True)
class BookingInput:
    organisation_id: int
    title: str
    schedule: Schedule
    participants: ParticipantMix
    priority: str = "routine"
    description: str = ""
    invitees: tuple[str, ...] = ()
    call_units: tuple[int, ...] = ()  # endpoint ids: room units called in at each start


@dataclass(frozen=True)
class BookingChange:
    """A change to a booking; ``None`` leaves a field as it is."""

    title: str | None = None
    description: str | None = None
    invitees: tuple[str, ...] | None = None
    participants: ParticipantMix | None = None
    schedule: Schedule | None = None
    call_units: tuple[int, ...] | None = None


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
    """The scheduled occurrences a decision reads, per UTC day, as the batch changes
    them: occurrences admitted earlier in the batch are added, displaced ones dropped.

    Per day (occupancy.Day) because that is how the day cache hands them out; the batch
    changes copies of its own, never the cache's.
    """

    def __init__(self, days: Mapping[date, Day]) -> None:
        self.days: dict[int, Day] = {}
        self._copied: set[int] = set()
        self._taken: dict[int, list[tuple[int, int]]] = {}  # id -> [(day, index)]
        self.add(days)

    def add(self, days: Mapping[date, Day]) -> None:
        for day, occurrences in days.items():
            self.days[day.toordinal()] = occurrences

    def _own(self, ordinal: int) -> Day:
        """The day, copied first if the batch has not changed it yet."""
        if ordinal not in self._copied:
            self._copied.add(ordinal)
            self.days[ordinal] = self.days[ordinal].copy()
        return self.days[ordinal]

    def near(self, start: datetime, end: datetime) -> list[Allocation]:
        """The occurrences overlapping [start, end)."""
        days = days_of(start, end)
        found: list[Allocation] = []
        for ordinal in days:
            day = self.days.get(ordinal)
            if day is not None:
                # One that spans midnight is listed on both days: taken on the first.
                found.extend(day.near(start, end, from_day_start=ordinal != days[0]))
        return found

    def load(self, policy: CapacityPolicy, holder: int | None, start: datetime,
             end: datetime) -> list[Segment]:
        """The load over [start, end) as ``holder`` sees it (its days must be here)."""
        segments: list[Segment] = []
        for ordinal in days_of(start, end):
            segments.extend(self.days[ordinal].segments(policy, holder, start, end))
        return segments

    def covering(self, policy: CapacityPolicy, holder: int | None, start: datetime,
                 end: datetime, fetch: Callable[[list[date]], Mapping[date, Day]],
                 ) -> list[Segment]:
        """:meth:`load`, after fetching the days of [start, end) the calendar lacks."""
        missing = [date.fromordinal(ordinal) for ordinal in days_of(start, end)
                   if ordinal not in self.days]
        if missing:
            self.add(fetch(missing))
        return self.load(policy, holder, start, end)

    def take(self, allocation: Allocation, policy: CapacityPolicy) -> None:
        self._taken[id(allocation)] = [(ordinal, self._own(ordinal).add(allocation, policy))
                                       for ordinal in days_of(allocation.start, allocation.end)]

    def release(self, victims: list[Allocation]) -> None:
        gone = {a.ref for a in victims if a.ref is not None}
        for ordinal in {ordinal for a in victims for ordinal in days_of(a.start, a.end)}:
            self._copied.add(ordinal)
            self.days[ordinal] = self.days[ordinal].without(gone)

    def written(self, taken: Sequence[Allocation], refs: Sequence[int]) -> None:
        """Give the occurrences taken their ids, once they are written."""
        for allocation, ref in zip(taken, refs, strict=True):
            for ordinal, index in self._taken.pop(id(allocation)):
                self.days[ordinal].set_ref(index, ref)

    def day(self, day: date) -> Day:
        """The day as the batch leaves it (the batch is done with it)."""
        return self.days[day.toordinal()]


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
        load = calendar.load(policy, holder, occurrence.start, occurrence.end)
        shortfall = capacity.check(request, load, policy, now)
        if shortfall is None:
            continue
        if priority == "emergency":
            chosen = capacity.choose_displacements(
                request, calendar.near(occurrence.start, occurrence.end), policy, now)
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
            rewritten: Collection[int] = ()) -> tuple[int | None, list[Allocation]]:
    """:func:`_check` against what the database holds now, less the occurrences with the
    ids ``rewritten`` (those a change replaces or rewrites in place)."""
    max_duration = config.limits.max_duration
    intervals = [(o.start, o.end) for o in occurrences]
    allocations = [a for a in load_allocations(session, intervals, max_duration)
                   if a.ref not in rewritten]
    calendar = _Calendar({day: Day.of(day, allocations) for day, allocations
                          in by_day(allocations, days_touched(intervals)).items()})
    return _check(calendar, load_policy(session, config), org, priority, units, occurrences,
                  now, zone)


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


def _displace(session: Session, victims: list[Allocation], emergency_id: int,
              emergency_title: str, now: datetime, join_link: JoinLink) -> list[int]:
    ids = [a.ref for a in victims if a.ref is not None]
    if not ids:
        return []
    rows = session.scalars(select(BookingOccurrence).where(BookingOccurrence.id.in_(ids))).all()
    for row in rows:
        row.state = "displaced"
        row.displaced_by = emergency_id
        lock_booking(session, row.booking_id)  # its exceptions change
        booking = session.get(Booking, row.booking_id)
        assert booking is not None
        if booking.rrule:
            # An exception of the series, as a cancelled one: its organiser is told it
            # does not take place, so no later change of the series books it again.
            booking.exdates = sorted({*booking.exdates, _instance(booking, row).isoformat()})
        booking.sequence += 1
        booking.updated_at = now
        notices.displaced(session, booking, row, emergency_title, now, join_link)
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
    duration: timedelta
    occurrences: list[Occurrence]
    skipped: list[date]
    fields: dict[str, object]  # the booking's columns, but for ``izs`` (from the org)
    ics: bytes | None
    now: datetime
    join_link: JoinLink
    call_units: tuple[int, ...] = ()


_queues: weakref.WeakKeyDictionary[Database, GroupCommit[NewBooking, Decision]] = \
    weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def admission_queue(db: Database) -> GroupCommit[NewBooking, Decision]:
    """The process's queue of new bookings for ``db``: they are decided in batches
    (scheduler/booking/group_commit.py), each batch by :func:`admit_batch`."""
    with _queues_lock:
        queue = _queues.get(db)
        if queue is None:
            # The queue must not keep its database alive (the dictionary's key is weak).
            database = weakref.ref(db)
            queue = _queues[db] = GroupCommit(
                lambda batch: admit_batch(database(), batch))  # type: ignore[arg-type]
        return queue


def refuse_past_start(first: Occurrence, now: datetime) -> None:
    """Refuses a new booking whose first occurrence has started (the booking form's
    capacity preview asks the same, so that it says what saving would)."""
    if first.start < now - START_SLACK:
        raise InvalidInput("in_past", f"the occurrence {first.label()} is in the past")


def prepare_booking(config: SchedulerConfig, principal: Principal, data: BookingInput,
                    now: datetime, join_link: JoinLink) -> NewBooking:
    """Everything about a new booking that needs no database: checks, occurrences, the
    invitation. Raises InvalidInput."""
    _check_priority(data.priority)
    call_units = _distinct_units(data.call_units)
    schedule = _normalised(data.schedule)
    if schedule is not data.schedule:
        data = dataclasses.replace(data, schedule=schedule)
    units = _units(config, data.participants)
    occurrences, skipped = _expand(config, data.schedule, now)
    refuse_past_start(occurrences[0], now)
    fields: dict[str, object] = dict(
        uid=f"{uuid.uuid4()}@multipoint", sequence=0, organisation_id=data.organisation_id,
        organiser_id=principal.user_id, organiser_email=principal.email,
        invitees=list(data.invitees), title=data.title, description=data.description,
        priority=data.priority, zone=data.schedule.zone,
        local_start=data.schedule.start, local_end=data.schedule.end,
        rrule=data.schedule.rrule, exdates=[d.isoformat() for d in data.schedule.exdates],
        skip_public_holidays=data.schedule.skip_public_holidays,
        participants=data.participants.as_dict(), units=units, room_name=_room_name(),
        dial_in_pin=new_pin(), status="confirmed", created_at=now, updated_at=now)
    # The invitation depends on nothing the decision reads: render it (milliseconds of
    # time-zone work) before queueing, not inside the transaction.
    ics: bytes | None = None
    if notices.has_recipients(principal.email, data.invitees):
        ics = notices.render_invitation(Booking(**fields), [o.local_start for o in occurrences],
                                        now, join_link)
    return NewBooking(config, principal, data.organisation_id, data.priority, units,
                      data.schedule.end - data.schedule.start, occurrences, skipped, fields,
                      ics, now, join_link, call_units)


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
        refusal.details.setdefault("suggestions", [])  # computed by the batch that refused
        raise


def admit_batch(db: Database, batch: Sequence[NewBooking]) -> list[Decision | BaseException]:
    """Decide a batch of new bookings in one locked transaction, in order.

    Each is checked against the calendar as the ones before it in the batch left it, so
    the batch admits exactly what one-by-one decisions would. A refusal or permission
    error belongs to its booking alone; anything else fails the batch (and
    GroupCommit then decides each on its own).
    """
    days = days_touched((o.start, o.end) for new in batch for o in new.occurrences)
    outcomes, cache, days_after = run_decision(
        db, days, lambda session: _admit_batch_in(session, batch, days))
    cache.store(days_after)  # only now: had the commit failed, the days would be as before
    return outcomes


def _admit_batch_in(session: Session, batch: Sequence[NewBooking], days: list[date],
                    ) -> tuple[list[Decision | BaseException], DayCache, dict[date, tuple[int, Day]]]:
    """The batch's decisions, the cache, and the locked days as the batch leaves them."""
    # The organisations and the policy as of the pool version the batch has locked.
    kept = pool_cache(session)
    orgs = kept.get(session, "organisations", lambda: all_org_infos(session))
    max_duration = max(new.config.limits.max_duration for new in batch)
    cache = day_cache(session)
    before = cache.days(session, days, max_duration)
    calendar = _Calendar(before)

    def fetch(more: list[date]) -> Mapping[date, Day]:
        return cache.days(session, more, max_duration)  # not locked: read for suggestions
    policies: dict[int, CapacityPolicy] = {}
    outcomes: list[Decision | BaseException] = []
    admitted: list[tuple[int, NewBooking, OrgInfo, int | None, list[Allocation]]] = []
    per_booking: list[list[Allocation]] = []  # the admitted ones' occurrences
    for index, new in enumerate(batch):
        try:
            org = orgs.get(new.organisation_id)
            if org is None:
                raise NotFound("organisation_not_found",
                               f"no organisation {new.organisation_id}")
            require_book(new.principal, org, new.priority)
            if new.call_units:
                check_call_units(session, org.id, new.call_units, orgs)
            policy = policies.get(id(new.config))
            if policy is None:
                config = new.config
                policy = policies[id(config)] = kept.get(
                    session, ("policy", config.izs_reserve_percent, config.borrow_lead),
                    functools.partial(load_policy, session, config))
            holder, victims = _check(calendar, policy, org, new.priority, new.units,
                                     new.occurrences, new.now, str(new.fields["zone"]))
        except CapacityRefused as refusal:
            # Suggested here, from the calendar as the batch has it: no second read.
            refusal.details["suggestions"] = _suggestions(
                functools.partial(calendar.covering, fetch=fetch), policy, org,
                new.priority, new.units, refusal, new.duration, str(new.fields["zone"]),
                new.now)
            outcomes.append(refusal.with_traceback(None))  # see below
            continue
        except SchedulerError as refusal:
            # Without its traceback: that holds this frame, which holds ``outcomes``, a
            # cycle that would keep the whole batch alive until a full collection.
            outcomes.append(refusal.with_traceback(None))
            continue
        allocations = [Allocation(o.start, o.end, new.units, holder, org.izs, new.priority)
                       for o in new.occurrences]
        for allocation in allocations:
            calendar.take(allocation, policy)
        per_booking.append(allocations)
        admitted.append((index, new, org, holder, victims))
        outcomes.append(Decision(0))  # its id once written
    if not admitted:
        return outcomes, cache, {}
    rows = [{**new.fields, "izs": org.izs} for _, new, org, _, _ in admitted]
    # The audit entry of each creation goes in the same statement (no booking without it).
    ids, occurrence_ids = _insert_admitted(session.connection(), rows, per_booking,
                                           [new.principal for _, new, _, _, _ in admitted])
    # The same statement on either database: most bookings name no unit, so this is
    # rarely run, and then for a few rows.
    unit_rows = [{"booking_id": booking_id, "endpoint_id": endpoint_id}
                 for booking_id, (_, new, _, _, _) in zip(ids, admitted, strict=True)
                 for endpoint_id in new.call_units]
    if unit_rows:
        session.connection().execute(insert(BookingUnit.__table__), unit_rows)  # type: ignore[arg-type]
    for booking_id, row, (index, new, _, _, victims) in zip(ids, rows, admitted, strict=True):
        displaced = _displace(session, victims, booking_id, str(row["title"]), new.now,
                              new.join_link)
        if notices.has_recipients(str(row["organiser_email"]), row["invitees"]):  # type: ignore[arg-type]
            booking = Booking(id=booking_id, **row)  # not added: its row is written above
            notices.invite(session, booking, [], new.now, new.join_link, ics=new.ics)
        outcomes[index] = Decision(booking_id, displaced, new.skipped)
    # The locked days as they will be once this commits: what was read, less what was
    # displaced, plus what was admitted (with its ids, so that a later emergency can
    # displace it), under the versions this transaction's writes give them.
    calendar.written([a for allocations in per_booking for a in allocations], occurrence_ids)
    session.flush()  # the displaced rows' updates, so that the trigger has run for them
    changed = [a for allocations in per_booking for a in allocations] \
        + [victim for *_, victims in admitted for victim in victims]
    versions = versions_after(session, set(days_touched((a.start, a.end) for a in changed)))
    days_after = {day: (versions[day], calendar.day(day)) for day in days}
    return outcomes, cache, days_after


# Writing a batch. The ORM's unit of work costs milliseconds a row; SQLAlchemy's
# multi-row INSERT is a new statement text for every batch size, which the driver parses
# again, and adapts parameter by parameter, each time. On PostgreSQL one statement of
# fixed text writes the bookings and their occurrences, the rows passing as one JSON
# document each (json.dumps and PostgreSQL's parser are both C); the ids come back
# with each row's unique key, so nothing relies on the order RETURNING produces them in.
# Instants pass as ISO 8601 text with their offset (timestamptz: PostgreSQL converts them
# to the UTC the columns hold), wall-clock times without one.
_BOOKING_COLUMNS = {  # column: its type in json_to_recordset
    "uid": "text", "sequence": "integer", "organisation_id": "integer",
    "organiser_id": "integer", "organiser_email": "text", "invitees": "json",
    "title": "text", "description": "text", "priority": "text", "izs": "boolean",
    "zone": "text", "local_start": "timestamp", "local_end": "timestamp", "rrule": "text",
    "exdates": "json", "skip_public_holidays": "boolean", "participants": "json",
    "units": "integer", "room_name": "text", "dial_in_pin": "text", "status": "text",
    "created_at": "timestamptz", "updated_at": "timestamptz"}
_BOOKING_TIMES = [column for column, kind in _BOOKING_COLUMNS.items() if "timestamp" in kind]
_PG_INSERT_ADMITTED = text(f"""
WITH b AS (
  INSERT INTO bookings ({', '.join(_BOOKING_COLUMNS)})
  SELECT {', '.join(_BOOKING_COLUMNS)}
  FROM json_to_recordset(CAST(:bookings AS json))
       AS r({', '.join(f'{column} {kind}' for column, kind in _BOOKING_COLUMNS.items())})
  RETURNING uid, id),
o AS (
  INSERT INTO booking_occurrences (booking_id, start_utc, end_utc, units, holder_id, izs,
                                   priority, state)
  SELECT b.id, r.start_utc, r.end_utc, r.units, r.holder_id, r.izs, r.priority, 'scheduled'
  FROM json_to_recordset(CAST(:occurrences AS json))
       AS r(uid text, start_utc timestamptz, end_utc timestamptz, units integer,
            holder_id integer, izs boolean, priority text)
  JOIN b ON b.uid = r.uid
  RETURNING booking_id, start_utc, id),
a AS (
  INSERT INTO audit_log (at, actor_id, actor, action, target, details)
  SELECT r.at, r.actor_id, r.actor, 'booking.create', 'booking:' || b.id, r.details
  FROM json_to_recordset(CAST(:audit AS json))
       AS r(uid text, at timestamptz, actor_id integer, actor text, details json)
  JOIN b ON b.uid = r.uid)
SELECT b.uid, b.id, o.start_utc, o.id FROM o JOIN b ON b.id = o.booking_id
""")


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _json_booking(booking: dict[str, object]) -> dict[str, object]:
    """The booking's row with its times as text (json.dumps' fallback is a call back into
    Python for every value)."""
    row = dict(booking)
    for column in _BOOKING_TIMES:
        value = row[column]
        if isinstance(value, datetime):
            row[column] = value.isoformat()
    return row


def _insert_admitted(connection: Connection, bookings: list[dict[str, object]],
                     occurrences: list[list[Allocation]],
                     actors: list[Principal]) -> tuple[list[int], list[int]]:
    """Write the bookings, each one's occurrences and the audit entry of its creation
    (``actors``: who booked each); the ids of bookings and occurrences, in order."""
    if connection.dialect.name != "postgresql":
        ids = list(connection.execute(insert(Booking.__table__).returning(  # type: ignore[arg-type]
            Booking.__table__.c.id, sort_by_parameter_order=True), bookings).scalars())
        connection.execute(insert(AuditEntry.__table__), [  # type: ignore[arg-type]
            {"at": booking["created_at"], "actor_id": actor.user_id, "actor": actor.name,
             "action": "booking.create", "target": f"booking:{booking_id}",
             "details": {"title": booking["title"]}}
            for booking_id, booking, actor in zip(ids, bookings, actors, strict=True)])
        rows = [{"booking_id": booking_id, "start_utc": a.start, "end_utc": a.end,
                 "units": a.units, "holder_id": a.holder, "izs": a.izs, "priority": a.priority,
                 "state": "scheduled"}
                for booking_id, allocations in zip(ids, occurrences, strict=True)
                for a in allocations]
        return ids, list(connection.execute(
            insert(BookingOccurrence.__table__).returning(  # type: ignore[arg-type]
                BookingOccurrence.__table__.c.id, sort_by_parameter_order=True), rows).scalars())
    rows = [{"uid": booking["uid"], "start_utc": a.start.isoformat(),
             "end_utc": a.end.isoformat(), "units": a.units, "holder_id": a.holder,
             "izs": a.izs, "priority": a.priority}
            for booking, allocations in zip(bookings, occurrences, strict=True)
            for a in allocations]
    audit_rows = [{"uid": booking["uid"], "at": booking["created_at"].isoformat(),  # type: ignore[attr-defined]
                   "actor_id": actor.user_id, "actor": actor.name,
                   "details": {"title": booking["title"]}}
                  for booking, actor in zip(bookings, actors, strict=True)]
    written = connection.execute(_PG_INSERT_ADMITTED, {
        "bookings": json.dumps([_json_booking(booking) for booking in bookings]),
        "occurrences": json.dumps(rows), "audit": json.dumps(audit_rows)}).all()
    booking_ids = {uid: booking_id for uid, booking_id, _, _ in written}
    occurrence_ids = {(uid, start): occurrence_id for uid, _, start, occurrence_id in written}
    return ([booking_ids[booking["uid"]] for booking in bookings],
            [occurrence_ids[(booking["uid"], _naive_utc(a.start))]
             for booking, allocations in zip(bookings, occurrences, strict=True)
             for a in allocations])


# Nearest first: three refusals in four (nine in ten while the calendar is not crowded)
# find three slots within two hours either way (bench/booking.py), so look that far,
# then six hours, half a day, and only then three days (a person moves a meeting within
# the week). Every hour more of the calendar is more occurrences to sweep. A wider search
# finds the slots a narrower one found, and more.
SUGGESTION_SEARCHES = (timedelta(hours=2), timedelta(hours=6), timedelta(hours=12),
                       timedelta(days=3))


def _suggestions(load_in: Callable[[CapacityPolicy, int | None, datetime, datetime],
                                   list[Segment]],
                 policy: CapacityPolicy, org: OrgInfo, priority: str, units: int,
                 refusal: CapacityRefused, duration: timedelta, zone: str,
                 now: datetime) -> list[dict[str, str]]:
    """The nearest start times at which the refusal's first conflicting occurrence would
    fit; ``load_in(policy, holder, start, end)`` gives the load over a window as the
    holder sees it."""
    conflicts = refusal.details.get("conflicts") or []
    if not conflicts:
        return []
    start = datetime.fromisoformat(str(conflicts[0]["occurrence_start_utc"]))  # type: ignore[index]
    tz = ZoneInfo(zone)
    request = Request(start, start + duration, units, holder_among(org, policy.quotas),
                      org.izs, priority)
    slots: list[datetime] = []
    for search in SUGGESTION_SEARCHES:
        load = load_in(policy, request.holder, start - search, start + duration + search)
        slots = capacity.nearest_slots(request, load, policy, now, search=search)
        if len(slots) == 3:
            break
    return [{"start": _minutes(slot, tz), "end": _minutes(slot + duration, tz)}
            for slot in slots]


def _minutes(instant: datetime, tz: ZoneInfo) -> str:
    """The wall-clock time in ``tz`` as YYYY-MM-DDTHH:MM."""
    return instant.astimezone(tz).replace(tzinfo=None).isoformat(timespec="minutes")


def suggest(db: Database, config: SchedulerConfig, org: OrgInfo, priority: str, units: int,
            refusal: CapacityRefused, schedule: Schedule, now: datetime,
            rewritten: Collection[int] = ()) -> list[dict[str, str]]:
    """:func:`_suggestions` from the database, leaving out the occurrences with the ids
    ``rewritten`` (those the refused change would have replaced or rewritten)."""
    with db.session() as session:
        policy = load_policy(session, config)

        def load_in(policy: CapacityPolicy, holder: int | None, start: datetime,
                    end: datetime) -> list[Segment]:
            allocations = [a for a in load_allocations(session, [(start, end)],
                                                       config.limits.max_duration)
                           if a.ref not in rewritten]
            return capacity.timeline(allocations, policy, holder, start, end)

        return _suggestions(load_in, policy, org, priority, units, refusal,
                            schedule.end - schedule.start, schedule.zone, now)


def _distinct_units(endpoint_ids: Sequence[int]) -> tuple[int, ...]:
    """The units as named, each once; too many is an error before any database work."""
    distinct = tuple(dict.fromkeys(endpoint_ids))
    if len(distinct) > MAX_CALL_UNITS:
        raise InvalidInput("too_many_units",
                           f"a booking calls at most {MAX_CALL_UNITS} room units")
    return distinct


def check_call_units(session: Session, organisation_id: int, endpoint_ids: Sequence[int],
                     orgs: Mapping[int, OrgInfo] | None = None) -> None:
    """Each unit exists, takes SIP calls, and is the booking's organisation's or of one
    under it (a booking must not ring another body's meeting room); InvalidInput
    naming the first that is not. ``orgs``: the organisations, if already read."""
    if not endpoint_ids:
        return
    found = {row.id: row for row in session.execute(
        select(Endpoint.id, Endpoint.serial, Endpoint.organisation_id, Endpoint.sip_uri)
        .where(Endpoint.id.in_(endpoint_ids)))}
    owners = orgs if orgs is not None else org_infos(
        session, {row.organisation_id for row in found.values()})
    for endpoint_id in endpoint_ids:
        row = found.get(endpoint_id)
        if row is None:
            raise InvalidInput("unit_not_found", f"no room unit {endpoint_id}",
                               unit=endpoint_id)
        if not row.sip_uri:
            raise InvalidInput("unit_without_sip_address",
                               f"the room unit {row.serial} has no SIP address to call",
                               unit=endpoint_id)
        owner = owners.get(row.organisation_id)
        if owner is None or not owner.within(organisation_id):
            raise InvalidInput("unit_of_another_organisation",
                               f"the room unit {row.serial} belongs to another organisation",
                               unit=endpoint_id)


def set_call_units(session: Session, booking_id: int, endpoint_ids: Sequence[int]) -> None:
    session.execute(delete(BookingUnit).where(BookingUnit.booking_id == booking_id))
    session.add_all(BookingUnit(booking_id=booking_id, endpoint_id=endpoint_id)
                    for endpoint_id in endpoint_ids)


def call_units_of(session: Session, booking_id: int) -> list[int]:
    """The endpoint ids of the units ``booking_id`` calls at its start."""
    return list(session.scalars(select(BookingUnit.endpoint_id)
                                .where(BookingUnit.booking_id == booking_id)
                                .order_by(BookingUnit.endpoint_id)))


def get_booking(session: Session, booking_id: int) -> tuple[Booking, OrgInfo]:
    booking = session.get(Booking, booking_id)
    if booking is None:
        raise NotFound("booking_not_found", f"no booking {booking_id}")
    org = org_info(session, booking.organisation_id)
    assert org is not None
    return booking, org


def lock_booking(session: Session, booking_id: int) -> None:
    """Take the booking's row (PostgreSQL) before a decision reads it to change it: two
    changes of one booking on different days lock no day in common, and each would read
    its exceptions before the other wrote them, the later write dropping the earlier's."""
    session.execute(select(Booking.id).where(Booking.id == booking_id).with_for_update())


# A change worked out from the booking as it is (what a PATCH or the admin web's form
# leaves out, such as the series' exceptions, is the booking's).
ChangeOf = Callable[[Booking], BookingChange]

# How often a change is worked out again when the booking changed between its read and
# its decision (each time another change of the same booking committed in that gap).
CHANGE_ATTEMPTS = 5


class _ChangedMeanwhile(Exception):
    """The booking changed (its sequence went up) after the change's read."""


def update_booking(db: Database, config: SchedulerConfig, principal: Principal,
                   booking_id: int, change: BookingChange | ChangeOf, now: datetime,
                   join_link: JoinLink) -> Decision:
    """Change a booking; a new time or size is checked again like a new booking.

    The new schedule is worked out from the booking as read before the locked decision
    (its exceptions, its occurrences moved on their own; ``change`` too, when it is a
    function of the booking). Another change that commits in between (an occurrence
    cancelled or moved, one displaced, the booking changed) raises its sequence: then
    the change is worked out again from the booking as it is now, so that it does not
    undo the other; after CHANGE_ATTEMPTS such tries it is refused (409 ``conflict``).

    Occurrences that have started stay as they were. Of the future ones, one whose room
    is already open (``opened_at``: within the open lead) and that the new schedule still
    has at the same start is rewritten in place (its end and units), so that the open
    room keeps its occurrence; every other future one is replaced by the new schedule's.
    The check counts exactly what stays: the started ones, not those rewritten.

    An occurrence moved on its own (:func:`move_occurrence`) stays where it was put, with
    the new size, while the series' start it stands for is still an exception of the
    changed series (the exceptions move with the series); the series never books that
    start beside it. A change that drops the exception gives the series back that
    occurrence at its series time, and the moved one goes.
    """
    for _ in range(CHANGE_ATTEMPTS):
        try:
            return _update_booking(db, config, principal, booking_id, change, now, join_link)
        except _ChangedMeanwhile:
            continue
    raise Conflict("conflict", "the booking was changed by others meanwhile: try again")


def _update_booking(db: Database, config: SchedulerConfig, principal: Principal,
                    booking_id: int, change_of: BookingChange | ChangeOf, now: datetime,
                    join_link: JoinLink) -> Decision:
    """One try of :func:`update_booking`."""
    with db.session() as session:
        booking, org = get_booking(session, booking_id)
        require_change_booking(principal, org)
        if booking.status == "cancelled":
            raise InvalidInput("booking_cancelled", "a cancelled booking cannot be changed")
        change = change_of if isinstance(change_of, BookingChange) else change_of(booking)
        read_sequence = booking.sequence
        current = Schedule(booking.local_start, booking.local_end, booking.zone, booking.rrule,
                           tuple(datetime.fromisoformat(d) for d in booking.exdates),
                           booking.skip_public_holidays)
        mix = ParticipantMix(**booking.participants)
        spans = _future_spans(session, booking_id, now)
        o = BookingOccurrence
        moved = session.execute(select(o.start_utc, o.end_utc, o.instance_local).where(
            o.booking_id == booking_id, o.state == "scheduled", o.start_utc >= now,
            o.instance_local.is_not(None))).all()
    schedule = _normalised(change.schedule or current)
    call_units = _distinct_units(change.call_units) if change.call_units is not None else None
    participants = change.participants or mix
    units = _units(config, participants)
    recheck = change.schedule is not None or change.participants is not None
    occurrences: list[Occurrence] = []
    skipped: list[date] = []
    moved_at: dict[datetime, datetime] = {}  # a kept moved one's start: its series start
    if recheck:
        expanded, skipped = _expand(config, schedule, now)
        occurrences = [o for o in expanded if o.start >= now]
        occurrences += _kept_moved(current, schedule, moved, occurrences, moved_at)
        if not occurrences:
            raise InvalidInput("in_past", NO_FUTURE_OCCURRENCE)
    rewritten: set[int] = set()  # for the suggestions, should the change be refused

    def decide(session: Session) -> Decision:
        lock_booking(session, booking_id)
        booking, _ = get_booking(session, booking_id)
        if booking.status == "cancelled":  # meanwhile: its new occurrences would be booked
            raise InvalidInput("booking_cancelled", "a cancelled booking cannot be changed")
        if booking.sequence != read_sequence:  # what was worked out may undo that change
            raise _ChangedMeanwhile
        displaced: list[int] = []
        if recheck:
            replaced, in_place = _rewrites(session, booking.id, occurrences, now)
            rewritten.clear()
            rewritten.update(row.id for row in replaced)
            rewritten.update(row.id for row, _ in in_place)
            holder, victims = _decide(session, config, org, booking.priority, units,
                                      occurrences, now, schedule.zone, rewritten)
            for row in replaced:
                row.state = "replaced"
            for row, occurrence in in_place:
                row.instance_local = moved_at.get(row.start_utc)
                row.end_utc, row.units, row.holder_id = occurrence.end, units, holder
                row.izs, row.priority = org.izs, booking.priority
                room = session.scalar(select(Room).where(Room.occurrence_id == row.id,
                                                         Room.state == "open"))
                if room is not None:
                    room.units = units  # what the worker's placement counts
            booking.units = units
            booking.participants = participants.as_dict()
            booking.local_start, booking.local_end = schedule.start, schedule.end
            booking.zone, booking.rrule = schedule.zone, schedule.rrule
            booking.exdates = [d.isoformat() for d in schedule.exdates]
            booking.skip_public_holidays = schedule.skip_public_holidays
            kept_starts = {row.start_utc for row, _ in in_place}
            for row in _write_occurrences(session, booking,
                                          [o for o in occurrences if o.start not in kept_starts],
                                          holder, org):
                row.instance_local = moved_at.get(row.start_utc)
            displaced = _displace(session, victims, booking.id, booking.title, now, join_link)
        if change.title is not None:
            booking.title = change.title
        if change.description is not None:
            booking.description = change.description
        if change.invitees is not None:
            booking.invitees = list(change.invitees)
        if call_units is not None:
            check_call_units(session, booking.organisation_id, call_units)
            set_call_units(session, booking.id, call_units)
        if dataclasses.replace(change, call_units=None) != BookingChange():
            _reissue(session, booking, now, join_link)
        else:  # which units are rung is nothing the invitees need to be told again
            booking.updated_at = now
        audit.record(session, principal, "booking.update", f"booking:{booking.id}",
                     {"title": booking.title, "rescheduled": recheck, "displaced": displaced,
                      **({"call_units": list(call_units)} if call_units is not None else {})},
                     at=now)
        return Decision(booking.id, displaced, skipped)

    # The days of the new occurrences, and of the replaced ones (their versions go up).
    days = days_touched([(o.start, o.end) for o in occurrences] + (spans if recheck else []))
    try:
        return run_decision(db, days, decide)
    except CapacityRefused as refusal:
        refusal.details["suggestions"] = suggest(db, config, org, booking.priority, units,
                                                 refusal, schedule, now, rewritten)
        raise


def _reissue(session: Session, booking: Booking, now: datetime, join_link: JoinLink) -> None:
    """The booking changed: a new sequence number, and the invitees get it again."""
    booking.sequence += 1
    booking.updated_at = now
    session.flush()
    rows = session.scalars(select(BookingOccurrence)
                           .where(BookingOccurrence.booking_id == booking.id)).all()
    notices.invite(session, booking, rows, now, join_link, changed=True)


def _rewrites(session: Session, booking_id: int, occurrences: list[Occurrence],
              now: datetime) -> tuple[list[BookingOccurrence],
                                      list[tuple[BookingOccurrence, Occurrence]]]:
    """What a change to the booking's schedule does to its scheduled future occurrences:
    those it replaces, and those it rewrites in place with the new occurrence at the same
    start (an occurrence whose room is open already: rewriting it keeps the room on it).

    The rows are taken FOR UPDATE (PostgreSQL), so that a job opening one meanwhile is
    seen: an open one is never replaced by a copy of itself.
    """
    o = BookingOccurrence
    rows = session.scalars(select(o).where(
        o.booking_id == booking_id, o.state == "scheduled", o.start_utc >= now)
        .order_by(o.start_utc).with_for_update()).all()
    new_at = {occurrence.start: occurrence for occurrence in occurrences}
    replaced: list[BookingOccurrence] = []
    in_place: list[tuple[BookingOccurrence, Occurrence]] = []
    for row in rows:
        same = new_at.pop(row.start_utc, None) if row.opened_at is not None else None
        if same is None:
            replaced.append(row)
        else:
            in_place.append((row, same))
    return replaced, in_place


def _future_spans(session: Session, booking_id: int,
                  now: datetime) -> list[tuple[datetime, datetime]]:
    """When the booking's scheduled occurrences that have not ended yet run."""
    o = BookingOccurrence
    rows = session.execute(select(o.start_utc, o.end_utc).where(
        o.booking_id == booking_id, o.state == "scheduled", o.end_utc > now)).all()
    return [(start, end) for start, end in rows]


def cancel_booking(db: Database, principal: Principal, booking_id: int, now: datetime,
                   join_link: JoinLink) -> None:
    """Cancel a booking: its future occurrences free their capacity; invitees are told.

    Freeing capacity is a write to the days the occurrences touch (their versions go up),
    so it locks them in day order like any decision rather than in whatever order the
    rows come.
    """
    with db.session() as session:
        booking, org = get_booking(session, booking_id)
        require_change_booking(principal, org)
        if booking.status == "cancelled":
            return
        spans = _future_spans(session, booking_id, now)

    def cancel(session: Session) -> None:
        lock_booking(session, booking_id)
        booking, _ = get_booking(session, booking_id)
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
        audit.record(session, principal, "booking.cancel", f"booking:{booking.id}",
                     {"title": booking.title}, at=now)

    run_decision(db, days_touched(spans), cancel)


def cancel_occurrence(db: Database, principal: Principal, booking_id: int,
                      local_start: datetime, now: datetime, join_link: JoinLink) -> None:
    """Cancel one occurrence of a series, named by its local start: it frees its
    capacity, becomes an exception of the series (so no later edit brings it back), and
    the invitees get the series again with it left out. One that has started cannot be
    cancelled; the last one left is the booking's to cancel."""
    with db.session() as session:
        _, _, target = _occurrence_at(session, principal, booking_id, local_start, now,
                                      "cancelled", "DELETE the booking")
        start_utc = target.start_utc
        span = (target.start_utc, target.end_utc)

    def cancel(session: Session) -> None:
        # Also so that two of its occurrences on different days cancelled at once do not
        # each count the other as left, and both go, the last too.
        lock_booking(session, booking_id)
        booking, _ = get_booking(session, booking_id)
        row = session.scalar(select(BookingOccurrence).where(
            BookingOccurrence.booking_id == booking_id, BookingOccurrence.start_utc == start_utc,
            BookingOccurrence.state == "scheduled").with_for_update())
        if row is None:  # cancelled meanwhile
            return
        left = session.scalar(select(func.count()).select_from(BookingOccurrence).where(
            BookingOccurrence.booking_id == booking_id, BookingOccurrence.state == "scheduled",
            BookingOccurrence.end_utc > now))
        if left == 1:
            raise InvalidInput("last_occurrence", "this is the booking's last occurrence: "
                               "cancel the booking instead")
        row.state = "cancelled"
        booking.exdates = sorted({*booking.exdates, _instance(booking, row).isoformat()})
        _reissue(session, booking, now, join_link)
        audit.record(session, principal, "booking.cancel_occurrence", f"booking:{booking.id}",
                     {"title": booking.title, "occurrence": local_start.isoformat()}, at=now)

    run_decision(db, days_touched([span]), cancel)


# Reads ----------------------------------------------------------------------------------

def occurrences_of(session: Session, booking_id: int, limit: int = 400) -> list[BookingOccurrence]:
    """A booking's occurrences by start, those a change replaced left out."""
    return list(session.scalars(
        select(BookingOccurrence).where(BookingOccurrence.booking_id == booking_id,
                                        BookingOccurrence.state != "replaced")
        .order_by(BookingOccurrence.start_utc).limit(limit)))


def occurrences_between(session: Session, principal: Principal, start: datetime,
                        end: datetime, limit: int = 2000,
                        ) -> list[tuple[BookingOccurrence, Booking, OrgInfo]]:
    """Scheduled and displaced occurrences in [start, end) of the bookings ``principal``
    may see, by start: what a calendar shows."""
    o = BookingOccurrence
    query = (select(o, Booking).join(Booking, Booking.id == o.booking_id)
             .where(o.start_utc < end, o.end_utc > start, o.state.in_(("scheduled", "displaced")))
             .order_by(o.start_utc).limit(limit))
    if principal.role != "operator":
        query = query.where(Booking.organisation_id.in_(
            subtree_ids(session, principal.organisation_id or -1)))
    result = []
    for occurrence, booking in session.execute(query):
        org = org_info(session, booking.organisation_id)
        if org is not None and can_see_booking(principal, org):
            result.append((occurrence, booking, org))
    return result


def keeping_exceptions(booking: Booking, schedule: Schedule) -> Schedule:
    """``schedule`` with the booking's exceptions (cancelled and moved occurrences among
    them), moved by as much as its start moved: for a change that names none (the admin
    web's form has no field for them), so that the same occurrences stay left out."""
    if not schedule.rrule or not booking.exdates:
        return schedule
    shift = schedule.start - booking.local_start
    moved = [datetime.fromisoformat(d) + shift for d in booking.exdates]
    try:
        tz = ZoneInfo(schedule.zone)
        rule = rrulestr(normalise_rrule(schedule.rrule, schedule.zone),
                        dtstart=schedule.start.replace(tzinfo=tz))
        # Those the changed rule no longer has (a series cut short before a cancelled
        # occurrence, moved to other weekdays) leave nothing out: kept, they made the
        # change fail as naming no occurrence, a field the form does not show.
        moved = [d for d in moved
                 if rule.between(d.replace(tzinfo=tz), d.replace(tzinfo=tz), inc=True)]
    except (RecurrenceError, ValueError, TypeError, OverflowError, IndexError):
        pass  # a rule that cannot be read: expand() says why
    return dataclasses.replace(schedule, exdates=tuple(moved))


def occurrence_local_start(session: Session, booking_id: int, occurrence_id: int) -> datetime:
    """The wall-clock start of the booking's occurrence ``occurrence_id`` (what
    :func:`cancel_occurrence` and :func:`move_occurrence` name it by)."""
    occurrence = session.get(BookingOccurrence, occurrence_id)
    booking = session.get(Booking, booking_id)
    if occurrence is None or booking is None or occurrence.booking_id != booking_id:
        raise NotFound("occurrence_not_found",
                       f"booking {booking_id} has no occurrence {occurrence_id}")
    return occurrence.start_utc.astimezone(ZoneInfo(booking.zone)).replace(tzinfo=None)


def _kept_moved(current: Schedule, schedule: Schedule,
                moved: Sequence[tuple[datetime, datetime, datetime]],
                series: Sequence[Occurrence],
                moved_at: dict[datetime, datetime]) -> list[Occurrence]:
    """The occurrences moved on their own that a change of the schedule keeps: those whose
    series start, moved as the series moved, is still an exception of it (``moved_at``
    gets each one's start and new series start). One that would overlap an occurrence
    of the changed series is refused: the room holds one meeting at a time."""
    shift = schedule.start - current.start
    exceptions = set(schedule.exdates)
    tz = ZoneInfo(schedule.zone)
    kept: list[Occurrence] = []
    for start, end, instance in moved:
        if instance + shift not in exceptions:
            continue  # the series has that occurrence back at its series time
        local = start.astimezone(tz).replace(tzinfo=None)
        clash = next((o for o in series if o.start < end and o.end > start), None)
        if clash is not None:
            raise InvalidInput("occurrence_overlap", f"the occurrence moved to "
                               f"{local:%Y-%m-%d %H:%M} would overlap the series' "
                               f"occurrence at {clash.label()}")
        moved_at[start] = instance + shift
        kept.append(Occurrence(start, end, local))
    return kept




def _instance(booking: Booking, row: BookingOccurrence) -> datetime:
    """The wall-clock start of the series' occurrence the row stands for."""
    if row.instance_local is not None:  # moved on its own
        return row.instance_local
    return row.start_utc.astimezone(ZoneInfo(booking.zone)).replace(tzinfo=None)


def _occurrence_at(session: Session, principal: Principal, booking_id: int,
                   local_start: datetime, now: datetime, done: str = "moved",
                   whole: str = "PATCH the booking",
                   ) -> tuple[Booking, OrgInfo, BookingOccurrence]:
    """The booking and its scheduled occurrence starting at ``local_start``, if the caller
    may change it and it is an occurrence of a series that has not started; ``done`` and
    ``whole`` say in the refusals what was asked and what to do instead."""
    booking, org = get_booking(session, booking_id)
    require_change_booking(principal, org)
    if booking.status == "cancelled":
        raise InvalidInput("booking_cancelled", "a cancelled booking cannot be changed")
    if not booking.rrule:
        raise InvalidInput("not_a_series", f"a single meeting is {done} as a whole: {whole}")
    try:
        start_utc = to_utc(local_start, ZoneInfo(booking.zone))
    except RecurrenceError as exc:
        raise InvalidInput(exc.code, exc.message) from None
    row = session.scalar(select(BookingOccurrence).where(
        BookingOccurrence.booking_id == booking_id, BookingOccurrence.start_utc == start_utc,
        BookingOccurrence.state == "scheduled").limit(1))
    if row is None:
        raise NotFound("occurrence_not_found", f"the booking has no scheduled occurrence "
                       f"at {local_start:%Y-%m-%dT%H:%M}")
    if row.start_utc <= now:
        raise InvalidInput("occurrence_started", f"an occurrence that has started cannot be "
                           f"{done}; end its room instead")
    return booking, org, row


def _overlapping(session: Session, booking_id: int, occurrence: Occurrence,
                 exclude: int) -> BookingOccurrence | None:
    """A scheduled occurrence of the booking (but ``exclude``) overlapping ``occurrence``:
    one room cannot hold two meetings of its series at once."""
    o = BookingOccurrence
    return session.scalars(select(o).where(
        o.booking_id == booking_id, o.state == "scheduled", o.id != exclude,
        o.start_utc < occurrence.end, o.end_utc > occurrence.start).limit(1)).first()


def move_occurrence(db: Database, config: SchedulerConfig, principal: Principal,
                    booking_id: int, local_start: datetime, start: datetime,
                    end: datetime | None, now: datetime, join_link: JoinLink) -> Decision:
    """Move the series' occurrence starting at ``local_start`` to [start, end) (wall-clock
    in the booking's zone; ``end`` None keeps its length).

    Admitted exactly like a new booking's occurrence (:func:`_decide`: the same rules, the
    booking's priority class, an emergency's displacements), counting the calendar
    without the occurrence it moves. The old one is replaced (its room, if open, closes);
    the new one remembers the series' start it stands for (``instance_local``), which
    becomes an exception of the series: so a later change of the series keeps it where it
    was put and never books that series occurrence a second time.
    """
    with db.session() as session:
        booking, org, row = _occurrence_at(session, principal, booking_id, local_start, now)
        tz = ZoneInfo(booking.zone)
        if end is None:
            end = start + (row.end_utc.astimezone(tz).replace(tzinfo=None) - local_start)
        zone, priority, units = booking.zone, booking.priority, booking.units
        old_span = (row.start_utc, row.end_utc)
    schedule = Schedule(start, end, zone)
    [occurrence], _ = _expand(config, schedule, now)
    if occurrence.start < now - START_SLACK:
        raise InvalidInput("in_past", f"{occurrence.label()} is in the past")
    moved_ids: list[int] = []  # for the suggestions, should the move be refused
    sized = [units]  # and the size it was decided at

    def decide(session: Session) -> Decision:
        lock_booking(session, booking_id)
        booking, _, row = _occurrence_at(session, principal, booking_id, local_start, now)
        moved_ids[:] = [row.id]
        # Its size now, which the new row is written with: the series may have grown
        # since the read above (another request), and the check must count that.
        sized[:] = [booking.units]
        clash = _overlapping(session, booking.id, occurrence, row.id)
        if clash is not None:
            at = clash.start_utc.astimezone(tz).strftime("%Y-%m-%d %H:%M")
            raise InvalidInput("occurrence_overlap", f"{occurrence.label()} overlaps the "
                               f"series' occurrence at {at}")
        holder, victims = _decide(session, config, org, priority, booking.units, [occurrence],
                                  now, zone, (row.id,))
        instance = _instance(booking, row)
        row.state = "replaced"
        [new] = _write_occurrences(session, booking, [occurrence], holder, org)
        if occurrence.local_start == instance:  # back at its series time: no exception
            booking.exdates = [d for d in booking.exdates if d != instance.isoformat()]
        else:
            new.instance_local = instance
            booking.exdates = sorted({*booking.exdates, instance.isoformat()})
        displaced = _displace(session, victims, booking.id, booking.title, now, join_link)
        _reissue(session, booking, now, join_link)
        audit.record(session, principal, "booking.move_occurrence", f"booking:{booking.id}",
                     {"title": booking.title, "occurrence": local_start.isoformat(),
                      "to": occurrence.local_start.isoformat(), "displaced": displaced},
                     at=now)
        return Decision(booking.id, displaced)

    try:
        return run_decision(db, days_touched([old_span, (occurrence.start, occurrence.end)]),
                            decide)
    except CapacityRefused as refusal:
        refusal.details["suggestions"] = suggest(db, config, org, priority, sized[0], refusal,
                                                 schedule, now, moved_ids)
        raise
