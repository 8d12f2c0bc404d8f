"""Node leases: which nodes are alive, and what happens to the rooms of one that is not.

Several ``multipoint serve --node NAME`` processes share one PostgreSQL database, and the
database is the truth: a node serves a room because ``rooms.worker_id`` names one of its
workers, and it is alive because its lease (``media_nodes.lease_expires_at``) has not
lapsed. Nothing a node keeps in memory overrides that.

- A node takes its lease when it registers (scheduler/media/nodes.py) and renews it every
  lease/3 seconds (:func:`renew_lease`).
- Every live node runs :func:`reap_dead_nodes` as often: a node whose lease lapsed is
  marked dead (``dead_at``; the row stays, with its workers and history) and its open
  rooms are placed on workers of live nodes by the usual rules (scheduler/media/placement.py),
  each move written down (``room_moves``). Reapers take the pool row exclusively and
  the node rows, so two nodes reaping at once move each room exactly once.
- Fencing: a node that was only paused (SIGSTOP, a long GC, a frozen VM) finds out at
  its next renewal that it was reaped; the renewal lists the rooms that moved away, and
  the node must stop serving them (disconnect their participants, who rejoin and are
  routed to the room's new node). It never takes them back by itself. The reaper ended
  every call record of its workers, but its other participants (its parts of rooms
  living elsewhere, rooms with nowhere to go) are still connected: it opens new records
  for them (scheduler/booking/calls.py, ``reopen_calls``), or usage and its workers'
  load would leave them out. It is alive again from that renewal, for new rooms and the
  old ones that did not move.
- A lease that came back: while it had lapsed, the other nodes read this node's parts
  of spread rooms as gone (scheduler/media/spread.py reads live nodes' parts only), and
  they read a room again only when told. A renewal that ends after the old lease ran
  out so announces every room this node has a part of (:meth:`NodeLease.renew`), as
  the reaper announces those of a node it marks dead (the others drop its part at once).

Renewals write only the node's row, and columns the pool version does not watch
(scheduler/booking/pool_version.py): a heartbeat never makes decisions re-read the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from scheduler.booking.calls import end_calls_on_workers
from scheduler.booking.transactions import run_decision
from scheduler.config import SchedulerConfig
from scheduler.db import Database
from scheduler.errors import NotFound
from scheduler.media.placement import place
from scheduler.media.room_signals import announce_room_change
from scheduler.media.rooms import placed_izs, recall_units, worker_loads
from scheduler.media.spread import announce, announce_parts, spread_rooms
from scheduler.models import CallRecord, MediaNode, MediaWorker, Room, RoomMove

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """The outcome of a renewal."""

    node_id: int
    expires_at: datetime
    held: bool  # the node kept its lease: nobody reaped it since the last renewal
    moved_rooms: tuple[str, ...] = ()  # reaped: rooms now on other nodes, to stop serving
    previous_expires_at: datetime | None = None  # the lease this renewal extended


def renew_lease(db: Database, node_id: int, now: datetime, lease: timedelta) -> Lease:
    """Extend the node's lease to ``now + lease`` and say whether it still held it.

    A lease that lapsed without anyone reaping the node is simply renewed (held). A node
    that was reaped gets a new lease, is alive again, and learns which of its rooms
    moved away meanwhile.
    """
    with db.write_session() as session:
        # The node's row, locked: a reaper deciding on this node at the same moment
        # either sees the renewed lease or has finished (dead_at and the moves written).
        node = session.scalar(select(MediaNode).where(MediaNode.id == node_id)
                              .with_for_update())
        if node is None:
            raise NotFound("node_not_found", f"no media node {node_id}")
        moved: tuple[str, ...] = ()
        held, previous = node.dead_at is None, node.lease_expires_at
        if not held:
            moved = tuple(session.scalars(
                select(RoomMove.room_name).where(RoomMove.from_node_id == node_id,
                                                 RoomMove.moved_at >= node.dead_at)
                .order_by(RoomMove.id)))
        node.heartbeat_at, node.lease_expires_at, node.dead_at = now, now + lease, None
        return Lease(node_id, node.lease_expires_at, held, moved, previous)


def _lapsed(now: datetime) -> ColumnElement[bool]:
    return and_(MediaNode.lease_expires_at.is_not(None), MediaNode.lease_expires_at <= now,
                MediaNode.dead_at.is_(None))


def _stranded() -> ColumnElement[bool]:
    """Open rooms on a worker of a dead node (one the last reaping could not place)."""
    return Room.worker_id.in_(select(MediaWorker.id)
                              .join(MediaNode, MediaNode.id == MediaWorker.node_id)
                              .where(MediaNode.dead_at.is_not(None)))


def reap_dead_nodes(db: Database, now: datetime, *, config: SchedulerConfig | None = None,
                    ) -> list[tuple[str, int]]:
    """Mark nodes whose lease lapsed dead and place their open rooms on live workers.

    Returns (room name, new worker id) for each room this call moved. A room for which
    no live worker is allowed stays where it is, and the next call tries again.
    """
    config = config or SchedulerConfig()
    # The usual case, every few seconds on every node: nothing to do. Found without the
    # exclusive pool lock, which would hold up every booking decision meanwhile.
    with db.read_session() as session:
        work = session.scalar(select(func.count()).select_from(MediaNode)
                              .where(_lapsed(now))) or session.scalar(
            select(func.count()).select_from(Room).where(Room.state == "open", _stranded()))
    if not work:
        return []

    def decide(session: Session) -> list[tuple[str, int]]:
        # The pool row is held exclusively (run_decision): a second reaper waits here and
        # then finds the nodes dead and their rooms moved, so it does nothing twice.
        for node in session.scalars(select(MediaNode).where(_lapsed(now))
                                    .order_by(MediaNode.id).with_for_update()):
            node.dead_at = now
            log.warning("media node %s lost its lease at %s: marked dead", node.name,
                        node.lease_expires_at)
            # Every call on its workers is over, not only those of the rooms that move
            # below: its part of a room living on another node (scheduler/media/spread.py)
            # moves nowhere, and its participants rejoin elsewhere with new records.
            end_calls_on_workers(session, session.scalars(
                select(MediaWorker.id).where(MediaWorker.node_id == node.id)).all(), now)
            # Its parts of spread rooms are gone with it, but the other nodes read a room
            # only when told (or at their resync, minutes away): told now, they stop
            # listing its participants and piping to its workers.
            for room in spread_rooms(session, node.id):
                announce(session, room)
        session.flush()
        rooms = session.execute(
            select(Room, MediaWorker.node_id).join(MediaWorker, MediaWorker.id == Room.worker_id)
            .where(Room.state == "open", _stranded()).order_by(Room.id)
            .with_for_update(of=Room)).all()
        if not rooms:
            return []
        return move_rooms(session, config, rooms, now)

    return run_decision(db, [], decide, exclusive_pool=True)


def move_rooms(session: Session, config: SchedulerConfig, rooms: Sequence[tuple[Room, int]],
               now: datetime) -> list[tuple[str, int]]:
    """Place open ``rooms`` (each with the node it leaves) anew on live workers, by the
    usual rules; (room name, new worker id) for each one moved. A room with nowhere to
    go stays. Its calls on the worker it leaves are over (those participants rejoin),
    its room units are called again, and the nodes are told (a fenced one stops it).
    The caller holds the pool row exclusively and the rooms' rows."""
    loads = worker_loads(session, config.unit_costs, live_at=now)
    moved: list[tuple[str, int]] = []
    for room, from_node in rooms:
        target = place(loads, room.units,
                       izs=placed_izs(session, room.booking_id, room.bridge_id))
        if target is None:
            log.error("room %s of worker %s: no live worker to move it to", room.name,
                      room.worker_id)
            continue
        session.add(RoomMove(room_name=room.name, from_node_id=from_node,
                             from_worker_id=room.worker_id, to_worker_id=target.worker_id,
                             moved_at=now))
        # Its participants were on the worker it leaves: they are gone (or, if a node
        # was only paused, are disconnected by its fencing) and rejoin with new records.
        for record in session.scalars(select(CallRecord).where(
                CallRecord.room_name == room.name, CallRecord.worker_id == room.worker_id,
                CallRecord.left_at.is_(None))):
            record.left_at = max(now, record.joined_at)
        room.worker_id = target.worker_id
        announce_room_change(session, room.name)  # a fenced node stops serving it
        if room.occurrence_id is not None:
            # Its room units' calls ended with that worker: the new one calls them again.
            recall_units(session, now, occurrence_id=room.occurrence_id)
        # The next room sees this one on its new worker.
        loads = [dataclasses.replace(w, booked=w.booked + room.units)
                 if w.worker_id == target.worker_id else w for w in loads]
        moved.append((room.name, target.worker_id))
    return moved


ReapedHook = Callable[[list[str]], Awaitable[None]]


class NodeLease:
    """A front's lease: renewed in the background, reaping dead nodes as it goes.

    ``lease_valid`` says whether the last successful renewal's lease still runs (on the
    monotonic clock, measured from before the renewal was sent, so it errs on the short
    side). ``on_reaped`` is called when a renewal finds this node was reaped, with the
    rooms that moved away meanwhile: the front stops serving them, and opens new call
    records for the participants it still has (the reaper ended their records).
    """

    def __init__(self, db: Database, config: SchedulerConfig, node_id: int, lease: timedelta,
                 *, reap: bool, on_reaped: ReapedHook | None = None,
                 clock: Callable[[], datetime]) -> None:
        self.db, self.config, self.node_id, self.lease = db, config, node_id, lease
        self.reap, self.on_reaped, self.clock = reap, on_reaped, clock
        self._valid_until = time.monotonic() + lease.total_seconds()  # taken at registration
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_valid(self) -> bool:
        return time.monotonic() < self._valid_until

    async def renew(self) -> Lease:
        """One renewal (and, when this node reaps, one reaping); what the renewal said."""
        started = time.monotonic()
        lease = await asyncio.to_thread(renew_lease, self.db, self.node_id, self.clock(),
                                        self.lease)
        self._valid_until = started + self.lease.total_seconds()
        if not lease.held or (lease.previous_expires_at is not None
                              and self.clock() >= lease.previous_expires_at):
            # Committed after the old lease ran out (the clock read now, not before the
            # renewal, which may have waited): another node may have read a spread room
            # meanwhile and left this node's part out. Told, it reads the room again.
            rooms = await asyncio.to_thread(announce_parts, self.db, self.node_id)
            if rooms:
                log.warning("this node's lease had lapsed; its parts of spread rooms "
                            "announced again: %s", ", ".join(rooms))
        if not lease.held:
            log.warning("this node had been reaped; rooms that moved away: %s",
                        ", ".join(lease.moved_rooms) or "none")
            if self.on_reaped is not None:
                await self.on_reaped(list(lease.moved_rooms))
        if self.reap:
            for room, worker in await asyncio.to_thread(reap_dead_nodes, self.db, self.clock(),
                                                        config=self.config):
                log.warning("room %s moved to worker %s", room, worker)
        return lease

    async def _run(self) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be away a moment: try again next time
                log.exception("renewing this node's lease failed")
            await asyncio.sleep(interval)

    def start(self) -> None:
        """Renew at once, then every lease/3: the lease taken at registration has been
        running while the front was set up."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="node-lease")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
