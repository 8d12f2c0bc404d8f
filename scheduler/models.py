"""Tables. Business rules live in plain functions elsewhere in scheduler/, not here."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.booking import day_versions, pool_version
from scheduler.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


PIN_DIGITS = 6


def new_pin() -> str:
    """A meeting's PIN for room units (scheduler/booking/dial_in.py): random digits."""
    return str(secrets.randbelow(10**PIN_DIGITS)).zfill(PIN_DIGITS)


class SelfTestResult(Base):
    """The verdict of one self-test call (camera, microphone, network, echo).

    ``endpoint_serial`` ties it to a room unit of the grant programme when the unit's
    test link carried one; the rollout tracker reads these rows.
    """

    __tablename__ = "selftest_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    endpoint_serial: Mapped[str | None] = mapped_column(String(100), index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    problems: Mapped[list[str]] = mapped_column(JSON, default=list)
    figures: Mapped[dict[str, float | None]] = mapped_column(JSON, default=dict)
    user_agent: Mapped[str] = mapped_column(Text, default="")


class UTCDateTime(TypeDecorator[datetime]):
    """An instant stored as naive UTC and read back as aware UTC, on every database.

    SQLite keeps no zone and would hand back naive values; comparing those with aware
    ones fails at run time, so every instant column of the scheduler uses this type.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Organisation(Base):
    """A region, an ORP (under its region), a central body, an IZS component, a group."""

    __tablename__ = "organisations"
    __table_args__ = (UniqueConstraint("parent_id", "name", name="uq_organisations_parent_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), index=True)
    code: Mapped[str | None] = mapped_column(String(100), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    email: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Quota(Base):
    """The guaranteed share of the pool an organisation (and those under it) owns."""

    __tablename__ = "quotas"

    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"),
                                                 primary_key=True)
    share_bp: Mapped[int] = mapped_column(Integer)  # basis points (1/10000) of the pool


class CapacityPool(Base):
    """The single row that capacity changes lock exclusively and bookings lock shared."""

    __tablename__ = "capacity_pool"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class CapacityDay(Base):
    """One row per UTC day: a booking locks the days its occurrences touch.

    Two bookings can only compete for capacity if they overlap in time, and then they
    share a day: so locking the days serialises exactly the bookings that conflict.

    ``version`` changes whenever a scheduled occurrence touching the day is written, by
    a trigger on booking_occurrences (scheduler/booking/day_versions.py), so every writer changes
    it, whatever its code path. A process may keep a day's occurrences in memory for as
    long as the version is unchanged (scheduler/booking/occupancy.py). Rows are never deleted:
    a day created again would start again at 0.
    """

    __tablename__ = "capacity_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class MediaNode(Base):
    """One ``multipoint serve`` process (a front and its workers) on one machine.

    ``lease_expires_at`` is the node's lease (scheduler/media/leases.py): it renews it every
    few seconds; once it has lapsed a live node's reaper marks it dead (``dead_at``) and
    places its open rooms elsewhere. A node without a lease (NULL: one seeded or added by
    hand, as before leases) is live while enabled. ``labels`` (e.g. ``["izs"]``) steer
    placement (scheduler/media/placement.py); ``addresses`` are the public URLs of its front.
    """

    __tablename__ = "media_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    labels: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    addresses: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RoomMove(Base):
    """A room the reaper took from a dead node and placed on another node's worker.

    The dead node, should it come back (it was only paused), learns from these rows
    which rooms it must stop serving (fencing); they stay as the history of failovers.
    """

    __tablename__ = "room_moves"
    __table_args__ = (Index("ix_room_moves_node_moved", "from_node_id", "moved_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_name: Mapped[str] = mapped_column(String(64))
    from_node_id: Mapped[int] = mapped_column(ForeignKey("media_nodes.id"))
    from_worker_id: Mapped[int | None] = mapped_column(Integer)
    to_worker_id: Mapped[int] = mapped_column(Integer)
    moved_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RoomPart(Base):
    """One node's part of a room spread over several nodes (docs/workers.md, "Rooms
    across nodes"): what the other nodes' fronts need to treat the room as one.

    ``workers`` are the pipe addresses (``[host, port]``) of this node's workers hosting
    the room, its first the node's home for the room; ``participants`` this node's part
    of the participant list. ``locked`` is room-wide: a lock sets it on every part.
    """

    __tablename__ = "room_parts"

    room_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("media_nodes.id"), primary_key=True)
    workers: Mapped[list[list[object]]] = mapped_column(JSON, default=list)
    participants: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    recording: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RoomPipe(Base):
    """A track one node's worker pipes to another node's worker (its ``piped`` event):
    the receiving node's front imports what is addressed to its workers."""

    __tablename__ = "room_pipes"

    room_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    to_pipe: Mapped[str] = mapped_column(String(80), primary_key=True)  # "host:port"
    producer_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    from_node_id: Mapped[int] = mapped_column(ForeignKey("media_nodes.id"))
    origin: Mapped[str] = mapped_column(String(80))  # the origin worker's pipe, "host:port"
    owner_id: Mapped[str] = mapped_column(String(80))
    producer: Mapped[dict[str, object]] = mapped_column(JSON)  # mcu.pipe.PipedProducer


class RoomCommand(Base):
    """Something a front asks another node's front to do in a spread room (mute or
    remove one of its participants, pass on a chat message, record on the home
    worker); taken and deleted by that node in one transaction, so done once."""

    __tablename__ = "room_commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_name: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[int] = mapped_column(ForeignKey("media_nodes.id"), index=True)
    command: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MediaWorker(Base):
    """One media worker process (one core) of a node; rooms are placed on workers."""

    __tablename__ = "media_workers"
    __table_args__ = (UniqueConstraint("node_id", "index", name="uq_media_workers_node_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("media_nodes.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    capacity_units: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class User(Base):
    """A person or system using the API. Passwords and sign-in belong to the admin web."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, hex
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class UserSession(Base):
    """A signed-in browser session; the cookie carries the secret, the row its hash."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Booking(Base):
    __tablename__ = "bookings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(100), unique=True)  # iCalendar UID
    sequence: Mapped[int] = mapped_column(Integer, default=0)  # iCalendar SEQUENCE
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    organiser_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    organiser_email: Mapped[str] = mapped_column(String(200), default="")
    invitees: Mapped[list[str]] = mapped_column(JSON, default=list)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[str] = mapped_column(String(20), default="routine")
    izs: Mapped[bool] = mapped_column(Boolean, default=False)
    zone: Mapped[str] = mapped_column(String(64))
    local_start: Mapped[datetime] = mapped_column(DateTime)  # wall-clock, naive
    local_end: Mapped[datetime] = mapped_column(DateTime)
    rrule: Mapped[str | None] = mapped_column(String(500))
    exdates: Mapped[list[str]] = mapped_column(JSON, default=list)
    skip_public_holidays: Mapped[bool] = mapped_column(Boolean, default=False)
    participants: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    units: Mapped[int] = mapped_column(Integer)
    room_name: Mapped[str] = mapped_column(String(64), unique=True)
    # What a room unit keys in (DTMF) after dialling the meeting's number (dial_in.py).
    dial_in_pin: Mapped[str] = mapped_column(String(12), default=new_pin, server_default="")
    status: Mapped[str] = mapped_column(String(20), default="confirmed")  # or "cancelled"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BookingUnit(Base):
    """A room unit a booking calls into its room when an occurrence starts (its
    ``sip_uri``); the unit is one of the booking's organisation or of one under it."""

    __tablename__ = "booking_units"

    booking_id: Mapped[int] = mapped_column(ForeignKey("bookings.id"), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id"), primary_key=True)


class BookingOccurrence(Base):
    """One occurrence of a booking and the capacity it holds; the unit of admission."""

    __tablename__ = "booking_occurrences"
    __table_args__ = (Index("ix_booking_occurrences_state_start", "state", "start_utc"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    booking_id: Mapped[int] = mapped_column(ForeignKey("bookings.id"), index=True)
    start_utc: Mapped[datetime] = mapped_column(UTCDateTime)
    end_utc: Mapped[datetime] = mapped_column(UTCDateTime)
    units: Mapped[int] = mapped_column(Integer)
    holder_id: Mapped[int | None] = mapped_column(Integer)  # quota holder charged
    izs: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[str] = mapped_column(String(20), default="routine")
    state: Mapped[str] = mapped_column(String(20), default="scheduled")
    displaced_by: Mapped[int | None] = mapped_column(Integer)  # the emergency booking's id
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the job called the booking's room units in (at the start). Cleared when those
    # calls were lost with their node (a restart, a room moved off a dead node), so that
    # the node that has the room now calls them again.
    units_called_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An occurrence moved on its own (PATCH .../occurrences/{start}): the wall-clock start
    # of the series' occurrence it stands for (an exception of the series; the
    # invitation's RECURRENCE-ID). NULL for one at its series time.
    instance_local: Mapped[datetime | None] = mapped_column(DateTime)


class StandingBridge(Base):
    """An always-available IZS room; the IZS reserve guarantees its capacity."""

    __tablename__ = "standing_bridges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    room_name: Mapped[str] = mapped_column(String(64), unique=True)
    participants: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    units: Mapped[int] = mapped_column(Integer)
    dial_in_pin: Mapped[str] = mapped_column(String(12), default=new_pin, server_default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Room(Base):
    """A room the scheduler has admitted: open (on a worker) or closed."""

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    booking_id: Mapped[int | None] = mapped_column(ForeignKey("bookings.id"))
    bridge_id: Mapped[int | None] = mapped_column(ForeignKey("standing_bridges.id"))
    occurrence_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="closed")
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("media_workers.id"))
    units: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CallRecord(Base):
    """Who joined which room when, for how long, from which organisation."""

    __tablename__ = "call_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_name: Mapped[str] = mapped_column(String(64), index=True)
    booking_id: Mapped[int | None] = mapped_column(Integer)
    organisation_id: Mapped[int | None] = mapped_column(Integer, index=True)
    participant: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(10), default="hd")
    worker_id: Mapped[int | None] = mapped_column(Integer)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Notification(Base):
    """An e-mail to send (the outbox): written in the transaction that causes it."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # invitation, update, cancel, displaced, ...
    booking_id: Mapped[int | None] = mapped_column(Integer, index=True)
    to_address: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    ics: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")


class UsageDaily(Base):
    """Usage rolled up per organisation and day by the roll-up job."""

    __tablename__ = "usage_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    participant_seconds: Mapped[int] = mapped_column(Integer, default=0)
    booked_unit_hours: Mapped[float] = mapped_column(Float, default=0.0)


class UsageDayRolledUp(Base):
    """A day the roll-up has done, one with no usage (no ``usage_daily`` rows) too: the
    roll-up does the days it has not done, not each quiet day again every night."""

    __tablename__ = "usage_days_rolled_up"

    day: Mapped[date] = mapped_column(Date, primary_key=True)


# Admin web: sign-in lockout, audit log, rollout of the grant programme's room units ----


class AuditEntry(Base):
    """One change: who did what to which object, when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)


class GrantProgramme(Base):
    """A grant programme (or one call of it) that buys room video units."""

    __tablename__ = "grant_programmes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    budget_czk: Mapped[int] = mapped_column(Integer)
    call_opens: Mapped[date] = mapped_column(Date)
    call_closes: Mapped[date] = mapped_column(Date)
    deadline: Mapped[date] = mapped_column(Date)  # units in service by this day
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GrantApplication(Base):
    """An institution's application to a programme."""

    __tablename__ = "grant_applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("grant_programmes.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    submitted_on: Mapped[date] = mapped_column(Date)
    units_requested: Mapped[int] = mapped_column(Integer)
    amount_czk: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="submitted")
    approved_czk: Mapped[int] = mapped_column(Integer, default=0)
    decided_on: Mapped[date | None] = mapped_column(Date)


class Endpoint(Base):
    """A room video unit bought through the grant programme, and where its rollout stands."""

    __tablename__ = "endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(100), unique=True)
    model: Mapped[str] = mapped_column(String(200))
    site: Mapped[str] = mapped_column(String(300), default="")
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    programme_id: Mapped[int | None] = mapped_column(ForeignKey("grant_programmes.id"),
                                                     index=True)
    status: Mapped[str] = mapped_column(String(20), default="requested", index=True)
    price_czk: Mapped[int] = mapped_column(Integer, default=0)
    due_on: Mapped[date | None] = mapped_column(Date)  # in service by this day
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_selftest_id: Mapped[int | None] = mapped_column(Integer)
    last_selftest_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_selftest_passed: Mapped[bool | None] = mapped_column(Boolean)
    # Where the unit takes SIP calls (sip:unit@address): its test call dials it.
    sip_uri: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@event.listens_for(BookingOccurrence.__table__, "after_create")
def _occurrence_triggers(_table: Table, connection: Connection, **_: object) -> None:
    # Schemas made by create_all (tests, tools) get the triggers migrations create.
    day_versions.create_triggers(connection)


@event.listens_for(Base.metadata, "after_create")
def _pool_triggers(_metadata: object, connection: Connection, **_: object) -> None:
    # On every watched table (they exist by now), as the migration makes them.
    pool_version.create_triggers(connection)
