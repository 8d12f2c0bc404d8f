"""Room units calling in over SIP: each call a member of its room like a page's socket.

A unit dials ``sip:ROOM@multipoint``: ROOM is the room's name, as in its join link (a
booked meeting's ``mtg-…`` name, or a standing bridge's). The call is admitted by the
scheduler as a join of a scheduled link is (the booking must be on, or the bridge
active; IZS rooms are never refused for load), placed on the room's worker, and joins
there as a mixed participant on plain RTP (mcu/unit.py): it hears the room's mix, and
its voice is heard by everyone. It is listed, muted and removed like any participant;
removing it (or its room closing) hangs the call up.

How a refusal reads in SIP (docs/sip.md has the table): no such room 404, not on now
480, locked 403, full 486 (with Retry-After), no codec in common 488 with a Warning
that says which, an SDP we cannot read 400.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any

from mcu.channel import ChannelError
from signaling.rate_limits import address_key
from signaling.sip.message import SipParseError, display_name, uri_of, user_and_host
from signaling.sip.ua import Call, SipAgent
from signaling.tokens import JoinGrant

if TYPE_CHECKING:
    from signaling.server import RoomChannel, Signaling

logger = logging.getLogger(__name__)

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_NAME_CHARS = 64
# The scheduler's refusals (scheduler/media/rooms.py) as SIP statuses.
REFUSALS = {"room_not_open": 404, "booking_cancelled": 404, "bridge_inactive": 480,
            "room_locked": 403, "worker_full": 486, "capacity_full": 486, "no_worker": 503,
            "room_unreachable": 503, "rate_limited": 503}


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UnitMember:
    """A unit's call as its room sees it (what RoomChannel and the operator need of a
    page's connection: a participant id, a worker, and how to mute and end it)."""

    pending = False
    dropped = False
    worker_lost = False

    def __init__(self, units: RoomUnits, call: Call, name: str) -> None:
        self.units = units
        self.signaling = units.signaling
        self.call = call
        self.name = name
        self.role = "guest"
        self.participant_id: str | None = None
        self.worker: int | None = None
        self.channel: RoomChannel | None = None
        self.grant: JoinGrant | None = None
        self.call_record: Any = None
        self.answer = ""  # our SDP answer, for the 200

    def post(self, text: str) -> None:
        return None  # a unit does not speak the participant protocol: the list is not for it

    async def send(self, message: dict[str, Any]) -> None:
        return None

    def media_connected(self) -> None:
        return None

    async def request(self, method: str, **params: Any) -> Any:
        assert self.worker is not None
        return await self.signaling.pool.request(self.worker, method, **params)

    async def mute(self, by: str) -> None:
        await self.request("set_muted", participant=self.participant_id, source="microphone", muted=True)

    async def end(self, kind: str, reason: str) -> None:
        """Removed, the room closed, or its media stopped: hang up, then leave."""
        logger.info("unit %s: ending the call (%s: %s)", self.participant_id, kind, reason)
        await self.close()
        with contextlib.suppress(Exception):
            await self.units.agent.hang_up(self.call, wait=False)

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        participant, self.participant_id = self.participant_id, None
        if participant is None:
            return
        signaling, worker, channel = self.signaling, self.worker, self.channel
        signaling.connections.pop(participant, None)
        assert worker is not None and channel is not None
        signaling.pool.release(worker, participant)
        channel.remove(participant)
        if not self.worker_lost:
            with contextlib.suppress(ChannelError, TimeoutError):
                await signaling.pool.request(worker, "leave", participant=participant)
        await signaling.call_log.left(self.call_record)


class RoomUnits:
    """The SIP side of the front: its :class:`SipAgent` hands calls here."""

    def __init__(self, signaling: Signaling, media_host: str, sip_host: str) -> None:
        self.signaling = signaling
        self.media_host = media_host
        self.agent = SipAgent(self, sip_host, advertised_host=media_host)

    async def invited(self, call: Call) -> tuple[int, str, str]:
        try:
            member = await self._join(call)
        except Refused as exc:
            logger.info("SIP call %s from %s refused: %s %s", call.call_id, call.flow.address,
                        exc.status, exc.reason)
            return exc.status, exc.reason, ""
        call.app = member
        return 200, "OK", member.answer

    async def ended(self, call: Call, by_unit: bool) -> None:
        member = call.app
        if isinstance(member, UnitMember):
            await member.close()

    async def _join(self, call: Call) -> UnitMember:
        signaling = self.signaling
        # Counted as a join from that address: guessing room names is as slow as tokens.
        if signaling.rate_limits.hit("join_per_ip", address_key(call.flow.address[0])) is not None:
            raise Refused(503, "Service Unavailable: too many calls from this address")
        try:
            room, _ = user_and_host(call.invite.uri)
        except SipParseError:
            raise Refused(416, "Unsupported URI Scheme") from None
        if not ROOM_NAME.match(room):
            raise Refused(404, "Not Found: no such room")
        sender = call.invite.get("From")
        name = display_name(sender)
        if not name:
            with contextlib.suppress(SipParseError):
                name = user_and_host(uri_of(sender))[0]
        name = "".join(ch for ch in name if ch.isprintable())[:MAX_NAME_CHARS].strip() or "room unit"
        grant = JoinGrant(room=room, role="guest", name=name, scheduled=True)
        existing = signaling.channels.get(room)
        if existing is not None and existing.echo:
            raise Refused(404, "Not Found: no such room")
        if existing is not None and existing.locked:
            raise Refused(403, "Forbidden: the room is locked by its host")
        admission = await signaling.admit(grant, "mixed")
        if not admission.allowed:
            raise Refused(REFUSALS.get(admission.code, 480), _phrase(admission.message))
        if admission.redirect is not None:
            # The room's media is on another node: that node takes SIP calls too.
            raise Refused(480, "Temporarily Unavailable: the room is on another node; "
                          "call that node's SIP address")
        from signaling.server import RoomChannel

        channel = signaling.channels.get(room)
        if channel is None:
            channel = signaling.channels[room] = RoomChannel(room, False, signaling)
        if channel.video_codec is None:
            channel.video_codec = signaling.config.video_codec if signaling.config.video_codec != "auto" \
                else "vp8"
        units = signaling.config.units("mixed")
        worker = signaling.pool.place(channel.placed_workers(), units, admission.worker, admission.priority)
        if worker is None:
            self._drop_if_empty(channel)
            raise Refused(486, "Busy Here: every media worker is full")
        member = UnitMember(self, call, name)
        participant_id = signaling.new_participant_id()
        signaling.pool.reserve(worker, participant_id, units)
        channel.placing[participant_id] = worker
        try:
            joined = await signaling.pool.request(
                worker, "join_unit", room=room, participant=participant_id, name=name,
                role=grant.role, offer=call.offer, media_host=self.media_host)
        except ChannelError as exc:
            signaling.pool.release(worker, participant_id)
            del channel.placing[participant_id]
            self._drop_if_empty(channel)
            if exc.code == "codec_mismatch":
                raise Refused(488, "Not Acceptable Here: " + _phrase(exc.message)) from None
            if exc.code == "bad_sdp":
                raise Refused(400, "Bad Request: " + _phrase(exc.message)) from None
            raise Refused(500, "Server Internal Error") from None
        except BaseException:
            signaling.pool.release(worker, participant_id)
            channel.placing.pop(participant_id, None)
            self._drop_if_empty(channel)
            raise
        del channel.placing[participant_id]
        member.participant_id, member.worker, member.channel, member.grant = \
            participant_id, worker, channel, grant
        member.answer = joined["answer"]
        signaling.connections[participant_id] = member  # type: ignore[assignment]
        channel.add(member, worker)  # type: ignore[arg-type]
        member.call_record = await signaling.call_log.joined(room, name, "mixed", worker)
        logger.info("SIP call %s: unit %r is %s in room %s", call.call_id, name, participant_id, room)
        return member

    def _drop_if_empty(self, channel: RoomChannel) -> None:
        signaling = self.signaling
        if not channel.connections and not channel.placing \
                and signaling.channels.get(channel.name) is channel:
            del signaling.channels[channel.name]


def _phrase(text: str) -> str:
    """Text fit for a reason phrase: one line, printable."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:120]
