"""The WebSocket endpoint and the participant pages (self-test, call)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import WSMsgType, web

from mcu.participant import NegotiationError, Offer, Participant
from mcu.room import MediaWorker, Room
from signaling.operations import LiveRooms, recording_path
from signaling.protocol import (
    MAX_CHAT_CHARS,
    MAX_NAME_CHARS,
    MODES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_message,
    optional_int,
    require_bool,
    require_sdp,
    require_str,
)
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


AdmitJoin = Callable[[JoinGrant], Awaitable[Admission]]
RecordSelfTest = Callable[[dict[str, Any]], Awaitable[int]]


async def admit_everyone(grant: JoinGrant) -> Admission:
    return Admission(True)


class CallLog:
    """Who joined which room when, for how long: the scheduler keeps the records."""

    async def joined(self, room: str, name: str, mode: str) -> Any:
        """Start a record; returns what ``left`` needs to close it."""
        return None

    async def left(self, record: Any) -> None:
        return None


@dataclass
class SignalingConfig:
    secret: str
    max_message_bytes: int
    selftest_ttl_s: float
    recordings_dir: Path


class RoomChannel:
    """The signaling side of one room: every connection in it, for broadcasts."""

    def __init__(self, room: Room, channels: dict[str, RoomChannel]) -> None:
        self.room = room
        self.connections: dict[str, ParticipantConnection] = {}
        self._channels = channels
        self._pending: set[asyncio.Future[None]] = set()
        room.on_event = self.on_room_event

    def on_room_event(self, event: str, details: dict[str, Any]) -> None:
        if event == "speaker":
            self._spawn(self.broadcast({"type": "speaker", **details}))
        elif event == "participants":
            self._spawn(self.broadcast_participants())
        elif event == "left":
            connection = self.connections.pop(details["participant"], None)
            if connection is not None and details["reason"] != "left":
                # The media connection died under a live socket: tell the client.
                self._spawn(connection.end("disconnected", details["reason"]))
            if not self.connections and self._channels.get(self.room.name) is self:
                del self._channels[self.room.name]

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def broadcast(self, message: dict[str, Any], exclude: str | None = None) -> None:
        for participant_id, connection in list(self.connections.items()):
            if participant_id != exclude:
                await connection.send(message)

    async def broadcast_participants(self) -> None:
        await self.broadcast({"type": "participants", "locked": self.room.locked,
                              "recording": self.room.recording,
                              "participants": self.room.describe_participants()})


class ParticipantConnection:
    """One client WebSocket: protocol state and the participant it joined as."""

    def __init__(self, ws: web.WebSocketResponse, config: SignalingConfig, worker: MediaWorker,
                 admit: AdmitJoin, call_log: CallLog, channels: dict[str, RoomChannel]) -> None:
        self.ws = ws
        self.config = config
        self.worker = worker
        self.admit = admit
        self.call_log = call_log
        self.call_record: Any = None
        self.channels = channels
        self.participant: Participant | None = None
        self.channel: RoomChannel | None = None
        self.grant: JoinGrant | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            # If the socket just went away, its read loop ends the participant.
            with contextlib.suppress(ConnectionError):
                await self.ws.send_str(json.dumps(message))

    async def send_offer(self, offer: Offer) -> None:
        await self.send({"type": "offer", "sdp": offer.sdp, "revision": offer.revision,
                         "publish": offer.publish, "tracks": offer.tracks})

    async def handle_text(self, text: str) -> None:
        try:
            message = decode_message(text, self.config.max_message_bytes)
            await getattr(self, "on_" + message["type"])(message)
        except ProtocolError as exc:
            await self.send(exc.as_message())
        except NegotiationError as exc:
            await self.send({"type": "error", "code": exc.code, "message": exc.message})
        except Exception:
            logger.exception("handling a signaling message failed")
            await self.send({"type": "error", "code": "internal_error",
                             "message": "the server could not handle this message"})

    def _joined(self) -> tuple[Participant, RoomChannel]:
        if self.participant is None or self.channel is None:
            raise ProtocolError("not_joined", "join a room first")
        return self.participant, self.channel

    def _host(self) -> tuple[Participant, RoomChannel]:
        participant, channel = self._joined()
        if participant.role != "host":
            raise ProtocolError("forbidden", "only a host can do this")
        return participant, channel

    def _target(self, message: dict[str, Any], channel: RoomChannel) -> ParticipantConnection:
        target_id = require_str(message, "participant", 40)
        target = channel.connections.get(target_id or "")
        if target is None or target.participant is None:
            raise ProtocolError("unknown_participant", f"no participant {target_id!r} in this room")
        return target

    async def on_ping(self, message: dict[str, Any]) -> None:
        await self.send({"type": "pong"})

    async def on_join(self, message: dict[str, Any]) -> None:
        if self.participant is not None:
            raise ProtocolError("already_joined", "this connection has already joined a room")
        version = message.get("v", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise ProtocolError("unsupported_version",
                                f"protocol version {version!r} is not supported; use {PROTOCOL_VERSION}")
        try:
            grant = verify_token(self.config.secret, message.get("token"))
        except TokenError as exc:
            raise ProtocolError(exc.code, exc.message) from None
        name = require_str(message, "name", MAX_NAME_CHARS, required=False) or grant.name or ""
        echo = grant.role == "selftest"
        existing = self.worker.rooms.get(grant.room)
        if existing is not None and existing.echo != echo:
            raise ProtocolError("room_not_found", "no such room for this link")
        if existing is not None and existing.locked and grant.role != "host":
            raise ProtocolError("room_locked", "the room is locked by its host")
        if grant.scheduled:
            admission = await self.admit(grant)
            if not admission.allowed:
                raise ProtocolError(admission.code or "not_admitted", admission.message)
        mode = message.get("mode", "forwarded")
        if mode not in MODES:
            raise ProtocolError("bad_message", f"'mode' must be one of {', '.join(MODES)}")
        room = self.worker.room(grant.room, echo=echo)
        participant = room.join(name.strip() or "?", grant.role, "forwarded" if echo else mode)
        participant.send_offer = self.send_offer
        participant.send_message = self.send
        channel = self.channels.get(room.name)
        if channel is None or channel.room is not room:
            channel = self.channels[room.name] = RoomChannel(room, self.channels)
        channel.connections[participant.id] = self
        self.participant, self.channel, self.grant = participant, channel, grant
        await self.send({"type": "joined", "v": PROTOCOL_VERSION, "participant": participant.id,
                         "room": grant.room, "role": grant.role, "name": participant.name,
                         "locked": room.locked})
        if not echo:
            self.call_record = await self.call_log.joined(grant.room, participant.name, participant.mode)
        # Through renegotiate(): another join may already be offering to this participant.
        await participant.renegotiate()
        room.announce_join(participant)

    async def on_answer(self, message: dict[str, Any]) -> None:
        participant, _ = self._joined()
        sdp = require_sdp(message)
        revision = optional_int(message, "revision")
        await participant.accept_answer(sdp, revision)

    async def on_set_muted(self, message: dict[str, Any]) -> None:
        participant, channel = self._joined()
        for field, source in (("audio", "microphone"), ("video", "camera")):
            if field in message:
                channel.room.set_muted(participant, source, require_bool(message, field))

    async def on_screen(self, message: dict[str, Any]) -> None:
        participant, channel = self._joined()
        channel.room.set_sharing(participant, require_bool(message, "active"))

    async def on_chat(self, message: dict[str, Any]) -> None:
        participant, channel = self._joined()
        text = (require_str(message, "text", MAX_CHAT_CHARS) or "").strip()
        if not text:
            raise ProtocolError("bad_message", "an empty chat message")
        await channel.broadcast({"type": "chat", "from": participant.id, "name": participant.name,
                                 "text": text, "at": time.time()})

    async def on_mute(self, message: dict[str, Any]) -> None:
        host, channel = self._host()
        target = self._target(message, channel)
        assert target.participant is not None
        channel.room.set_muted(target.participant, "microphone", True)
        await target.send({"type": "muted", "by": host.name})

    async def on_request_unmute(self, message: dict[str, Any]) -> None:
        host, channel = self._host()
        target = self._target(message, channel)
        await target.send({"type": "unmute_requested", "by": host.name})

    async def on_remove(self, message: dict[str, Any]) -> None:
        host, channel = self._host()
        target = self._target(message, channel)
        await target.end("removed", f"removed by {host.name}")

    async def on_lock(self, message: dict[str, Any]) -> None:
        _, channel = self._host()
        channel.room.locked = require_bool(message, "locked")
        await channel.broadcast_participants()

    async def on_set_mode(self, message: dict[str, Any]) -> None:
        _, channel = self._host()
        target = self._target(message, channel)
        mode = message.get("mode")
        if mode not in MODES:
            raise ProtocolError("bad_message", f"'mode' must be one of {', '.join(MODES)}")
        assert target.participant is not None
        channel.room.set_mode(target.participant, mode)

    async def on_record(self, message: dict[str, Any]) -> None:
        _, channel = self._host()
        room = channel.room
        if require_bool(message, "active"):
            if not room.recording:
                room.start_recording(recording_path(self.config.recordings_dir, room.name))
        else:
            room.stop_recording()

    async def on_leave(self, message: dict[str, Any]) -> None:
        await self.close()
        await self.ws.close()

    async def end(self, kind: str, reason: str) -> None:
        """Tell the client why it is out of the room, then close its socket."""
        await self.send({"type": kind, "reason": reason})
        await self.close()
        await self.ws.close()

    async def close(self) -> None:
        participant, self.participant = self.participant, None
        if participant is not None:
            await participant.room.leave(participant)
            if not participant.room.echo:
                await self.call_log.left(self.call_record)


def setup_signaling(app: web.Application, config: SignalingConfig, worker: MediaWorker,
                    record_selftest: RecordSelfTest, admit: AdmitJoin = admit_everyone,
                    call_log: CallLog | None = None) -> LiveRooms:
    """Add the participant endpoints to ``app``; return the operator's view of live rooms."""
    channels: dict[str, RoomChannel] = {}
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                                   autoescape=True)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        # aiohttp closes the socket (code 1009) past max_msg_size; below that hard cap we
        # answer an oversized message with an error and keep the connection.
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=config.max_message_bytes * 4)
        await ws.prepare(request)
        connection = ParticipantConnection(ws, config, worker, admit, call_log or CallLog(), channels)
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
            await connection.close()
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
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _json_error(400, "bad_json", "the body is not valid JSON")
        if not isinstance(body, dict):
            return _json_error(400, "bad_message", "the body must be a JSON object")
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
        clean_figures = {str(k)[:40]: (float(v) if isinstance(v, int | float) else None)
                         for k, v in list(figures.items())[:20]}
        result_id = await record_selftest({
            "passed": passed, "problems": [str(p)[:200] for p in problems[:20]],
            "figures": clean_figures, "endpoint_serial": grant.endpoint,
            "user_agent": request.headers.get("User-Agent", ""),
        })
        return web.json_response({"id": result_id, "passed": passed}, status=201)

    async def call_page(request: web.Request) -> web.Response:
        return render("call.html", room=request.match_info["room"])

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
    app.router.add_static("/static/", STATIC_DIR)
    return LiveRooms(worker, channels, config.recordings_dir)


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
