"""Rooms spread over several nodes: the state the nodes' fronts share about them.

A room lives where ``rooms.worker_id`` says (its *home* node), but participants who
joined through another node's front may sit on that node's workers (docs/workers.md,
"Rooms across nodes"). The fronts then exchange, through these tables, what one front
keeps in memory for a room spread over its own workers:

- ``room_parts``: each node's part: its workers' pipe addresses (whom the others pipe
  to), its participant list, whether it records; the room-wide lock.
- ``room_pipes``: each track a worker pipes to another node's worker (what that
  node's front must ``import``); a row goes when its owner leaves.
- ``room_commands``: moderation, chat and recording for another node's participants
  or home worker, taken (and deleted) once by that node; and that node's answer to
  the operator's moderation (how it went), as a command back.

Every change is announced with ``NOTIFY`` on :data:`CHANNEL`, the room's name as the
payload, in the transaction that made it (delivered only if it commits). A notice only
wakes a front up: it then reads the room (:func:`read_room`) and brings its workers in
line with what it read; it reads every spread room after a reconnect of its listening
connection and every resync besides, so a lost notice costs a later re-read, never a
wrong state. Parts and pipes of a node whose lease lapsed are not read at all; when
its lease comes back, it announces its rooms (:func:`announce_parts`) so the others
read them again with its part.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from scheduler.db import Database
from scheduler.media.placement import izs_only
from scheduler.media.rooms import AdmissionDecision, node_is_live
from scheduler.models import MediaNode, Room, RoomCommand, RoomPart, RoomPipe

CHANNEL = "multipoint_spread"
MAX_COMMANDS = 200  # taken per read: a flood of them cannot stall one front's read


def pipe_key(address: Sequence[Any]) -> str:
    """A pipe address as the tables keep it: "host:port" (an IPv6 host unbracketed:
    the port is after the last colon)."""
    host, port = str(address[0]), int(address[1])
    if not host or not 0 < port < 65536:
        raise ValueError(f"not a pipe address: {address!r}")
    return f"{host}:{port}"


def pipe_address(key: str) -> tuple[str, int]:
    host, _, port = key.rpartition(":")
    return host, int(port)


SECRET_HEX = re.compile(r"^[0-9a-f]{64}$")


def pipe_entry(worker: Sequence[Any]) -> tuple[str, int, str]:
    """A worker of a part as the tables keep it: its pipe address and its pipe secret
    (hex; what the other nodes' workers key its SRTP with, mcu/pipe.py)."""
    host, port = pipe_address(pipe_key(worker))
    secret = str(worker[2]) if len(worker) > 2 else ""
    if not SECRET_HEX.match(secret):
        raise ValueError(f"the pipe of {host}:{port} has no valid secret")
    return host, port, secret


SPREAD_MODES = ("never", "when_full", "always")


def takes_part(mode: str, decision: AdmissionDecision, node_labels: Sequence[str]) -> bool:
    """Does a node with these labels take part of a room that admission placed on
    another node's worker (``decision``), rather than send the participant there?

    ``always``: whenever admission let the participant in; ``when_full``: only when that
    worker is full (``worker_full``: a routine room; the participant would be refused);
    ``never``: not at all. An IZS-only node takes part of IZS rooms only.
    """
    if mode not in SPREAD_MODES:
        raise ValueError(f"unknown spread mode {mode!r}: one of {', '.join(SPREAD_MODES)}")
    full = not decision.allowed and decision.code == "worker_full"
    wanted = (mode == "always" and decision.allowed) or (mode != "never" and full)
    return wanted and (decision.izs or not izs_only(node_labels))


def announce(session: Session, room: str) -> None:
    """Wake the other fronts about this room when the transaction commits (PostgreSQL;
    alone on SQLite no room spreads)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, room)))


@dataclass
class SpreadView:
    """A spread room as one node reads it: the other live nodes' parts and what their
    workers pipe to this node's workers."""

    parts: dict[int, RoomPartView] = field(default_factory=dict)  # other nodes' parts
    own: bool = False  # this node has a part
    locked: bool = False
    recording: bool = False
    # (to_pipe, producer_id) -> (origin pipe, owner id, PipedProducer as JSON)
    pipes: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class RoomPartView:
    node_id: int
    workers: list[tuple[str, int, str]]  # pipe address and secret (hex)
    participants: list[dict[str, Any]]
    recording: bool = False


def write_part(session: Session, room: str, node_id: int, workers: Sequence[Sequence[Any]],
               participants: list[dict[str, Any]], recording: bool, now: datetime,
               locked: bool = False) -> None:
    """Record (or refresh) this node's part of ``room``. A new part is locked if this
    node's room was (``locked``) or the others' parts are; later the lock changes only
    room-wide (:func:`set_locked`)."""
    part = session.get(RoomPart, (room, node_id))
    if part is None:
        locked = locked or bool(session.scalar(select(func.count()).select_from(RoomPart).where(
            RoomPart.room_name == room, RoomPart.locked.is_(True))))
        part = RoomPart(room_name=room, node_id=node_id, locked=locked)
        session.add(part)
    part.workers = [list(pipe_entry(w)) for w in workers]
    part.participants = participants
    part.recording = recording
    part.updated_at = now
    announce(session, room)


def drop_part(session: Session, room: str, node_id: int) -> int:
    """This node no longer hosts any of ``room``: its part, the pipes from and to it and
    the commands for it go. Returns how many other nodes still have a part."""
    part = session.get(RoomPart, (room, node_id))
    own_pipes = [pipe_key(w) for w in part.workers] if part is not None else []
    session.execute(delete(RoomPart).where(RoomPart.room_name == room,
                                           RoomPart.node_id == node_id))
    session.execute(delete(RoomPipe).where(RoomPipe.room_name == room,
                                           RoomPipe.from_node_id == node_id))
    if own_pipes:
        session.execute(delete(RoomPipe).where(RoomPipe.room_name == room,
                                               RoomPipe.to_pipe.in_(own_pipes)))
    session.execute(delete(RoomCommand).where(RoomCommand.room_name == room,
                                              RoomCommand.node_id == node_id))
    announce(session, room)
    return int(session.scalar(select(func.count()).select_from(RoomPart)
                              .where(RoomPart.room_name == room)) or 0)


def clear_node(session: Session, node_id: int) -> list[str]:
    """A node (re)starting has no room in memory: whatever the tables say of its parts
    is stale. Returns the rooms concerned (each announced)."""
    rooms = set(session.scalars(select(RoomPart.room_name).where(RoomPart.node_id == node_id)))
    rooms |= set(session.scalars(select(RoomPipe.room_name)
                                 .where(RoomPipe.from_node_id == node_id)))
    for room in sorted(rooms):
        drop_part(session, room, node_id)
    session.execute(delete(RoomCommand).where(RoomCommand.node_id == node_id))
    return sorted(rooms)


def write_pipes(session: Session, room: str, node_id: int, to: Sequence[Any],
                origin: Sequence[Any], producers: list[dict[str, Any]]) -> None:
    """Tracks this node's worker at ``origin`` now pipes to another node's worker."""
    to_key, origin_key = pipe_key(to), pipe_key(origin)
    for producer in producers:
        producer_id, owner = str(producer["producer_id"]), str(producer["owner_id"])
        row = session.get(RoomPipe, (room, to_key, producer_id))
        if row is None:
            row = RoomPipe(room_name=room, to_pipe=to_key, producer_id=producer_id)
            session.add(row)
        row.from_node_id, row.origin, row.owner_id = node_id, origin_key, owner
        row.producer = dict(producer)
    announce(session, room)


def drop_owner_pipes(session: Session, room: str, node_id: int, owner: str) -> None:
    """That participant of this node left: the other nodes stop forwarding its tracks."""
    session.execute(delete(RoomPipe).where(RoomPipe.room_name == room,
                                           RoomPipe.from_node_id == node_id,
                                           RoomPipe.owner_id == owner))
    announce(session, room)


def set_pipe_sharing(session: Session, room: str, node_id: int, producer_id: str,
                     sharing: bool) -> None:
    """A piped screen share started or stopped."""
    for row in session.scalars(select(RoomPipe).where(
            RoomPipe.room_name == room, RoomPipe.from_node_id == node_id,
            RoomPipe.producer_id == producer_id)):
        row.producer = {**row.producer, "sharing": sharing}
    announce(session, room)


def set_locked(session: Session, room: str, locked: bool) -> None:
    """The room-wide lock: on every part, so any front reads it from its own."""
    session.execute(update(RoomPart).where(RoomPart.room_name == room).values(locked=locked))
    announce(session, room)


def claim_recording(session: Session, room: str, node_id: int, workers: Sequence[Sequence[Any]],
                    participants: list[dict[str, Any]], locked: bool, now: datetime) -> int | None:
    """This node's home worker is to record ``room``: one recording per room. Returns the
    live node whose part records it already (nothing written), or None: this node's part
    (written as :func:`write_part` does) now says it records, so the others' claims see it.

    Claims of one room are taken one at a time (the room's row locked), so two Records
    pressed on two nodes at once cannot both find the room unrecorded."""
    session.execute(select(Room.id).where(Room.name == room).with_for_update())
    recording = session.scalar(
        select(RoomPart.node_id).join(MediaNode, MediaNode.id == RoomPart.node_id)
        .where(RoomPart.room_name == room, RoomPart.node_id != node_id,
               RoomPart.recording.is_(True), node_is_live(now)))
    if recording is not None:
        return int(recording)
    write_part(session, room, node_id, workers, participants, True, now, locked)
    return None


def queue_command(session: Session, room: str, node_id: int, command: dict[str, Any],
                  now: datetime) -> None:
    """Ask the front of ``node_id`` to do something in its part of ``room``."""
    session.add(RoomCommand(room_name=room, node_id=node_id, command=command, created_at=now))
    announce(session, room)


def take_commands(session: Session, node_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The commands for this node, oldest first, deleted as they are taken (so each is
    done once, even if two reads of this node overlap: the rows are locked)."""
    rows = session.execute(select(RoomCommand.id, RoomCommand.room_name, RoomCommand.command)
                           .where(RoomCommand.node_id == node_id).order_by(RoomCommand.id)
                           .limit(MAX_COMMANDS).with_for_update(skip_locked=True)).all()
    if rows:
        session.execute(delete(RoomCommand).where(RoomCommand.id.in_([r.id for r in rows])))
    return [(room, dict(command)) for _, room, command in rows]


def read_room(session: Session, room: str, node_id: int, now: datetime) -> SpreadView:
    """``room`` as this node must see it: the other live nodes' parts, the room-wide
    lock and recording, and the tracks piped to this node's workers."""
    view = SpreadView()
    own_pipes: list[str] = []
    rows = session.execute(select(RoomPart, node_is_live(now))
                           .join(MediaNode, MediaNode.id == RoomPart.node_id)
                           .where(RoomPart.room_name == room)).all()
    for part, live in rows:
        if part.node_id == node_id:
            view.own = True
            view.locked = view.locked or part.locked
            own_pipes = [pipe_key(w) for w in part.workers]
            view.recording = view.recording or part.recording
            continue
        if not live:  # a dead node's part: its participants are gone and rejoin
            continue
        view.locked = view.locked or part.locked
        view.recording = view.recording or part.recording
        view.parts[part.node_id] = RoomPartView(part.node_id,
                                                [pipe_entry(w) for w in part.workers],
                                                list(part.participants or []), part.recording)
    if own_pipes and view.parts:
        for pipe in session.scalars(select(RoomPipe).where(
                RoomPipe.room_name == room, RoomPipe.to_pipe.in_(own_pipes),
                RoomPipe.from_node_id.in_(list(view.parts)))):
            view.pipes[(pipe.to_pipe, pipe.producer_id)] = (pipe.origin, pipe.owner_id,
                                                            dict(pipe.producer))
    return view


def spread_rooms(session: Session, node_id: int) -> list[str]:
    """The rooms this node has a part of (what a resync reads)."""
    return list(session.scalars(select(RoomPart.room_name).where(RoomPart.node_id == node_id)))


def announce_parts(db: Database, node_id: int) -> list[str]:
    """Wake the other fronts about every room this node has a part of (its lease came
    back after they read those rooms without it); the rooms announced."""
    with db.write_session() as session:
        rooms = spread_rooms(session, node_id)
        for room in rooms:
            announce(session, room)
        return rooms


def room_locked(session: Session, room: str) -> bool:
    """Is the room locked by a host on any node (admission of a non-host)?"""
    return bool(session.scalar(select(func.count()).select_from(RoomPart).where(
        RoomPart.room_name == room, RoomPart.locked.is_(True))))


class DatabaseSpreadStore:
    """The functions above for one node, off the event loop (what the front's
    signaling/spread.py calls)."""

    def __init__(self, database: Any, node_id: int, clock: Any) -> None:
        self.database, self.node_id, self.clock = database, node_id, clock

    async def _write(self, change: Any, *args: Any) -> Any:
        def run() -> Any:
            with self.database.write_session() as session:
                return change(session, *args)
        return await asyncio.to_thread(run)

    async def _read(self, query: Any, *args: Any) -> Any:
        def run() -> Any:
            with self.database.read_session() as session:
                return query(session, *args)
        return await asyncio.to_thread(run)

    async def write_part(self, room: str, workers: Sequence[Sequence[Any]],
                         participants: list[dict[str, Any]], recording: bool,
                         locked: bool) -> None:
        await self._write(write_part, room, self.node_id, workers, participants, recording,
                          self.clock(), locked)

    async def drop_part(self, room: str) -> int:
        return int(await self._write(drop_part, room, self.node_id))

    async def clear(self) -> list[str]:
        return list(await self._write(clear_node, self.node_id))

    async def write_pipes(self, room: str, to: Sequence[Any], origin: Sequence[Any],
                          producers: list[dict[str, Any]]) -> None:
        await self._write(write_pipes, room, self.node_id, to, origin, producers)

    async def drop_owner_pipes(self, room: str, owner: str) -> None:
        await self._write(drop_owner_pipes, room, self.node_id, owner)

    async def set_pipe_sharing(self, room: str, producer: str, sharing: bool) -> None:
        await self._write(set_pipe_sharing, room, self.node_id, producer, sharing)

    async def set_locked(self, room: str, locked: bool) -> None:
        await self._write(set_locked, room, locked)

    async def claim_recording(self, room: str, workers: Sequence[Sequence[Any]],
                              participants: list[dict[str, Any]], locked: bool) -> int | None:
        claimed: int | None = await self._write(claim_recording, room, self.node_id, workers,
                                                participants, locked, self.clock())
        return claimed

    async def queue_command(self, room: str, node_id: int, command: dict[str, Any]) -> None:
        await self._write(queue_command, room, node_id, command, self.clock())

    async def take_commands(self) -> list[tuple[str, dict[str, Any]]]:
        return list(await self._write(take_commands, self.node_id))

    async def read_room(self, room: str) -> SpreadView:
        view: SpreadView = await self._read(read_room, room, self.node_id, self.clock())
        return view

    async def spread_rooms(self) -> list[str]:
        return list(await self._read(spread_rooms, self.node_id))

    async def room_locked(self, room: str) -> bool:
        return bool(await self._read(room_locked, room))
