"""The WebSocket endpoint and the participant pages (self-test, call)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import WSMsgType, web

from mcu.room import MediaWorker, NegotiationError, Offer, Participant
from signaling.protocol import (
    MAX_NAME_CHARS,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_message,
    optional_int,
    require_sdp,
    require_str,
)
from signaling.tokens import JoinGrant, TokenError, issue_token, verify_token

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"
HEARTBEAT_S = 5.0  # a vanished client is noticed within two heartbeats


@dataclass
class Admission:
    allowed: bool
    code: str = ""
    message: str = ""


AdmitJoin = Callable[[JoinGrant], Awaitable[Admission]]
RecordSelfTest = Callable[[dict[str, Any]], Awaitable[int]]


async def admit_everyone(grant: JoinGrant) -> Admission:
    return Admission(True)


@dataclass
class SignalingConfig:
    secret: str
    max_message_bytes: int
    selftest_ttl_s: float


class ParticipantConnection:
    """One client WebSocket: protocol state and the participant it joined as."""

    def __init__(self, ws: web.WebSocketResponse, config: SignalingConfig,
                 worker: MediaWorker, admit: AdmitJoin) -> None:
        self.ws = ws
        self.config = config
        self.worker = worker
        self.admit = admit
        self.participant: Participant | None = None
        self.grant: JoinGrant | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
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
            if exc.fatal:
                await self.ws.close()
        except NegotiationError as exc:
            await self.send({"type": "error", "code": exc.code, "message": exc.message})
        except Exception:
            logger.exception("handling a signaling message failed")
            await self.send({"type": "error", "code": "internal_error",
                             "message": "the server could not handle this message"})

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
        admission = await self.admit(grant)
        if not admission.allowed:
            raise ProtocolError(admission.code or "not_admitted", admission.message)
        echo = grant.role == "selftest"
        room = self.worker.room(grant.room, echo=echo)
        if room.echo != echo:
            raise ProtocolError("room_not_found", "no such room for this link")
        participant = room.join(name.strip() or "?", grant.role)
        participant.send_offer = self.send_offer
        self.participant, self.grant = participant, grant
        await self.send({"type": "joined", "v": PROTOCOL_VERSION, "participant": participant.id,
                         "room": grant.room, "role": grant.role, "name": participant.name})
        await self.send_offer(await participant.create_offer())
        room.announce_join(participant)

    async def on_answer(self, message: dict[str, Any]) -> None:
        if self.participant is None:
            raise ProtocolError("not_joined", "join a room before sending an answer")
        sdp = require_sdp(message)
        revision = optional_int(message, "revision")
        await self.participant.accept_answer(sdp, revision)

    async def on_leave(self, message: dict[str, Any]) -> None:
        await self.close()
        await self.ws.close()

    async def close(self) -> None:
        participant, self.participant = self.participant, None
        if participant is not None:
            await participant.room.leave(participant)


def setup_signaling(app: web.Application, config: SignalingConfig, worker: MediaWorker,
                    record_selftest: RecordSelfTest, admit: AdmitJoin = admit_everyone) -> None:
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                                   autoescape=True)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        # aiohttp closes the socket (code 1009) past max_msg_size; below that hard cap we
        # answer an oversized message with an error and keep the connection.
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=config.max_message_bytes * 4)
        await ws.prepare(request)
        connection = ParticipantConnection(ws, config, worker, admit)
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
        endpoint = request.query.get("endpoint", "")[:100] or None
        grant = JoinGrant(room="selftest-" + secrets.token_hex(8), role="selftest",
                          endpoint=endpoint)
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

    app.router.add_get("/ws", websocket)
    app.router.add_get("/selftest", selftest_page)
    app.router.add_post("/selftest/result", selftest_result)
    app.router.add_get("/call/{room}", call_page)
    app.router.add_static("/static/", STATIC_DIR)


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
