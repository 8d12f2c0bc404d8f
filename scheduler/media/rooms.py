"""Rooms the scheduler admits: opened on a worker before a booking starts, closed after.

The scheduler never touches media: it records a room's state and placement here and
tells the media side through :class:`RoomControl`, which the composition root provides.
Signaling asks :func:`admit_join` whether a participant may enter.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import ColumnElement, Select, and_, distinct, exists, func, or_, select, update
from sqlalchemy.orm import Session

from scheduler.booking.units import KINDS, UnitCosts
from scheduler.config import SchedulerConfig
from scheduler.media.placement import WorkerLoad, place
from scheduler.media.room_signals import announce_room_change
from scheduler.models import (
    Booking,
    BookingOccurrence,
    CallRecord,
    MediaNode,
    MediaWorker,
    Room,
    RoomPart,
    StandingBridge,
)


@dataclass(frozen=True)
class RoomInfo:
    """What the media side may want to know about a room it is asked to open."""

    room: str
    title: str
    units: int
    expected_participants: int
    izs: bool
    booking_id: int | None = None
    bridge_id: int | None = None
    ends_at: datetime | None = None


class RoomControl(Protocol):
    """Implemented by the composition root; both calls must be idempotent."""

    async def open_room(self, room: str, worker_id: int, info: RoomInfo) -> None: ...

    async def call_units(self, room: str, worker_id: int, units: tuple[tuple[str, str], ...]) -> None:
        """A booked meeting starts: call its room units (name, SIP URI) into its room."""

    async def close_room(self, room: str, reason: str) -> None:
        """End the room, telling those in it why (``reason``: a key of
        :data:`~scheduler.media.closing.CLOSE_REASONS`)."""


@dataclass(frozen=True)
class AdmissionDecision:
    allowed: bool
    code: str  # "ok", "room_not_open", "meeting_over", "booking_cancelled", ...
    message: str
    worker_id: int | None = None
    izs: bool = False  # an IZS room: admitted on a full worker, placed first
    # room_not_open: when joins are admitted next (the next occurrence's start less the
    # open lead), so that the page can say so in its own language; None for a room with
    # no booking at all (a booking with nothing to come is "meeting_over").
    opens_at: datetime | None = None


def node_is_live(now: datetime) -> ColumnElement[bool]:
    """A node whose workers may take rooms at ``now``: enabled, not reaped, and either
    holding a lease that has not lapsed or keeping none (a node added by hand)."""
    return and_(MediaNode.enabled.is_(True), MediaNode.dead_at.is_(None),
                or_(MediaNode.lease_expires_at.is_(None), MediaNode.lease_expires_at > now))


def worker_loads(session: Session, costs: UnitCosts, *, live_at: datetime | None = None,
                 ) -> list[WorkerLoad]:
    """The load of every enabled worker of an enabled node; with ``live_at``, of those
    whose node is live then (the placement candidates)."""
    query = (select(MediaWorker.id, MediaWorker.capacity_units, MediaNode.labels)
             .join(MediaNode, MediaNode.id == MediaWorker.node_id)
             .where(MediaWorker.enabled.is_(True), MediaNode.enabled.is_(True)))
    if live_at is not None:
        query = query.where(node_is_live(live_at))
    workers = session.execute(query).all()
    booked = dict(session.execute(
        select(Room.worker_id, func.sum(Room.units)).where(Room.state == "open")
        .group_by(Room.worker_id)).all())
    live: dict[int, int] = {}
    for worker_id, kind, count in session.execute(
            select(CallRecord.worker_id, CallRecord.kind, func.count())
            .where(CallRecord.left_at.is_(None)).group_by(CallRecord.worker_id, CallRecord.kind)):
        if worker_id is not None:
            cost = costs.of(kind) if kind in KINDS else costs.hd
            live[worker_id] = live.get(worker_id, 0) + cost * count
    for worker_id, rooms in session.execute(_mixed_rooms().group_by(CallRecord.worker_id)):
        if worker_id is not None:
            live[worker_id] = live.get(worker_id, 0) + costs.mixed_room * rooms
    return [WorkerLoad(w.id, w.capacity_units, int(booked.get(w.id) or 0), live.get(w.id, 0),
                       frozenset(w.labels or ()))
            for w in workers]


def placed_izs(session: Session, booking_id: int | None, bridge_id: int | None) -> bool:
    """Is a room placed as an IZS room? A standing bridge, an IZS or emergency booking."""
    if bridge_id is not None:
        return True
    if booking_id is None:
        return False
    row = session.execute(select(Booking.izs, Booking.priority)
                          .where(Booking.id == booking_id)).first()
    return row is not None and (bool(row.izs) or row.priority == "emergency")


def open_room(session: Session, config: SchedulerConfig, name: str, units: int, now: datetime,
              *, booking_id: int | None = None, bridge_id: int | None = None,
              occurrence_id: int | None = None) -> Room | None:
    """Mark a room open on the live worker with most room to spare that its labels allow
    (scheduler/media/placement.py); None if there is no such worker.

    A room already open stays on its worker (only its occurrence is updated).
    """
    room = session.scalar(select(Room).where(Room.name == name))
    if room is not None and room.state == "open":
        room.occurrence_id = occurrence_id or room.occurrence_id
        return room
    worker = place(worker_loads(session, config.unit_costs, live_at=now), units,
                   izs=placed_izs(session, booking_id, bridge_id))
    if worker is None:
        return None
    if room is None:
        room = Room(name=name)
        session.add(room)
    room.booking_id, room.bridge_id, room.occurrence_id = booking_id, bridge_id, occurrence_id
    room.state, room.worker_id, room.units = "open", worker.worker_id, units
    room.opened_at, room.closed_at = now, None
    session.flush()
    return room


def recall_units(session: Session, now: datetime, *, workers: Collection[int] | None = None,
                 occurrence_id: int | None = None) -> int:
    """The room-unit calls of started, open occurrences were lost (their node restarted,
    their room moved off a dead node): mark them to be called again, those whose room is
    on ``workers`` or the one occurrence given. How many."""
    o = BookingOccurrence
    query = update(o).where(o.state == "scheduled", o.opened_at.is_not(None), o.closed_at.is_(None),
                            o.units_called_at.is_not(None), o.end_utc > now)
    if occurrence_id is not None:
        query = query.where(o.id == occurrence_id)
    if workers is not None:
        query = query.where(exists(select(Room.id).join(Booking, Booking.room_name == Room.name).where(
            Booking.id == o.booking_id, Room.occurrence_id == o.id, Room.worker_id.in_(list(workers)))))
    return session.execute(query.values(units_called_at=None).execution_options(
        synchronize_session=False)).rowcount or 0


def close_room(session: Session, name: str, now: datetime) -> bool:
    room = session.scalar(select(Room).where(Room.name == name))
    if room is None or room.state != "open":
        return False
    room.state, room.worker_id, room.closed_at = "closed", None, now
    announce_room_change(session, name)  # the node serving it may be another one
    return True


def _mixed_rooms() -> Select[tuple[int | None, int]]:
    """Per worker, the rooms it mixes: those with a mixed participant in them now."""
    return (select(CallRecord.worker_id, func.count(distinct(CallRecord.room_name)))
            .where(CallRecord.left_at.is_(None), CallRecord.kind == "mixed"))


def _live_units(session: Session, worker_id: int, costs: UnitCosts) -> int:
    rows = session.execute(select(CallRecord.kind, func.count())
                           .where(CallRecord.worker_id == worker_id,
                                  CallRecord.left_at.is_(None)).group_by(CallRecord.kind))
    mixed_rooms = session.execute(_mixed_rooms().where(CallRecord.worker_id == worker_id)
                                  .group_by(CallRecord.worker_id)).first()
    return sum((costs.of(kind) if kind in KINDS else costs.hd) * count for kind, count in rows) \
        + costs.mixed_room * (mixed_rooms[1] if mixed_rooms else 0)


def _mixes(session: Session, worker_id: int, room_name: str) -> bool:
    """Whether the worker mixes the room already (its composite is paid for)."""
    return session.scalar(select(CallRecord.id).where(
        CallRecord.worker_id == worker_id, CallRecord.room_name == room_name,
        CallRecord.kind == "mixed", CallRecord.left_at.is_(None)).limit(1)) is not None


def _room_izs(session: Session, room: Room) -> bool:
    if room.bridge_id is not None:
        return True
    if room.booking_id is None:
        return False
    return bool(session.scalar(select(Booking.izs).where(Booking.id == room.booking_id)))


def admit_join(session: Session, room_name: str, now: datetime, *,
               config: SchedulerConfig | None = None, kind: str | None = None,
               ) -> AdmissionDecision:
    """May a participant enter ``room_name`` now, and on which worker?

    A booked room is admitted while one of its occurrences is on (from the open lead
    before its start to the grace period after its end), a standing bridge always.
    The live load of the room's worker is checked too: a routine room whose worker is
    full is refused with "worker_full"; an IZS room never is. Opens the room when the
    job has not done so yet, so it needs a write session.
    """
    config = config or SchedulerConfig()
    costs = config.unit_costs
    join_cost = costs.of(kind or config.join_kind)
    room = session.scalar(select(Room).where(Room.name == room_name))
    if room is not None and room.state == "open" and (
            (room.booking_id is not None and not _occurrence_on(session, config, room, now))
            or (room.bridge_id is not None and not _bridge_on(session, room))):
        # Open, but its occurrence was cancelled, displaced or is over, or its bridge was
        # switched off: refused for that, as it will be once the job has closed it.
        room = None
    if room is None or room.state != "open":
        decision, room = _open_on_demand(session, config, room_name, now)
        if room is None:
            return decision
    assert room.worker_id is not None
    capacity = session.scalar(select(MediaWorker.capacity_units)
                              .where(MediaWorker.id == room.worker_id)) or 0
    izs = _room_izs(session, room)
    if (kind or config.join_kind) == "mixed" and not _mixes(session, room.worker_id, room_name):
        join_cost += costs.mixed_room  # the first mixed participant starts its composite
    if _live_units(session, room.worker_id, costs) + join_cost > capacity and not izs:
        return AdmissionDecision(False, "worker_full",
                                 "the media worker of this room is full; try again shortly",
                                 room.worker_id)
    return AdmissionDecision(True, "ok", "admitted", room.worker_id, izs)


def _occurrence_on(session: Session, config: SchedulerConfig, room: Room,
                   now: datetime) -> bool:
    """Is the occurrence an open booked room was opened for still on?

    The job closes a room whose occurrence was cancelled or displaced on its next tick;
    admission must not let anyone in meanwhile.
    """
    if session.scalar(select(Booking.status).where(Booking.id == room.booking_id)) != "confirmed":
        return False
    occurrence = session.get(BookingOccurrence, room.occurrence_id) \
        if room.occurrence_id is not None else None
    return occurrence is not None and occurrence.state == "scheduled" \
        and occurrence.end_utc + config.close_grace > now


def _bridge_on(session: Session, room: Room) -> bool:
    """Is the standing bridge an open room was opened for still switched on? The job
    closes the room of one switched off on its next tick; nobody joins it meanwhile."""
    return bool(session.scalar(select(StandingBridge.active)
                               .where(StandingBridge.id == room.bridge_id)))


def _open_on_demand(session: Session, config: SchedulerConfig, room_name: str,
                    now: datetime) -> tuple[AdmissionDecision, Room | None]:
    bridge = session.scalar(select(StandingBridge).where(StandingBridge.room_name == room_name))
    if bridge is not None:
        if not bridge.active:
            return AdmissionDecision(False, "bridge_inactive",
                                     "this standing bridge is switched off"), None
        room = open_room(session, config, room_name, bridge.units, now, bridge_id=bridge.id)
        if room is None:
            return AdmissionDecision(False, "no_worker", "no media worker is available"), None
        return AdmissionDecision(True, "ok", "admitted", room.worker_id), room
    booking = session.scalar(select(Booking).where(Booking.room_name == room_name))
    if booking is None:
        return AdmissionDecision(False, "room_not_open",
                                 "there is no booking or standing bridge for this room"), None
    if booking.status == "cancelled":
        return AdmissionDecision(False, "booking_cancelled", "this meeting was cancelled"), None
    o = BookingOccurrence
    current = session.scalars(select(o).where(
        o.booking_id == booking.id, o.start_utc <= now + config.open_lead,
        o.end_utc > now - config.close_grace).order_by(o.start_utc)).all()
    live = [occurrence for occurrence in current if occurrence.state == "scheduled"]
    if live:
        occurrence = live[0]
        room = open_room(session, config, room_name, occurrence.units, now,
                         booking_id=booking.id, occurrence_id=occurrence.id)
        if room is None:
            return AdmissionDecision(False, "no_worker", "no media worker is available"), None
        if occurrence.opened_at is None:
            occurrence.opened_at = now
        return AdmissionDecision(True, "ok", "admitted", room.worker_id), room
    if any(occurrence.state == "displaced" for occurrence in current):
        return AdmissionDecision(False, "booking_displaced",
                                 "this occurrence was displaced by an IZS emergency"), None
    upcoming = session.scalar(select(o.start_utc).where(
        o.booking_id == booking.id, o.state == "scheduled", o.start_utc > now)
        .order_by(o.start_utc).limit(1))
    if upcoming is None:
        # Its last occurrence is over: a code of its own, so that the page says the
        # meeting has ended rather than "join at the time of the meeting".
        return AdmissionDecision(False, "meeting_over",
                                 "the meeting is over; it has no further occurrence"), None
    return AdmissionDecision(
        False, "room_not_open",
        f"the room is not open now; it opens {config.open_lead.total_seconds() / 60:.0f} "
        f"minutes before {upcoming.isoformat()}", opens_at=upcoming - config.open_lead), None


def place_room(session: Session, room_name: str, now: datetime, *,
               config: SchedulerConfig) -> AdmissionDecision:
    """Where an ad-hoc room (an invitation link: no booking, no bridge) lives.

    Opened at its first join on the worker with most room to spare, so that every
    node's front sends its participants to the same place. It costs no booked units:
    its live participants count as any others do.
    """
    room = session.scalar(select(Room).where(Room.name == room_name))
    if room is not None and room.state == "open" and room.worker_id is not None:
        return AdmissionDecision(True, "ok", "placed", room.worker_id)
    opened = open_room(session, config, room_name, 0, now)
    if opened is None:
        return AdmissionDecision(False, "no_worker", "no media worker is available")
    return AdmissionDecision(True, "ok", "placed", opened.worker_id)


def release_room(session: Session, room_name: str, now: datetime) -> bool:
    """An ad-hoc room nobody is in any more is closed (booked rooms close on time).

    Nobody: no live node has a part of it either (a room spread over nodes,
    scheduler/media/spread.py), whichever node's last participant left first.
    """
    room = session.scalar(select(Room).where(Room.name == room_name))
    if room is None or room.booking_id is not None or room.bridge_id is not None:
        return False
    if session.scalar(select(func.count()).select_from(RoomPart)
                      .join(MediaNode, MediaNode.id == RoomPart.node_id)
                      .where(RoomPart.room_name == room_name, node_is_live(now))):
        return False
    return close_room(session, room_name, now)
