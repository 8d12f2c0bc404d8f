"""The WebSocket endpoint and the participant pages (self-test, call)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import WSCloseCode, WSMsgType, web

from mcu import codecs
from mcu.channel import ChannelError
from mcu.mixer.recorder import Recorder
from mcu.pool import WorkerPool
from signaling.protocol import (
    MAX_CHAT_CHARS,
    MAX_NAME_CHARS,
    MAX_PARTICIPANT_ID_CHARS,
    MODES,
    PROTOCOL_VERSION,
    RESUME_SECRET_CHARS,
    ProtocolError,
    decode_message,
    is_text,
    optional_int,
    optional_str_list,
    require_bool,
    require_sdp,
    require_str,
    require_tiles,
)
from signaling.rate_limits import RateLimits, address_key, token_key
from signaling.selftest_calls import SelfTestCalls, server_problems
from signaling.spread import SpreadRooms
from signaling.tokens import JoinGrant, TokenError, issue_token, verify_token

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"
HEARTBEAT_S = 8.0  # a vanished client is noticed within 12 s; a busy one has 4 s to answer


@dataclass
class Admission:
    allowed: bool
    code: str = ""
    message: str = ""
    worker: int | None = None  # the scheduler's choice among this node's workers
    priority: bool = False  # IZS: never refused for load
    redirect: str | None = None  # the room lives on another node: that node's front
    spread: bool = False  # the room lives on another node too: this node takes part of it
    # More fields of a refusal's error message (room_not_open: opens_at), for the page's
    # own text in its language: the message is English prose.
    details: dict[str, Any] = field(default_factory=dict)


# (grant, unit kind): for every join but a self-test's; scheduled links are admitted by
# the booking rules, and every room is placed (on another node: a redirect).
AdmitJoin = Callable[[JoinGrant, str], Awaitable[Admission]]
RoomEmptied = Callable[[str], Awaitable[None]]
RecordSelfTest = Callable[[dict[str, Any]], Awaitable[int]]
Fronts = Callable[[], Awaitable[list[str]]]  # public URLs of the live fronts, own first


async def this_front_only() -> list[str]:
    return []


async def nothing_to_do(room: str) -> None:
    return None


async def admit_everyone(grant: JoinGrant, kind: str) -> Admission:
    return Admission(True)


class CallLog:
    """Who joined which room when, for how long: the scheduler keeps the records."""

    async def joined(self, room: str, name: str, mode: str, worker: int) -> Any:
        """Start a record; returns what ``left`` needs to close it."""
        return None

    async def left(self, record: Any) -> None:
        return None

    async def changed_mode(self, record: Any, mode: str) -> None:
        """The participant of ``record`` was switched to ``mode`` (mixed or forwarded)."""
        return None


@dataclass
class SignalingConfig:
    secret: str
    max_message_bytes: int
    selftest_ttl_s: float
    recordings_dir: Path
    units: Callable[[str], int] = lambda mode: 1  # what a participant of a mode costs
    # The page's ICE servers, by participant id: TURN with credentials of its own
    # (signaling/turn.py); none by default.
    ice_servers: Callable[[str], list[dict[str, Any]]] = lambda participant: []
    # A join holds media ports until it connects: it has this long to answer and connect,
    # and a client IP and the front as a whole may hold only so many such joins at once.
    answer_timeout_s: float = 20.0
    max_pending_joins_per_ip: int = 30
    max_pending_joins: int = 300
    # Each connection's outgoing messages: at most this many waiting, each taken by the
    # client within the deadline, or the connection is dropped (it stopped reading).
    send_queue_messages: int = 256
    send_timeout_s: float = 10.0
    # How often a client may do things (signaling/rate_limits.py, ``limits`` rate strings):
    # joins per client IP and per link (token), signaling messages per connection, and
    # self-test pages and results per client IP and per self-test link.
    join_rate_per_ip: str = "120/minute"
    join_rate_per_link: str = "600/minute"
    message_rate: str = "20/second; 600/minute"
    selftest_rate_per_ip: str = "30/minute"
    selftest_rate_per_link: str = "6/minute"
    # A participant whose socket is lost stays in the room this long, for its page to come
    # back on a new socket ("resume") and restart ICE; 0: a lost socket is a leave.
    resume_grace_s: float = 30.0
    # A room's forwarding video codec (mcu/codecs.py): "vp8", "h264", or "auto" (its
    # first participant's preference).
    video_codec: str = "auto"


class RoomChannel:
    """One room as the front sees it: every connection in it, on whichever worker.

    Room-wide state lives here (the lock, the merged participant list), so a room whose
    participants sit on several workers behaves as one room. The first worker in
    :attr:`workers` is the room's home: its speaker and recording count.
    """

    def __init__(self, name: str, echo: bool, directory: Signaling) -> None:
        self.name = name
        self.echo = echo
        self.locked = False
        self.recording = False
        self.workers: list[int] = []
        # participant -> worker, from placement until the worker has joined them: a
        # second join meanwhile goes to the same worker instead of splitting the room.
        self.placing: dict[str, int] = {}
        self.linking = asyncio.Lock()  # one relink at a time, each from the current workers
        self.connections: dict[str, ParticipantConnection] = {}
        self.listed: dict[int, list[dict[str, Any]]] = {}  # worker -> its participants
        self.created_at = time.time()
        self.video_codec: str | None = None  # chosen at the first join, kept till it empties
        # Spread over nodes (signaling/spread.py): this node has a part of the room in the
        # database; the other nodes' workers' pipes, participants, recording, and what
        # their workers pipe to ours, as last read.
        self.spread = False
        self.remote_pipes: list[tuple[str, int, str]] = []  # with each one's pipe secret
        self.remote_listed: dict[int, list[dict[str, Any]]] = {}  # node -> its participants
        self.remote_recording: set[int] = set()  # nodes whose part records
        # This node has claimed the room's recording and its home worker is starting it.
        self.claiming_recording = False
        self.imported: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
        self._directory = directory

    @property
    def home(self) -> int | None:
        return self.workers[0] if self.workers else None

    def placed_workers(self) -> list[int]:
        """The room's workers, then those its joins in progress were placed on."""
        return list(dict.fromkeys([*self.workers, *self.placing.values()]))

    def add(self, connection: ParticipantConnection, worker: int) -> None:
        self.connections[connection.participant_id or ""] = connection
        if worker not in self.workers:
            self.workers.append(worker)
            if len(self.workers) > 1 or self.remote_pipes:
                self._directory.relink(self)

    def remove(self, participant_id: str) -> None:
        self.connections.pop(participant_id, None)
        used = {c.worker for c in self.connections.values()}
        spanned = len(self.workers) > 1
        self.workers = [w for w in self.workers if w in used]
        self.listed = {w: p for w, p in self.listed.items() if w in used}
        if spanned or (self.remote_pipes and self.workers):
            self._directory.relink(self)
        if not self.connections and not self.placing \
                and self._directory.channels.get(self.name) is self:
            del self._directory.channels[self.name]
            if not self.echo:
                self._directory.room_emptied(self)

    def local_participants(self) -> list[dict[str, Any]]:
        """This node's part of the participant list (what another node's front reads)."""
        return [p for worker in self.workers for p in self.listed.get(worker, [])]

    def describe_participants(self) -> list[dict[str, Any]]:
        return self.local_participants() + [p for node in sorted(self.remote_listed)
                                            for p in self.remote_listed[node]]

    async def broadcast(self, message: dict[str, Any], exclude: str | None = None) -> None:
        # Queued on each connection, never awaited: a client that stopped reading is
        # dropped by its own writer (ParticipantConnection.post) and holds nobody up.
        text = json.dumps(message)
        for participant_id, connection in list(self.connections.items()):
            if participant_id != exclude:
                connection.post(text)

    def participants_message(self) -> dict[str, Any]:
        return {"type": "participants", "locked": self.locked,
                "recording": self.recording or bool(self.remote_recording),
                "participants": self.describe_participants()}

    async def broadcast_participants(self) -> None:
        await self.broadcast(self.participants_message())


class Signaling:
    """The front's signaling state: live rooms and connections, and the media workers'
    events routed to them."""

    def __init__(self, config: SignalingConfig, pool: WorkerPool, admit: AdmitJoin,
                 call_log: CallLog, fronts: Fronts = this_front_only,
                 on_room_emptied: RoomEmptied = nothing_to_do) -> None:
        self.config = config
        self.pool = pool
        self.admit = admit
        self.call_log = call_log
        self.fronts = fronts
        self.on_room_emptied = on_room_emptied
        self.channels: dict[str, RoomChannel] = {}
        self.spread: SpreadRooms | None = None  # several nodes: rooms spread over them
        self.connections: dict[str, ParticipantConnection] = {}  # participant id -> its socket
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)  # ids stay unique across restarts of the front
        self._pending: set[asyncio.Future[None]] = set()
        self.selftests = SelfTestCalls(self)
        # Keys pressed on room units keying in a PIN (signaling/sip/units.py), by worker.
        self.on_unit_key: Callable[[int, str, str], None] | None = None
        # The connections of joins that hold media ports and have not connected yet; when
        # each is timed out at the latest tells a refused join when to come back
        # (ParticipantConnection._pending_retry_after).
        self.pending_connections: set[ParticipantConnection] = set()
        # For /metrics: joins refused for too many pending, joins timed out unanswered,
        # connections dropped because they stopped reading.
        self.counters = {"joins_refused_pending": 0, "answer_timeouts": 0,
                         "signaling_dropped": 0}
        self.rate_limits = RateLimits({
            "join_per_ip": config.join_rate_per_ip, "join_per_link": config.join_rate_per_link,
            "message": config.message_rate, "selftest_per_ip": config.selftest_rate_per_ip,
            "selftest_per_link": config.selftest_rate_per_link})

    def room_emptied(self, channel: RoomChannel) -> None:
        """The last participant of a room on this front left (an ad-hoc room's
        placement can be let go, once no other node has a part of it)."""
        if self.spread is not None and channel.spread:
            self.spread.emptied(channel, lambda: self.on_room_emptied(channel.name))
        else:
            self._spawn(self.on_room_emptied(channel.name))

    def new_participant_id(self) -> str:
        return f"p{self._prefix}{next(self._ids)}"

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def set_locked(self, channel: RoomChannel, locked: bool) -> None:
        """A host or the operator locks the room (or opens it again), room-wide."""
        channel.locked = locked
        if self.spread is not None:
            self.spread.set_locked(channel, locked)  # the room's parts on other nodes too
        await channel.broadcast_participants()

    async def set_recording(self, channel: RoomChannel, active: bool) -> None:
        """A host or the operator starts or stops the room's recording, room-wide."""
        spread = self.spread
        if spread is not None and channel.remote_recording:
            # Another node's home worker records the room already (every track reaches
            # it): one recording per room. Stopping stops it there.
            if not active:
                for node in channel.remote_recording:
                    spread.command(channel, node, {"action": "record", "active": False})
                if channel.recording:
                    await record(self.pool, channel, self.config.recordings_dir, False)
            return
        if active and spread is not None and channel.spread:
            # What this node last read may be old: Record pressed on another node at the
            # same time would start a second recording there. The database decides.
            channel.claiming_recording = True
            try:
                if await spread.claim_recording(channel) is not None:
                    return  # another node's worker records it: the room's recording
                await record(self.pool, channel, self.config.recordings_dir, True)
                channel.recording = True  # so this node's part goes on saying so
            finally:
                channel.claiming_recording = False
                spread.publish_part(channel)  # recording, or a failed start lets it go
            return
        await record(self.pool, channel, self.config.recordings_dir, active)

    def _elsewhere_node(self, channel: RoomChannel, participant: str) -> int | None:
        """The other node whose part of the room has ``participant``, if one has."""
        if self.spread is None or participant in channel.connections:
            return None
        return self.spread.remote_owner(channel, participant)

    def moderate_elsewhere(self, channel: RoomChannel, participant: str,
                           command: dict[str, Any], by: str) -> bool:
        """A host's moderation (``command``: mute, remove...) of a participant on another
        node's part of the room: asked of that node's front, which does it as for its own
        host (signaling/spread.py: ``run_command``); the host sees it done in the
        participant list. False: the participant is not on another node's part (it is
        here, or in no part at all)."""
        node = self._elsewhere_node(channel, participant)
        if node is None:
            return False
        assert self.spread is not None
        self.spread.command(channel, node, {**command, "participant": participant, "by": by})
        return True

    async def moderate_elsewhere_confirmed(self, channel: RoomChannel, participant: str,
                                           command: dict[str, Any], by: str) -> bool:
        """The operator's moderation, as :meth:`moderate_elsewhere`, but returns (True)
        only once that node has done it, so the operator is told what happened: raises
        LookupError when the participant has left that node meanwhile, ChannelError when
        it failed there, :class:`~signaling.spread.NotConfirmed` when that node did not
        answer in time (paused, cut off, dead)."""
        node = self._elsewhere_node(channel, participant)
        if node is None:
            return False
        assert self.spread is not None
        outcome = await self.spread.ask(channel, node, {**command, "participant": participant,
                                                        "by": by})
        if outcome == "gone":
            raise LookupError(f"no participant {participant} in room {channel.name} on node {node}")
        if outcome != "done":
            raise ChannelError("failed_elsewhere", f"node {node}: {command['action']} {outcome}")
        return True

    @property
    def pending_total(self) -> int:
        """Joins that hold media ports and have not connected yet (/metrics)."""
        return len(self.pending_connections)

    @property
    def pending_joins(self) -> dict[str, int]:
        """The same, per client address."""
        return dict(Counter(connection.peer_ip for connection in self.pending_connections))

    # Rooms across workers ---------------------------------------------------------------

    def relink(self, channel: RoomChannel) -> None:
        """The room's workers changed: tell each which others to pipe its tracks to."""
        self._spawn(self._relink(channel))

    async def _relink(self, channel: RoomChannel) -> None:
        async with channel.linking:
            await self.link_workers(channel)
        if self.spread is not None:
            self.spread.publish_part(channel)  # other nodes pipe to this node's new set

    async def link_workers(self, channel: RoomChannel) -> None:
        """Each of the room's workers pipes to the others, here and on other nodes
        (with ``channel.linking`` held)."""
        workers = list(channel.workers)
        states = self.pool.states
        remote = [list(pipe) for pipe in channel.remote_pipes]
        for worker in workers:
            peers = [list(states[w].pipe) for w in workers
                     if w != worker and states[w].pipe is not None]
            await self.quietly(worker, "link_room", room=channel.name, peers=peers + remote)

    async def quietly(self, worker: int, method: str, **params: Any) -> None:
        # Pipe upkeep: a worker that died meanwhile is relinked when its room is placed again.
        try:
            await self.pool.request(worker, method, **params)
        except (ChannelError, TimeoutError) as exc:
            logger.warning("worker %d: %s for room %s failed: %s", worker, method,
                           params.get("room"), exc)

    def _pipe_event(self, worker: int, event: str, data: dict[str, Any],
                    channel: RoomChannel) -> None:
        if event == "piped":
            target = self.pool.index_of_pipe(data["to"])
            if target is not None and target in channel.workers:
                self._spawn(self.quietly(target, "import", room=channel.name,
                                          origin=data["origin"], producers=data["producers"]))
            elif target is None and self.spread is not None and channel.spread:
                # To another node's worker: its front imports it from the database.
                self.spread.piped(channel, data["to"], data["origin"], data["producers"])
            return
        if self.spread is not None:
            if event == "unpiped":
                self.spread.unpiped(channel, str(data["participant"]))
            elif event == "pipe_update":
                self.spread.pipe_update(channel, str(data["producer"]), bool(data["sharing"]))
        for other in channel.workers:
            if other == worker:
                continue
            if event == "unpiped":
                self._spawn(self.quietly(other, "drop_remote", room=channel.name,
                                          participant=data["participant"]))
            elif event == "pipe_update":
                self._spawn(self.quietly(other, "update_import", room=channel.name,
                                          producer=data["producer"], sharing=data["sharing"]))

    def on_worker_event(self, worker: int, event: str, data: dict[str, Any]) -> None:
        """Events of the media workers (mcu/worker.py), in the order each one sent them."""
        if event == "left" and "media" in data:  # a self-test call ended
            self.selftests.call_ended(data)
        if event == "dtmf":
            if self.on_unit_key is not None:
                self.on_unit_key(worker, str(data.get("participant")), str(data.get("key")))
            return
        if event in ("offer", "message", "left", "connected"):
            connection = self.connections.get(str(data.get("participant")))
            if connection is None or connection.worker != worker:
                return
            if event == "connected":
                connection.media_connected()
            elif event == "offer":
                data.pop("participant")
                self._spawn(connection.send({"type": "offer", **data}))
            elif event == "message":
                self._spawn(connection.send(data["message"]))
            elif data.get("reason") not in ("left", "closed"):
                # The media connection died under a live socket: tell the client.
                self._spawn(connection.end("disconnected", str(data.get("reason"))))
            return
        channel = self.channels.get(str(data.get("room")))
        if channel is None:
            return
        if event in ("piped", "unpiped", "pipe_update"):
            self._pipe_event(worker, event, data, channel)
            return
        if worker not in channel.workers:
            return
        if event == "participants":
            channel.listed[worker] = data.get("participants", [])
            if worker == channel.home:
                channel.recording = bool(data.get("recording"))
            self._spawn(channel.broadcast_participants())
            if self.spread is not None:
                self.spread.publish_part(channel)
        elif event == "recording_failed" and worker == channel.home:
            # The recording stopped under the hosts (a full disk): only they can act on it.
            # Everyone sees it stopped in the participants that follow.
            text = json.dumps({"type": "error", "code": "recording_failed",
                               "message": "the recording stopped: the server could not write it "
                                          f"({data.get('reason')})"})
            for connection in list(channel.connections.values()):
                if connection.role == "host":
                    connection.post(text)
        elif event == "speaker" and worker == channel.home:
            self._spawn(channel.broadcast({"type": "speaker", "active": data.get("active"),
                                           "speaking": data.get("speaking", [])}))

    async def leave(self, participant: str, worker: int, channel: RoomChannel, worker_lost: bool,
                    call_record: Any) -> None:
        """A member of a room (a page's connection, a unit's SIP call) is out: its place
        on the worker, in the room's list and in the call records goes."""
        self.connections.pop(participant, None)
        self.pool.release(worker, participant)
        channel.remove(participant)
        if not worker_lost:
            with contextlib.suppress(ChannelError, TimeoutError):
                await self.pool.request(worker, "leave", participant=participant)
        if not channel.echo:
            await self.call_log.left(call_record)

    def on_worker_lost(self, worker: int) -> None:
        """A worker died: its participants join again (their pages do so by themselves),
        and the recordings it was writing are finished here."""
        for channel in self.channels.values():
            if channel.home == worker and channel.recording:
                channel.recording = False
                self._spawn(finish_recording(self.config.recordings_dir / channel.name))
        for connection in [c for c in self.connections.values() if c.worker == worker]:
            connection.worker_lost = True
            self._spawn(connection.end("disconnected", "media_worker_restarted"))


class ParticipantConnection:
    """One client WebSocket: protocol state and the participant it joined as.

    Outgoing messages go through a bounded queue that one writer task empties, so no
    sender ever waits for this client; a client that stops reading (its queue fills, or
    one message takes longer than ``send_timeout_s``) is dropped as if it had left.
    """

    def __init__(self, ws: web.WebSocketResponse, signaling: Signaling, peer_ip: str = "",
                 transport: asyncio.BaseTransport | None = None) -> None:
        self.ws = ws
        self.signaling = signaling
        self.peer_ip = peer_ip  # the client (an IPv6 one as its /64): what per-address limits count
        self._transport = transport
        self._outbox: asyncio.Queue[str] = asyncio.Queue(signaling.config.send_queue_messages)
        self._writer = asyncio.ensure_future(self._write())
        self.dropped = False
        self.pending = False  # holds one of the pending joins of its IP (until connected)
        self.pending_until = 0.0  # loop time by which the pending join is timed out at the latest
        self.rate_key = secrets.token_hex(8)  # this connection, for its message rate
        self._answer_deadline: asyncio.TimerHandle | None = None
        self.config = signaling.config
        self.pool = signaling.pool
        self.call_record: Any = None
        self.participant_id: str | None = None
        self.worker: int | None = None
        self.worker_lost = False
        self.channel: RoomChannel | None = None
        self.grant: JoinGrant | None = None
        self.name = ""
        self.role = ""
        self.priority = False  # admitted as IZS: never refused for load
        # What lets this participant's page take it over from a new socket ("resume"):
        # given once, with "joined", to this client only.
        self.resume_secret: str | None = None
        self._resume_deadline: asyncio.TimerHandle | None = None

    async def send(self, message: dict[str, Any]) -> None:
        """Queue a message for the client (returns at once; see :meth:`post`)."""
        self.post(json.dumps(message))

    def post(self, text: str) -> None:
        """Queue an encoded message; a client whose queue is full is dropped."""
        if self.dropped or self.ws.closed:
            return  # if the socket just went away, its read loop ends the participant
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.drop("send_queue_full")

    async def _write(self) -> None:
        timeout = self.config.send_timeout_s
        while True:
            text = await self._outbox.get()
            try:
                if not self.ws.closed:
                    await asyncio.wait_for(self.ws.send_str(text), timeout)
            except TimeoutError:
                self.drop("send_timeout")
                return
            except (ConnectionError, RuntimeError):
                pass  # closing: its read loop ends the participant
            finally:
                self._outbox.task_done()

    async def flush(self) -> None:
        """Wait until every queued message has been written (or the client is dropped)."""
        waiting = asyncio.ensure_future(self._outbox.join())
        try:
            await asyncio.wait([waiting, self._writer], timeout=self.config.send_timeout_s * 2,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()

    def drop(self, reason: str) -> None:
        """The client stopped reading: cut its socket and end its participant like a leave."""
        if self.dropped:
            return
        self.dropped = True
        self.signaling.counters["signaling_dropped"] += 1
        logger.info("dropping signaling connection of %s (%s): %s", self.participant_id,
                    self.peer_ip, reason)
        if self._writer is not asyncio.current_task():
            self._writer.cancel()
        if self._transport is not None:
            self._transport.abort()  # a close handshake would wait for the client too
        self.signaling._spawn(self.close())

    async def stop(self) -> None:
        """The socket is gone: stop the writer."""
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    async def _close_socket(self) -> None:
        """What was queued goes out first, then the socket closes."""
        await self.flush()
        if self.dropped:
            return
        await self.ws.close()

    # Joins that hold media ports but have not connected ---------------------------------

    def _claim_pending(self) -> None:
        signaling, config = self.signaling, self.config
        from_here = sum(1 for c in signaling.pending_connections if c.peer_ip == self.peer_ip)
        if from_here >= config.max_pending_joins_per_ip:
            signaling.counters["joins_refused_pending"] += 1
            raise ProtocolError("too_many_pending_joins",
                                "too many joins from this address have not connected yet; "
                                "try again when they have",
                                retry_after=self._pending_retry_after(self.peer_ip))
        if signaling.pending_total >= config.max_pending_joins:
            signaling.counters["joins_refused_pending"] += 1
            raise ProtocolError("too_many_pending_joins",
                                "too many joins are connecting right now; try again shortly",
                                retry_after=self._pending_retry_after(None))
        self.pending = True
        # Not joined yet: its answer deadline starts when it is (``_join``), later still.
        self.pending_until = asyncio.get_running_loop().time() + config.answer_timeout_s
        signaling.pending_connections.add(self)

    def _pending_retry_after(self, peer_ip: str | None) -> float:
        """In how many seconds (at least 1) a join refused for too many pending ones
        finds a place at the latest: when the first of those holding the cap (this
        address's joins, or with None the front's) is timed out, if none connects or
        leaves before. The call page waits that long before it joins again, as for
        ``rate_limited``, and does not count the refusal among its attempts; without it,
        the page came back after 1, 2, 4, 8 s, refused each time while the joins that
        filled the cap waited out their answer timeout, and counted each refusal as a
        failed attempt."""
        now = asyncio.get_running_loop().time()
        first = min((c.pending_until for c in self.signaling.pending_connections
                     if peer_ip is None or c.peer_ip == peer_ip),
                    default=now + self.config.answer_timeout_s)
        return math.ceil(max(1.0, first - now) * 10) / 10  # rounded up: not before then

    def _release_pending(self) -> None:
        if self._answer_deadline is not None:
            self._answer_deadline.cancel()
            self._answer_deadline = None
        if not self.pending:
            return
        self.pending = False
        self.signaling.pending_connections.discard(self)

    def media_connected(self) -> None:
        """The participant's media connection is up: its join no longer counts as pending."""
        self._release_pending()

    def _answer_overdue(self) -> None:
        self._answer_deadline = None
        if self.pending and self.participant_id is not None:
            self.signaling._spawn(self._time_out())

    async def _time_out(self) -> None:
        self.signaling.counters["answer_timeouts"] += 1
        await self.send({"type": "error", "code": "answer_timeout",
                         "message": f"the offer was not answered and connected within "
                                    f"{self.config.answer_timeout_s:g} s"})
        await self.close()  # the media ports are freed here
        await self._close_socket()

    async def handle_text(self, text: str) -> None:
        try:
            self._within_rate("message", self.rate_key, "messages on this connection")
            message = decode_message(text, self.config.max_message_bytes)
            await getattr(self, "on_" + message["type"])(message)
        except ProtocolError as exc:
            await self.send(exc.as_message())
        except ChannelError as exc:  # the worker refused (bad SDP, ...) or is gone
            await self.send({"type": "error", "code": exc.code, "message": exc.message})
        except Exception:
            logger.exception("handling a signaling message failed")
            await self.send({"type": "error", "code": "internal_error",
                             "message": "the server could not handle this message"})

    def _within_rate(self, action: str, key: str, what: str) -> None:
        retry_after = self.signaling.rate_limits.hit(action, key)
        if retry_after is not None:
            raise ProtocolError("rate_limited", f"too many {what}; try again in "
                                f"{retry_after:.0f} s", retry_after=round(retry_after, 1))

    async def request(self, method: str, **params: Any) -> Any:
        assert self.worker is not None
        return await self.pool.request(self.worker, method, **params)

    def _joined(self) -> tuple[str, RoomChannel]:
        if self.participant_id is None or self.channel is None:
            raise ProtocolError("not_joined", "join a room first")
        return self.participant_id, self.channel

    def _host(self) -> RoomChannel:
        _, channel = self._joined()
        if self.role != "host":
            raise ProtocolError("forbidden", "only a host can do this")
        return channel

    def _target(self, message: dict[str, Any], channel: RoomChannel) -> ParticipantConnection:
        target_id = require_str(message, "participant", 40)
        target = channel.connections.get(target_id or "")
        if target is None or target.participant_id is None:
            raise ProtocolError("unknown_participant", f"no participant {target_id!r} in this room")
        return target

    def _elsewhere(self, message: dict[str, Any], channel: RoomChannel,
                   command: dict[str, Any]) -> bool:
        """A host's moderation of a participant on another node's part of the room (see
        :meth:`Signaling.moderate_elsewhere`). False: the target is not elsewhere."""
        target_id = require_str(message, "participant", 40) or ""
        return self.signaling.moderate_elsewhere(channel, target_id, command, self.name)

    async def on_ping(self, message: dict[str, Any]) -> None:
        await self.send({"type": "pong"})

    def _check_first_message(self, message: dict[str, Any]) -> None:
        """``join`` and ``resume``: the first message of a socket, in our version."""
        if self.participant_id is not None:
            raise ProtocolError("already_joined", "this connection has already joined a room")
        version = message.get("v", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise ProtocolError("unsupported_version",
                                f"protocol version {version!r} is not supported; use {PROTOCOL_VERSION}")

    async def on_join(self, message: dict[str, Any]) -> None:
        self._check_first_message(message)
        # Before the token is checked, so guessing tokens is as slow as joining.
        self._within_rate("join_per_ip", self.peer_ip, "joins from this address")
        try:
            grant = verify_token(self.config.secret, message.get("token"))
        except TokenError as exc:
            raise ProtocolError(exc.code, exc.message) from None
        self._within_rate("join_per_link", token_key(message["token"]), "joins with this link")
        self._claim_pending()
        try:
            await self._join(message, grant)
        except BaseException:
            if self.participant_id is None:
                self._release_pending()
            raise
        if self.participant_id is None:  # redirected elsewhere
            self._release_pending()

    async def _join(self, message: dict[str, Any], grant: JoinGrant) -> None:
        name = (require_str(message, "name", MAX_NAME_CHARS, required=False) or grant.name
                or "").strip() or "?"
        # The mode first: admission counts what this participant really costs.
        mode = message.get("mode", "forwarded")
        if mode not in MODES:
            raise ProtocolError("bad_message", f"'mode' must be one of {', '.join(MODES)}")
        video_codecs = codecs.supported_codecs(optional_str_list(message, "video_codecs"))
        echo = grant.role == "selftest"
        if echo:
            mode = "forwarded"
        signaling = self.signaling
        existing = signaling.channels.get(grant.room)
        if existing is not None and existing.echo != echo:
            raise ProtocolError("room_not_found", "no such room for this link")
        self._refuse_if_locked(existing, grant)
        admission = Admission(True)
        if not echo:  # the scheduler admits scheduled links and places every room
            admission = await signaling.admit(grant, "mixed" if mode == "mixed" else "hd")
            if not admission.allowed:
                raise ProtocolError(admission.code or "not_admitted", admission.message,
                                    **admission.details)
            if admission.redirect is not None:
                # The room lives on another node: the page joins there, same token.
                await self.send({"type": "redirect", "front": admission.redirect,
                                 "reason": "room_on_another_node"})
                await self._close_socket()
                return
        channel = signaling.channels.get(grant.room)  # again: admission took a while
        # The host may have locked the room meanwhile. Nothing is held yet to let go of:
        # the pending claim goes in on_join, and the room admission opened is the host's.
        self._refuse_if_locked(channel, grant)
        if channel is None:
            channel = signaling.channels[grant.room] = RoomChannel(grant.room, echo, signaling)
        if channel.video_codec is None:  # the room's first join (an empty room's channel goes)
            channel.video_codec = codecs.room_codec(self.config.video_codec, video_codecs)
        units = self.config.units(mode)
        mixed_room = grant.room if mode == "mixed" else None  # its composite, once a worker
        worker = self.pool.place(channel.placed_workers(), units, admission.worker,
                                 admission.priority, mixed_room)
        if worker is None:
            raise ProtocolError("capacity_full",
                                "every media worker is full; try again in a few minutes")
        participant_id = signaling.new_participant_id()
        self.pool.reserve(worker, participant_id, units, mixed_room)
        channel.placing[participant_id] = worker
        try:
            await self.pool.request(worker, "join", room=grant.room, participant=participant_id,
                                    name=name, role=grant.role, mode=mode, echo=echo,
                                    video_codec=channel.video_codec, video_codecs=video_codecs)
            if channel.locked and grant.role != "host":
                # Locked while the worker took the participant in: out again before
                # anyone is told it joined (its place and charge go below).
                with contextlib.suppress(ChannelError, TimeoutError):
                    await self.pool.request(worker, "leave", participant=participant_id)
                self._refuse_if_locked(channel, grant)
        except BaseException:
            self.pool.release(worker, participant_id)
            del channel.placing[participant_id]
            if not channel.connections and not channel.placing \
                    and signaling.channels.get(grant.room) is channel:
                del signaling.channels[grant.room]
            raise
        del channel.placing[participant_id]
        self.participant_id, self.worker, self.channel, self.grant = \
            participant_id, worker, channel, grant
        self.name, self.role, self.priority = name, grant.role, admission.priority
        signaling.connections[participant_id] = self
        channel.add(self, worker)
        if admission.spread and signaling.spread is not None and not channel.spread:
            signaling.spread.take_part(channel)
        # Until it has answered and connected, the participant holds media ports.
        loop = asyncio.get_running_loop()
        self.pending_until = loop.time() + self.config.answer_timeout_s
        self._answer_deadline = loop.call_later(self.config.answer_timeout_s, self._answer_overdue)
        self.resume_secret = secrets.token_urlsafe(32)
        await self.send({"type": "joined", **await self._joined_fields()})
        if not echo:
            record = await signaling.call_log.joined(grant.room, name, mode, worker)
            if signaling.connections.get(participant_id) is not self:
                # It left while its record was written (its worker died, it was removed):
                # its leave found no record to close, so the record is closed here.
                await signaling.call_log.left(record)
                return
            self.call_record = record
        await self.request("negotiate", participant=participant_id)

    @staticmethod
    def _refuse_if_locked(channel: RoomChannel | None, grant: JoinGrant) -> None:
        if channel is not None and channel.locked and grant.role != "host":
            raise ProtocolError("room_locked", "the room is locked by its host")

    async def _joined_fields(self) -> dict[str, Any]:
        """What "joined" and "resumed" tell the client about its place in the room."""
        participant, channel = self._joined()
        assert self.grant is not None
        return {"v": PROTOCOL_VERSION, "participant": participant, "room": self.grant.room,
                "role": self.role, "name": self.name, "locked": channel.locked,
                "fronts": await self.signaling.fronts(), "resume": self.resume_secret,
                "ice_servers": self.config.ice_servers(participant)}

    # Coming back after a lost network ---------------------------------------------------

    async def socket_closed(self, lost: bool) -> None:
        """The socket is gone. If it was ``lost`` (not closed by the client) and the
        participant's media was up, it stays for ``resume_grace_s``: its page may come
        back on a new socket (``on_resume``), as after a few seconds without network.
        Anyone else has left."""
        grace = self.config.resume_grace_s
        if not lost or self.participant_id is None or self.pending or self.dropped or self.worker_lost \
                or self.resume_secret is None or grace <= 0:
            await self.close()
            return
        logger.info("participant %s lost its socket; kept %g s for it to come back",
                    self.participant_id, grace)
        self._resume_deadline = asyncio.get_running_loop().call_later(
            grace, lambda: self.signaling._spawn(self._not_back()))

    async def _not_back(self) -> None:
        self._resume_deadline = None
        if self.participant_id is not None:
            logger.info("participant %s did not come back: it has left", self.participant_id)
            await self.close()

    def _stop_waiting_for_resume(self) -> None:
        if self._resume_deadline is not None:
            self._resume_deadline.cancel()
            self._resume_deadline = None

    async def on_resume(self, message: dict[str, Any]) -> None:
        """Take over a participant whose socket was lost, then restart its ICE."""
        self._check_first_message(message)
        # Counted as a join: guessing a secret is as slow as guessing a token.
        self._within_rate("join_per_ip", self.peer_ip, "joins from this address")
        participant = require_str(message, "participant", MAX_PARTICIPANT_ID_CHARS)
        secret = require_str(message, "resume", RESUME_SECRET_CHARS * 2)
        previous = self.signaling.connections.get(participant or "")
        if previous is None or previous.resume_secret is None \
                or not secrets.compare_digest(previous.resume_secret.encode(), (secret or "").encode()):
            raise ProtocolError("resume_failed",
                                "this participant is no longer in a room here: join again")
        if previous.pending:
            # Its media never connected: there is no path to restart, and taking it over
            # would let go of the join's pending claim and answer deadline (they are the
            # old socket's), so it could hold media ports for ever. A socket lost this
            # early is a leave (socket_closed): the page joins again.
            raise ProtocolError("resume_failed",
                                "this participant's media never connected: join again")
        self._take_over(previous)
        await self.send({"type": "resumed", **await self._joined_fields()})
        assert self.channel is not None
        await self.send(self.channel.participants_message())
        await self.request("restart_ice", participant=self.participant_id)

    def _take_over(self, previous: ParticipantConnection) -> None:
        assert previous.participant_id is not None and previous.channel is not None
        for name in ("participant_id", "worker", "channel", "grant", "name", "role", "priority",
                     "call_record", "resume_secret"):
            setattr(self, name, getattr(previous, name))
        previous.participant_id = previous.resume_secret = None  # its close() is a no-op now
        previous._stop_waiting_for_resume()
        self.signaling.connections[self.participant_id or ""] = self
        previous.channel.connections[self.participant_id or ""] = self
        if not previous.ws.closed and previous._transport is not None:
            previous._transport.abort()  # a half-dead socket the page gave up on

    async def on_restart_ice(self, message: dict[str, Any]) -> None:
        """The page's media path failed while its socket lives: a fresh offer restarts ICE."""
        participant, _ = self._joined()
        # The join's TURN credentials may have expired in a long call (signaling/turn.py):
        # the restart gathers with fresh ones, sent before its offer ("resumed" has its own).
        ice_servers = self.config.ice_servers(participant)
        if ice_servers:
            await self.send({"type": "ice_servers", "ice_servers": ice_servers})
        await self.request("restart_ice", participant=participant)

    async def on_answer(self, message: dict[str, Any]) -> None:
        participant, _ = self._joined()
        sdp = require_sdp(message)
        revision = optional_int(message, "revision")
        await self.request("answer", participant=participant, sdp=sdp, revision=revision)

    async def on_set_muted(self, message: dict[str, Any]) -> None:
        participant, _ = self._joined()
        # Every field is checked before any is applied: a refused message changes nothing.
        changes = [(source, require_bool(message, field))
                   for field, source in (("audio", "microphone"), ("video", "camera"))
                   if field in message]
        if not changes:
            raise ProtocolError("bad_message", "'set_muted' needs a boolean 'audio' or 'video'")
        for source, muted in changes:
            await self.request("set_muted", participant=participant, source=source, muted=muted)

    async def on_screen(self, message: dict[str, Any]) -> None:
        participant, _ = self._joined()
        await self.request("screen", participant=participant, active=require_bool(message, "active"))

    async def on_tiles(self, message: dict[str, Any]) -> None:
        """How tall the page shows each receive slot: simulcast gives each the layer it
        needs (a thumbnail never gets the top one)."""
        participant, _ = self._joined()
        await self.request("tiles", participant=participant, tiles=require_tiles(message))

    async def on_chat(self, message: dict[str, Any]) -> None:
        participant, channel = self._joined()
        text = (require_str(message, "text", MAX_CHAT_CHARS) or "").strip()
        if not text:
            raise ProtocolError("bad_message", "an empty chat message")
        chat = {"type": "chat", "from": participant, "name": self.name, "text": text,
                "at": time.time()}
        await channel.broadcast(chat)
        if self.signaling.spread is not None:
            for node in channel.remote_listed:  # the room's participants on other nodes
                self.signaling.spread.command(channel, node, {"action": "chat", "message": chat})

    async def mute(self, by: str) -> None:
        """A host or the operator stops forwarding this participant's microphone."""
        await self.request("set_muted", participant=self.participant_id, source="microphone",
                           muted=True)
        await self.send({"type": "muted", "by": by})

    async def on_mute(self, message: dict[str, Any]) -> None:
        channel = self._host()
        if not self._elsewhere(message, channel, {"action": "mute"}):
            await self._target(message, channel).mute(self.name)

    async def on_request_unmute(self, message: dict[str, Any]) -> None:
        channel = self._host()
        if self._elsewhere(message, channel, {"action": "request_unmute"}):
            return
        target = self._target(message, channel)
        await target.send({"type": "unmute_requested", "by": self.name})

    async def on_remove(self, message: dict[str, Any]) -> None:
        channel = self._host()
        if self._elsewhere(message, channel, {"action": "remove"}):
            return
        target = self._target(message, channel)
        await target.end("removed", f"removed by {self.name}")

    async def on_lock(self, message: dict[str, Any]) -> None:
        await self.signaling.set_locked(self._host(), require_bool(message, "locked"))

    async def on_set_mode(self, message: dict[str, Any]) -> None:
        channel = self._host()
        mode = message.get("mode")
        if mode not in MODES:
            raise ProtocolError("bad_message", f"'mode' must be one of {', '.join(MODES)}")
        if self._elsewhere(message, channel, {"action": "set_mode", "mode": mode}):
            return
        target = self._target(message, channel)
        if not isinstance(target, ParticipantConnection):
            raise ProtocolError("bad_message", "a room unit is always mixed")
        await target.switch_mode(mode)

    async def switch_mode(self, mode: str) -> None:
        """Switch this participant to ``mode`` on its worker, and in what the worker is
        charged for it (a forwarded participant costs more than a mixed one, a worker's
        first mixed participant of a room its composite too) and in its call record.
        A switch its worker has no room for is refused, as a join would be (IZS never)."""
        participant, channel = self._joined()
        assert self.worker is not None
        before = self.pool.placement(self.worker, participant)
        if not self.pool.change(self.worker, participant, self.config.units(mode),
                                channel.name if mode == "mixed" else None, self.priority):
            raise ProtocolError("capacity_full",
                                "its media worker has no room for that mode now; try again later")
        try:
            await self.request("set_mode", participant=participant, mode=mode)
        except BaseException:
            if self.participant_id == participant:  # still here: charged as before
                self.pool.reserve(self.worker, participant, *before)
            raise
        if not channel.echo:
            await self.signaling.call_log.changed_mode(self.call_record, mode)

    async def on_record(self, message: dict[str, Any]) -> None:
        await self.signaling.set_recording(self._host(), require_bool(message, "active"))

    async def on_leave(self, message: dict[str, Any]) -> None:
        await self.close()
        await self._close_socket()

    async def end(self, kind: str, reason: str, *, code: str | None = None) -> None:
        """Tell the client why it is out of the room, then close its socket; ``code``:
        why, for the page's own text (a room's close: docs/protocol.md, "closed")."""
        await self.send({"type": kind, "reason": reason} if code is None
                        else {"type": kind, "code": code, "reason": reason})
        await self.close()
        await self._close_socket()

    async def close(self) -> None:
        self._release_pending()
        self._stop_waiting_for_resume()
        self.resume_secret = None
        participant, self.participant_id = self.participant_id, None
        if participant is None:
            return
        assert self.worker is not None and self.channel is not None
        await self.signaling.leave(participant, self.worker, self.channel, self.worker_lost,
                                   self.call_record)


def recording_path(recordings_dir: Path, room: str) -> Path:
    """Where a recording of ``room`` starting now is written (one folder per room)."""
    return recordings_dir / room / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.webm"


async def finish_recording(folder: Path) -> None:
    """Finish the recording a dead worker left in ``folder`` (its newest file: a room
    records one at a time): the clusters it wrote, without the cues and duration its
    close would have written, are rewritten into a finished, seekable file in its place."""
    files = sorted(folder.glob("*.webm"), key=lambda f: f.stat().st_mtime) if folder.is_dir() else []
    if not files:
        return
    path = files[-1]
    if path.stat().st_size == 0:  # it died before writing anything: no recording at all
        path.unlink()
        return
    part = path.with_name(path.name + ".part")  # not *.webm: not listed while written
    try:
        await asyncio.to_thread(Recorder.repair, path, part)
        part.replace(path)
        logger.info("recording %s of a lost worker finished", path)
    except Exception:
        # Unreadable from its start (nothing written yet): left as it is.
        logger.exception("could not finish the recording %s of a lost worker", path)
        part.unlink(missing_ok=True)


async def record(pool: WorkerPool, channel: RoomChannel, recordings_dir: Path,
                 active: bool) -> None:
    """Start or stop a room's recording, on its home worker (composite and mix)."""
    if channel.home is None or channel.echo:
        raise LookupError(f"no live room {channel.name}")
    path = str(recording_path(recordings_dir, channel.name)) if active else ""
    await pool.request(channel.home, "record", room=channel.name, active=active, path=path)


def setup_signaling(app: web.Application, config: SignalingConfig, pool: WorkerPool,
                    record_selftest: RecordSelfTest, admit: AdmitJoin = admit_everyone,
                    call_log: CallLog | None = None, fronts: Fronts = this_front_only,
                    on_room_emptied: RoomEmptied = nothing_to_do) -> Signaling:
    """Add the participant endpoints to ``app``; return the front's signaling state (the
    pool's events go to its ``on_worker_event`` and ``on_worker_lost``)."""
    signaling = Signaling(config, pool, admit, call_log or CallLog(), fronts, on_room_emptied)
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                                   autoescape=True)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        # aiohttp closes the socket (code 1009) past max_msg_size; below that hard cap we
        # answer an oversized message with an error and keep the connection.
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=config.max_message_bytes * 4)
        await ws.prepare(request)
        # The client's address: the socket's peer, or what a trusted proxy reported
        # (multipoint/http_security.py hands the request on as the client made it); an
        # IPv6 client counts as its /64.
        connection = ParticipantConnection(ws, signaling, address_key(request.remote or ""),
                                           request.transport)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await connection.handle_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await connection.send({"type": "error", "code": "bad_message",
                                           "message": "binary messages are not part of the protocol"})
                elif msg.type == WSMsgType.ERROR:
                    break
        except Exception:
            logger.exception("signaling connection failed")
        finally:
            # A closing handshake (a tab closed) or a plain end of the stream is a leave;
            # missed heartbeats or a broken connection look like a network that went away.
            await connection.socket_closed(lost=ws.close_code == WSCloseCode.ABNORMAL_CLOSURE)
            await connection.stop()
        return ws

    def render(name: str, **context: Any) -> web.Response:
        return web.Response(text=templates.get_template(name).render(**context),
                            content_type="text/html")

    async def selftest_page(request: web.Request) -> web.Response:
        # A room unit's test link carries a signed token naming the unit (so only links
        # handed out by coordinators record results against a unit); anyone else gets
        # an anonymous self-test of their own.
        endpoint = None
        token = request.query.get("token")
        retry_after = signaling.rate_limits.hit("selftest_per_ip",
                                                address_key(request.remote or ""))
        if retry_after is not None:  # each page is a token, and soon a call
            raise web.HTTPTooManyRequests(
                text=f"too many self-tests from this address; try again in {retry_after:.0f} s",
                headers={"Retry-After": str(round(retry_after))})
        if token:
            try:
                grant = verify_token(config.secret, token)
            except TokenError as exc:
                raise web.HTTPUnauthorized(text=exc.message) from None
            if grant.role != "selftest":
                raise web.HTTPForbidden(text="this is not a self-test link")
            endpoint = grant.endpoint
        else:
            grant = JoinGrant(room="selftest-" + secrets.token_hex(8), role="selftest")
            token = issue_token(config.secret, grant, config.selftest_ttl_s)
        return render("selftest.html", token=token, endpoint=endpoint or "")

    async def selftest_result(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):  # ValueError: JSON, huge ints
            return _json_error(400, "bad_json", "the body is not valid JSON")
        if not is_text(body):
            return _json_error(400, "bad_message", "the body contains a lone surrogate: not text")
        if not isinstance(body, dict):
            return _json_error(400, "bad_message", "the body must be a JSON object")
        for action, key, what in (
                ("selftest_per_ip", address_key(request.remote or ""),
                 "self-test results from this address"),
                ("selftest_per_link", token_key(str(body.get("token"))),
                 "self-test results for this link")):
            retry_after = signaling.rate_limits.hit(action, key)
            if retry_after is not None:
                response = _json_error(429, "rate_limited",
                                       f"too many {what}; try again in {retry_after:.0f} s")
                response.headers["Retry-After"] = str(round(retry_after))
                return response
        try:
            grant = verify_token(config.secret, body.get("token"))
        except TokenError as exc:
            return _json_error(401, exc.code, exc.message)
        if grant.role != "selftest":
            return _json_error(403, "forbidden", "only a self-test link can post a self-test result")
        passed, problems, figures = body.get("passed"), body.get("problems", []), body.get("figures", {})
        if not isinstance(passed, bool) or not isinstance(problems, list) or not isinstance(figures, dict):
            return _json_error(400, "bad_message",
                               "need 'passed' (bool), 'problems' (list), 'figures' (object)")
        # Recorded only for a call the server saw, once per call; a pass needs media both
        # ways by the server's own counts (signaling/selftest_calls.py).
        counts = await signaling.selftests.take(grant.room)
        if counts is None:
            return _json_error(409, "no_selftest_call",
                               "no self-test call of this link to judge: run the test first")
        clean_figures = {str(k)[:40]: (float(v) if isinstance(v, int | float) else None)
                         for k, v in list(figures.items())[:20]}
        clean_figures.update({f"server_{kind}_packets": float(n) for kind, n in counts.items()})
        problems = [str(p)[:200] for p in problems[:20]]
        problems += [p for p in server_problems(counts) if p not in problems]
        passed = passed and not problems
        result_id = await record_selftest({
            "passed": passed, "problems": problems,
            "figures": clean_figures, "endpoint_serial": grant.endpoint,
            "user_agent": request.headers.get("User-Agent", ""),
        })
        return web.json_response({"id": result_id, "passed": passed, "problems": problems},
                                 status=201)

    async def call_page(request: web.Request) -> web.Response:
        # The name the link's token gives the official fills the page's name field (an
        # invitation made with --name): only a valid link's, as the join would take it.
        try:
            name = verify_token(config.secret, request.query.get("token")).name
        except TokenError:
            name = None
        return render("call.html", room=request.match_info["room"], official=name or "")

    async def guide_page(request: web.Request) -> web.Response:
        return render("guide.html")

    def room_recordings(request: web.Request) -> Path:
        """The room's recording folder, for the holder of a host link of that room."""
        room = request.match_info["room"]
        try:
            grant = verify_token(config.secret, request.query.get("token"))
        except TokenError as exc:
            raise web.HTTPUnauthorized(text=exc.message) from None
        if grant.room != room or grant.role != "host":
            raise web.HTTPForbidden(text="only a host link of this room can see its recordings")
        return config.recordings_dir / room

    async def list_recordings(request: web.Request) -> web.Response:
        folder = room_recordings(request)
        files = sorted(folder.glob("*.webm")) if folder.is_dir() else []
        return web.json_response({"room": request.match_info["room"], "recordings": [
            {"file": f.name, "bytes": f.stat().st_size,
             "started": f.stem, "modified": f.stat().st_mtime} for f in files]})

    async def download_recording(request: web.Request) -> web.StreamResponse:
        folder = room_recordings(request)
        name = request.match_info["file"]
        path = folder / name
        if "/" in name or not name.endswith(".webm") or not path.is_file():
            raise web.HTTPNotFound(text="no such recording")
        return web.FileResponse(path, headers={"Content-Type": "video/webm",
                                               "Content-Disposition": f'attachment; filename="{name}"'})

    app.router.add_get("/recordings/{room}", list_recordings)
    app.router.add_get("/recordings/{room}/{file}", download_recording)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/selftest", selftest_page)
    app.router.add_post("/selftest/result", selftest_result)
    app.router.add_get("/call/{room}", call_page)
    app.router.add_get("/guide", guide_page)
    app.router.add_static("/static/", STATIC_DIR)
    return signaling


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
