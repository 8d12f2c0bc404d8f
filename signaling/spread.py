"""Rooms spread over several nodes, as one node's front sees them (docs/workers.md,
"Rooms across nodes").

Within a node, the front passes its workers' pipe events to each other
(signaling/server.py: ``link_room``, ``piped`` -> ``import``, ``unpiped`` ->
``drop_remote``, ``pipe_update`` -> ``update_import``) and keeps the room-wide state in
its :class:`~signaling.server.RoomChannel`. Across nodes the same goes through the
shared database (scheduler/media/spread.py): a front *writes* what its own workers and
participants do (its part of the room, the tracks its workers pipe to other nodes'
workers, commands for another node), and *reads* a room again whenever a notice names
it, after a reconnect and every resync, then makes its workers match what it read.
Reading is idempotent: whatever was missed is caught up by the next read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from signaling.protocol import MODES, ProtocolError

if TYPE_CHECKING:
    from scheduler.media.spread import SpreadView
    from signaling.server import RoomChannel, Signaling

logger = logging.getLogger(__name__)

RETRY_S, MAX_RETRY_S = 0.5, 5.0  # a failed write is tried again after these (doubling)
# How long the operator's moderation of another node's participant waits for that node
# to say it was done: a notice each way and a mute take well under a second; a node
# that is paused, cut off or dead (its lease not lapsed yet) does not answer at all.
ANSWER_TIMEOUT_S = 5.0


class NotConfirmed(Exception):
    """The other node did not answer in time: the command may still be done, or never."""


class SpreadStore(Protocol):
    """What the front needs of the database (scheduler.media.spread.DatabaseSpreadStore)."""

    node_id: int

    async def write_part(self, room: str, workers: Sequence[Sequence[Any]],
                         participants: list[dict[str, Any]], recording: bool,
                         locked: bool) -> None: ...

    async def drop_part(self, room: str) -> int: ...

    async def clear(self) -> list[str]: ...

    async def write_pipes(self, room: str, to: Sequence[Any], origin: Sequence[Any],
                          producers: list[dict[str, Any]]) -> None: ...

    async def drop_owner_pipes(self, room: str, owner: str) -> None: ...

    async def set_pipe_sharing(self, room: str, producer: str, sharing: bool) -> None: ...

    async def set_locked(self, room: str, locked: bool) -> None: ...

    async def claim_recording(self, room: str, workers: Sequence[Sequence[Any]],
                              participants: list[dict[str, Any]], locked: bool) -> int | None: ...

    async def queue_command(self, room: str, node_id: int, command: dict[str, Any]) -> None: ...

    async def take_commands(self) -> list[tuple[str, dict[str, Any]]]: ...

    async def read_room(self, room: str) -> SpreadView: ...

    async def room_locked(self, room: str) -> bool: ...


def _pipe_key(address: Sequence[Any]) -> str:
    return f"{address[0]}:{int(address[1])}"


def _pipe_address(key: str) -> tuple[str, int]:
    host, _, port = key.rpartition(":")
    return host, int(port)


class SpreadRooms:
    """This front's side of its rooms that span nodes."""

    def __init__(self, signaling: Signaling, store: SpreadStore) -> None:
        self.signaling = signaling
        self.store = store
        # Writes go out one at a time, in the order the workers' events came: a track's
        # "unpiped" must not overtake its "piped".
        self._writes: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.failed_writes = 0
        # Commands asked with ask(), by their answer's key: what the other node answered.
        self._answers: dict[str, asyncio.Future[str]] = {}
        # What ends a room on this node (LiveRooms.close: room, English reason, code), set
        # by the composition root: another node's operator closing a spread room.
        self.close_room: Callable[[str, str, str], Awaitable[None]] | None = None

    def start(self) -> None:
        # A node that (re)starts has nothing in memory: its old rows are stale.
        self._queue(self.store.clear)
        self._writer = asyncio.ensure_future(self._write_all())

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def _queue(self, write: Callable[[], Awaitable[Any]]) -> None:
        self._writes.put_nowait(write)

    async def _write_all(self) -> None:
        while True:
            write = await self._writes.get()
            delay = RETRY_S
            while True:
                try:
                    await write()
                    break
                except Exception:
                    # The database is away (a restart, a network cut): the same write
                    # again, and the later ones only after it, so the rows never miss a
                    # change or see them out of order. Every write but a command is
                    # idempotent; a command whose commit was not confirmed may go twice.
                    self.failed_writes += 1
                    if delay == RETRY_S:
                        logger.exception("spread rooms: a write failed; retrying")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_S)

    # What this front's workers and participants do ----------------------------------

    def take_part(self, channel: RoomChannel) -> None:
        """This node now hosts part of a room that lives on another node too."""
        channel.spread = True
        self.publish_part(channel)

    def publish_part(self, channel: RoomChannel) -> None:
        if not channel.spread:
            return
        name = channel.name

        async def write() -> None:
            # Read when written, not when queued: the part as it is by then (recording
            # from the moment this node claimed the room's recording: claim_recording).
            workers = self._part_workers(channel)
            if self.signaling.channels.get(name) is channel and workers:
                await self.store.write_part(name, workers, channel.local_participants(),
                                            channel.recording or channel.claiming_recording,
                                            channel.locked)

        self._queue(write)

    def _part_workers(self, channel: RoomChannel) -> list[list[Any]]:
        """This node's workers of the room as its part lists them, each with its pipe
        secret: the other nodes' workers key their SRTP with it."""
        states = self.signaling.pool.states
        return [[*states[w].pipe, states[w].pipe_secret] for w in channel.workers
                if states[w].pipe is not None]

    async def claim_recording(self, channel: RoomChannel) -> int | None:
        """Before this node's home worker records a spread room: the live node that
        records it already, or None, this node's part now saying it records (until
        :attr:`~signaling.server.RoomChannel.claiming_recording` is cleared and the part
        written again). The database takes one claim of a room at a time."""
        return await self.store.claim_recording(channel.name, self._part_workers(channel),
                                                channel.local_participants(), channel.locked)

    def piped(self, channel: RoomChannel, to: Sequence[Any], origin: Sequence[Any],
              producers: list[dict[str, Any]]) -> None:
        self._queue(lambda: self.store.write_pipes(channel.name, to, origin, producers))

    def unpiped(self, channel: RoomChannel, participant: str) -> None:
        if channel.spread:
            self._queue(lambda: self.store.drop_owner_pipes(channel.name, participant))

    def pipe_update(self, channel: RoomChannel, producer: str, sharing: bool) -> None:
        if channel.spread:
            self._queue(lambda: self.store.set_pipe_sharing(channel.name, producer, sharing))

    def set_locked(self, channel: RoomChannel, locked: bool) -> None:
        """A host (or the operator) locked or unlocked the room: on every node's part.
        A room of this node alone gets a part now, locked, so that a front another
        participant reaches refuses them too (it reads the lock from the database)."""
        if not channel.spread:
            if locked:
                self.take_part(channel)
            return
        self._queue(lambda: self.store.set_locked(channel.name, locked))

    def command(self, channel: RoomChannel, node_id: int, command: dict[str, Any]) -> None:
        self._queue(lambda: self.store.queue_command(channel.name, node_id, command))

    async def ask(self, channel: RoomChannel, node_id: int, command: dict[str, Any]) -> str:
        """``command`` for that node, which answers, as a command back to this one, how
        it went (:meth:`run_command`: "done", "gone" or "failed"). Raises
        :class:`NotConfirmed` when no answer comes within :data:`ANSWER_TIMEOUT_S`."""
        key = secrets.token_hex(8)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._answers[key] = answer
        try:
            self.command(channel, node_id, {**command, "answer_to": self.store.node_id,
                                            "answer": key})
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise NotConfirmed(f"node {node_id} did not answer {command!r} in room "
                               f"{channel.name} in time") from None
        finally:
            del self._answers[key]

    def emptied(self, channel: RoomChannel, then: Callable[[], Awaitable[None]]) -> None:
        """The room's last participant here left: this node's part goes; ``then`` (let
        an ad-hoc room's placement go) only when no other node has a part left."""
        async def drop() -> None:
            if await self.store.drop_part(channel.name) == 0:
                await then()

        self._queue(drop)

    def remote_owner(self, channel: RoomChannel, participant: str) -> int | None:
        """The node of a participant of another node's part, if it is one."""
        for node_id, listed in channel.remote_listed.items():
            if any(p.get("id") == participant for p in listed):
                return node_id
        return None

    # Reading the database ------------------------------------------------------------

    async def check(self, rooms: frozenset[str] | None) -> None:
        """Notices named ``rooms`` (None: read every room this front hosts)."""
        channels = self.signaling.channels
        names = [name for name, channel in list(channels.items()) if not channel.echo
                 and (rooms is None or name in rooms)]
        for name in names:
            channel = channels.get(name)
            if channel is not None:
                await self.apply(channel, await self.store.read_room(name))
        for room, command in await self.store.take_commands():
            if command.get("action") == "answer":
                answer = self._answers.get(str(command.get("answer")))
                if answer is not None and not answer.done():  # else: asked too long ago
                    answer.set_result(str(command.get("outcome")))
                continue
            try:
                outcome = await self.run_command(room, command)
            except Exception:
                logger.exception("spread rooms: command %r in room %s failed", command, room)
                outcome = "failed"
            if "answer_to" in command:  # the asking node waits for how it went
                self._answer(room, int(command["answer_to"]), str(command["answer"]), outcome)

    def _answer(self, room: str, node_id: int, key: str, outcome: str) -> None:
        answer = {"action": "answer", "answer": key, "outcome": outcome}
        self._queue(lambda: self.store.queue_command(room, node_id, answer))

    async def apply(self, channel: RoomChannel, view: SpreadView) -> None:
        """Make this node's part of the room match what the database says of the others."""
        signaling, pool = self.signaling, self.signaling.pool
        async with channel.linking:
            if signaling.channels.get(channel.name) is not channel:
                return
            if view.parts and not view.own:
                self.take_part(channel)  # another node took part: ours is written too
            if not view.parts and not channel.remote_pipes and not channel.imported \
                    and not channel.remote_listed:
                return  # a room of this node alone, as most are
            remote_pipes = sorted({(str(h), int(p), str(secret)) for part in view.parts.values()
                                   for h, p, secret in part.workers})
            if remote_pipes != channel.remote_pipes:
                channel.remote_pipes = remote_pipes
                # Before any import: link_room drops what came from pipes it is not told.
                await signaling.link_workers(channel)
            await self._imports(channel, view.pipes, pool)
            listed = {node: part.participants for node, part in view.parts.items()}
            recording = {node for node, part in view.parts.items() if part.recording}
            locked = view.locked if channel.spread else channel.locked
            changed = (listed != channel.remote_listed or locked != channel.locked
                       or recording != channel.remote_recording)
            channel.remote_listed, channel.remote_recording = listed, recording
            channel.locked = locked
        if changed:
            await channel.broadcast_participants()

    async def _imports(self, channel: RoomChannel,
                       pipes: dict[tuple[str, str], tuple[str, str, dict[str, Any]]],
                       pool: Any) -> None:
        signaling = self.signaling
        wanted: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
        for key, value in pipes.items():
            index = pool.index_of_pipe(_pipe_address(key[0]))
            if index is not None and index in channel.workers:
                wanted[key] = value
        owners_now = {(to, owner) for (to, _), (_, owner, _) in wanted.items()}
        gone = {(to, owner) for (to, _), (_, owner, _) in channel.imported.items()
                if (to, owner) not in owners_now}
        for to, owner in sorted(gone):
            index = pool.index_of_pipe(_pipe_address(to))
            if index is not None:
                await signaling.quietly(index, "drop_remote", room=channel.name,
                                        participant=owner)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for key, (origin, _, producer) in wanted.items():
            if channel.imported.get(key) != wanted[key]:
                groups.setdefault((key[0], origin), []).append(producer)
        for (to, origin), producers in groups.items():
            index = pool.index_of_pipe(_pipe_address(to))
            if index is not None:
                await signaling.quietly(index, "import", room=channel.name,
                                        origin=list(_pipe_address(origin)), producers=producers)
        channel.imported = wanted

    async def run_command(self, room: str, command: dict[str, Any]) -> str:
        """What another node's front asked of this one (a host there, a chat there, the
        operator there). Returns how it went: "done"; "gone" when the room or the
        participant has left this node meanwhile (nothing to do); "failed"."""
        from signaling.server import ParticipantConnection, record

        channel = self.signaling.channels.get(room)
        if channel is None:
            return "gone"
        action = command.get("action")
        if action == "chat" and isinstance(command.get("message"), dict):
            await channel.broadcast(command["message"])
            return "done"
        if action == "close":
            if self.close_room is None:
                return "failed"
            await self.close_room(room, str(command.get("reason", "")), str(command.get("code")))
            return "done"
        if action == "record":
            if channel.recording and not command.get("active"):
                await record(self.signaling.pool, channel, self.signaling.config.recordings_dir,
                             False)
            return "done"
        target = channel.connections.get(str(command.get("participant")))
        if target is None or target.participant_id is None:
            return "gone"
        by = str(command.get("by", ""))
        if action == "mute":
            await target.mute(by)
        elif action == "request_unmute":
            await target.send({"type": "unmute_requested", "by": by})
        elif action == "remove":
            await target.end("removed", f"removed by {by}")
        elif action == "set_mode" and command.get("mode") in MODES:
            if isinstance(target, ParticipantConnection):  # a room unit is always mixed
                try:
                    await target.switch_mode(command["mode"])
                except ProtocolError as refused:  # its worker is full: it keeps its mode
                    logger.warning("spread rooms: set_mode of %s in room %s refused: %s",
                                   target.participant_id, room, refused)
                    return "failed"
        else:
            logger.warning("spread rooms: unknown command %r in room %s", command, room)
            return "failed"
        return "done"
