"""Room units calling in over SIP: each call a member of its room like a page's socket.

A unit dials ``sip:ROOM@multipoint``: ROOM is the room's name, as in its join link (a
booked meeting's ``mtg-…`` name, or a standing bridge's). The call is admitted by the
scheduler as a join of a scheduled link is (the booking must be on, or the bridge
active; IZS rooms are never refused for load), placed on the room's worker, and joins
there as a mixed participant on plain RTP (mcu/unit.py): it hears the room's mix, and
its voice is heard by everyone. It is listed, muted and removed like any participant;
removing it (or its room closing) hangs the call up.

A unit may dial a meeting's number instead (``sip:1000042@multipoint``, the number the
booking's page shows): the call is answered and the unit waits outside the room, in
the lobby, until it keys in the meeting's PIN over DTMF (RFC 4733) followed by ``#``;
three wrong PINs, or none within :data:`PIN_TIMEOUT_S`, and we hang up.

How a refusal reads in SIP (docs/sip.md has the table): no such room 404, not on now
480, locked 403, full 486 (with Retry-After), no codec in common 488 with a Warning
that says which, an SDP we cannot read 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcu import codecs
from mcu.channel import ChannelError
from signaling.rate_limits import address_key
from signaling.sip.message import SipParseError, dialable, display_name, uri_of, user_and_host
from signaling.sip.ua import RING_S, Call, SipAgent, sdp_origin
from signaling.tokens import JoinGrant

if TYPE_CHECKING:
    from signaling.server import RoomChannel, Signaling

logger = logging.getLogger(__name__)

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_NAME_CHARS = 64
PIN_TRIES = 3
PIN_TIMEOUT_S = 60.0  # to key in the PIN, all tries together; the unit holds a place meanwhile
# The scheduler's refusals (scheduler/media/rooms.py) as SIP statuses. A meeting
# displaced by an IZS emergency is refused as a cancelled one is: its time is the
# emergency's now, and calling again (as a unit does on 480) would only be refused again.
REFUSALS = {"room_not_open": 404, "meeting_over": 404, "booking_cancelled": 404,
            "booking_displaced": 404, "bridge_inactive": 480, "room_locked": 403,
            "worker_full": 486, "capacity_full": 486,
            "no_worker": 503, "room_unreachable": 503, "rate_limited": 503}


# How a call we made ended, for the operator and a unit's test call.
DIAL_OUTCOMES = {0: "unreachable", 408: "no_answer", 480: "no_answer", 486: "busy", 600: "busy",
                 603: "declined", 403: "declined", 488: "codec_mismatch", 606: "codec_mismatch",
                 404: "unknown_unit"}


@dataclass
class _Place:
    channel: RoomChannel
    worker: int
    participant_id: str
    grant: JoinGrant
    name: str
    # The admission said this node takes part of a room living on another node too:
    # the unit's entry makes this node's part of it, as a page's join does.
    spread: bool = False


@dataclass
class _Lobby:
    """A unit that dialled a meeting's number, keying in its PIN outside the room."""

    member: UnitMember
    place: _Place
    pin: str
    keys: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    admitting: bool = False  # the PIN was right: it is on its way in


# A meeting's room and PIN by its number (scheduler/booking/dial_in.py); None: no such.
DialInLookup = Callable[[str], Awaitable[tuple[str, str] | None]]


class DialFailed(Exception):
    """A call to a unit that did not come about: ``outcome`` says why in a word
    (unreachable, no_answer, busy, declined, codec_mismatch, unknown_unit, refused, failed)."""

    def __init__(self, outcome: str, reason: str, status: int = 0) -> None:
        super().__init__(f"{outcome}: {reason}")
        self.outcome = outcome
        self.reason = reason
        self.status = status


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
        self.lobby: _Lobby | None = None  # keying in the PIN, not in the room yet
        # A unit we called (the operator, a booking): how to call it again should its
        # media worker die under it (a unit that called us calls again itself).
        self.call_again: Callable[[], None] | None = None

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

    async def end(self, kind: str, reason: str, *, code: str | None = None) -> None:
        """Removed, the room closed, or its media stopped: hang up, then leave (``code``
        is the page's: a unit hears nothing of why)."""
        logger.info("unit %s: ending the call (%s: %s)", self.participant_id, kind, reason)
        await self.close()
        with contextlib.suppress(Exception):
            await self.units.agent.hang_up(self.call, wait=False)
        if self.worker_lost and self.call_again is not None:
            self.call_again()

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        participant, self.participant_id = self.participant_id, None
        if participant is None:
            return
        assert self.worker is not None and self.channel is not None
        await self.signaling.leave(participant, self.worker, self.channel, self.worker_lost,
                                   self.call_record)


class RoomUnits:
    """The SIP side of the front: its :class:`SipAgent` hands calls here."""

    def __init__(self, signaling: Signaling, media_host: str, sip_host: str,
                 dial_in: DialInLookup | None = None) -> None:
        self.signaling = signaling
        self.media_host = media_host
        self.dial_in = dial_in
        self.agent = SipAgent(self, sip_host, advertised_host=media_host)
        self.lobby: dict[str, _Lobby] = {}  # by participant id
        self.pin_timeout_s = PIN_TIMEOUT_S
        signaling.on_unit_key = self.key_pressed

    async def invited(self, call: Call) -> tuple[int, str, str]:
        try:
            member = await self._join(call)
        except Refused as exc:
            logger.info("SIP call %s from %s refused: %s %s", call.call_id, call.flow.address,
                        exc.status, exc.reason)
            return exc.status, exc.reason, ""
        call.app = member
        if member.lobby is not None:
            member.lobby.task = asyncio.ensure_future(self._key_in_pin(member.lobby))
        return 200, "OK", member.answer

    async def ended(self, call: Call, by_unit: bool) -> None:
        member = call.app
        if isinstance(member, UnitMember):
            lobby = member.lobby
            if lobby is not None and not lobby.admitting:  # (else _key_in_pin sees it ended)
                if lobby.task is not None:
                    lobby.task.cancel()
                await self._leave_lobby(lobby)
            await member.close()

    async def reinvited(self, call: Call, offer: str, undo: bool = False,
                        answered: bool = False) -> tuple[int, str, str]:
        """A unit's new offer in a re-INVITE (hold, resume, a new address): answered by
        its worker (mcu/unit.py ``update``); what it cannot take is refused with 488 and
        the call goes on as it was. ``undo``: the unit cancelled a re-INVITE its worker
        had taken; ``offer`` is the one before it, and our SDP goes back to the version
        the unit has (``call.local_sdp``). No ``offer`` (a re-INVITE without one): our
        offer is what the worker answers to the unit's SDP as it is with every stream
        sendrecv, the session as we would have it; ``answered``: the unit's answer to
        that, in its ACK, taken as its offer is, our SDP kept at the version it has."""
        member = call.app
        if not isinstance(member, UnitMember):
            # A unit we called, whose answer to our offer is still on its way to its worker
            # (dial): our INVITE's offer/answer is not done, so this is glare, not an offer
            # we refuse (RFC 3261 14.2). It tries again shortly; a 488 told it its offer
            # was not acceptable.
            return 491, "Request Pending", ""
        if member.lobby is not None:  # keying in its PIN: on its worker, not in the room yet
            participant, worker = member.lobby.place.participant_id, member.lobby.place.worker
        else:
            participant, worker = member.participant_id, member.worker
        if participant is None or worker is None:  # it left meanwhile
            return 481, "Call/Transaction Does Not Exist", ""
        if not offer:
            offer = _sending_both_ways(call.remote_sdp.decode("utf-8", "replace"))
        ours = sdp_origin(call.local_sdp)  # (ours, made by the worker: it has a version)
        back = {"version": int(ours[1])} if (undo or answered) and ours is not None \
            and ours[1].isdigit() else {}
        try:
            updated = await self.signaling.pool.request(worker, "update_unit", participant=participant,
                                                        offer=offer, **back)
        except ChannelError as exc:
            if exc.code in ("codec_mismatch", "bad_sdp"):
                logger.info("unit %s: re-INVITE refused: %s", participant, exc.message)
                return 488, "Not Acceptable Here: " + _phrase(exc.message), ""
            if exc.code == "unknown_participant":
                return 481, "Call/Transaction Does Not Exist", ""
            return 500, "Server Internal Error", ""
        return 200, "OK", updated["answer"]

    # The lobby: a meeting's number, then its PIN -----------------------------------------

    def key_pressed(self, worker: int, participant: str, key: str) -> None:
        """A key a unit in the lobby pressed (its worker's ``dtmf`` event)."""
        lobby = self.lobby.get(participant)
        if lobby is not None and lobby.place.worker == worker:
            lobby.keys.put_nowait(key)

    def key_pressed_in_info(self, call: Call, key: str) -> None:
        """A key a unit sent in SIP INFO: the same as in its RTP, for the PIN; a key
        outside the lobby means nothing (as an RFC 4733 one in the room)."""
        member = call.app
        if isinstance(member, UnitMember) and member.lobby is not None and not member.lobby.admitting:
            member.lobby.keys.put_nowait(key)

    async def _key_in_pin(self, lobby: _Lobby) -> None:
        member, place = lobby.member, lobby.place
        why: tuple[int, str] | None = None
        try:
            async with asyncio.timeout(self.pin_timeout_s):
                for _ in range(PIN_TRIES):
                    if hmac.compare_digest((await _entry(lobby.keys, len(lobby.pin))).encode(),
                                           lobby.pin.encode()):
                        break
                    logger.info("SIP call %s: a wrong PIN for room %s", member.call.call_id,
                                place.channel.name)
                else:
                    why = (403, "wrong PIN")
            if why is None and await self._locked(place.channel):
                # Its host locked the room while it keyed in: it would be a newcomer now,
                # as a page joining now is, and such are kept out (it was let in).
                why = (403, "the room is locked by its host")
            if why is None:
                lobby.admitting = True
                await self.signaling.pool.request(place.worker, "unit_admit",
                                                  participant=place.participant_id)
        except TimeoutError:
            why = (408, "no PIN keyed in")
        except ChannelError as exc:
            why = (480, _phrase(exc.message))
        if why is not None:
            logger.info("SIP call %s: out of the lobby of %s: %s", member.call.call_id,
                        place.channel.name, why[1])
            await self._leave_lobby(lobby)
            with contextlib.suppress(Exception):
                await self.agent.hang_up(member.call, wait=False, reason=why)
            return
        self.lobby.pop(place.participant_id, None)
        member.lobby = None
        await self._enter(member, place)
        if member.call.ended:  # it hung up while it went in
            await member.close()

    async def _locked(self, channel: RoomChannel) -> bool:
        """Whether the room is locked by its host. This node's flag, and on several nodes
        the database's, as a new call's admission reads it (multipoint/app.py): a host on
        another node locks the room there first, and this node hears of it a moment later;
        a PIN keyed in within that moment got in."""
        spread = self.signaling.spread
        return channel.locked or (spread is not None and await spread.store.room_locked(channel.name))

    async def room_closed(self, room: str, reason: str) -> None:
        """The room closes (its booking is over, the operator ends it): the units in its
        lobby are hung up with it, saying why, as the units in it are. They were left to
        key in a PIN for a room that was gone, until their time for it was over."""
        for lobby in [entry for entry in self.lobby.values()
                      if entry.place.channel.name == room and not entry.admitting]:
            if lobby.task is not None:
                lobby.task.cancel()
            await self._leave_lobby(lobby)
            with contextlib.suppress(Exception):
                await self.agent.hang_up(lobby.member.call, wait=False,
                                         reason=(480, _phrase(reason).replace('"', "'")))

    async def _leave_lobby(self, lobby: _Lobby) -> None:
        if self.lobby.pop(lobby.place.participant_id, None) is None:
            return
        lobby.member.lobby = None
        with contextlib.suppress(ChannelError, TimeoutError):
            await self.signaling.pool.request(lobby.place.worker, "drop_unit",
                                              participant=lobby.place.participant_id)
        self._unplace(lobby.place)

    async def _join(self, call: Call) -> UnitMember:
        # Counted as a join from that address: guessing room names is as slow as tokens.
        if self.signaling.rate_limits.hit("join_per_ip", address_key(call.flow.address[0])) is not None:
            raise Refused(503, "Service Unavailable: too many calls from this address")
        try:
            room, _ = user_and_host(call.invite.uri)
        except SipParseError:
            raise Refused(416, "Unsupported URI Scheme") from None
        pin: str | None = None
        if room.isascii() and room.isdigit() and self.dial_in is not None:  # a meeting's number
            found = await self.dial_in(room)
            if found is None:
                raise Refused(404, "Not Found: no meeting has this number")
            room, pin = found
        sender = call.invite.get("From")
        name = display_name(sender)
        if not name:
            with contextlib.suppress(SipParseError):
                name = user_and_host(uri_of(sender))[0]
        place = await self._place(room, name)
        try:
            joined = await self.signaling.pool.request(
                place.worker, "join_unit", room=room, participant=place.participant_id, name=place.name,
                role=place.grant.role, offer=call.offer, media_host=self.media_host,
                lobby=pin is not None)
        except ChannelError as exc:
            self._unplace(place)
            if exc.code == "codec_mismatch":
                raise Refused(488, "Not Acceptable Here: " + _phrase(exc.message)) from None
            if exc.code == "bad_sdp":
                raise Refused(400, "Bad Request: " + _phrase(exc.message)) from None
            raise Refused(500, "Server Internal Error") from None
        except BaseException:
            self._unplace(place)
            raise
        member = UnitMember(self, call, place.name)
        member.answer = joined["answer"]
        if pin is None:
            await self._enter(member, place)
        else:
            member.lobby = self.lobby[place.participant_id] = _Lobby(member, place, pin)
        return member

    async def dial(self, room: str, target: str, name: str = "", srtp: bool = False,
                   ring_s: float = RING_S, scheduled: bool = True) -> UnitMember:
        """Call the room unit at ``target`` (``sip:unit@host``) into ``room``: the operator,
        or a unit's test call. Admitted and placed like a unit that calls in (or, not
        ``scheduled``, like an ad-hoc link's join: the operator adds a unit to a room that
        is live); DialFailed says why when it does not answer or cannot take our media."""
        if not dialable(target):  # refused before any room or worker is asked
            raise DialFailed("refused", "not a SIP address (sip:unit@address)", 400)
        if not name:
            name = user_and_host(target)[0]
        try:
            place = await self._place(room, name, scheduled)
        except Refused as exc:
            raise DialFailed("refused", exc.reason, exc.status) from None
        pool = self.signaling.pool

        async def give_up() -> None:  # the worker's half-made unit and the reservation go
            with contextlib.suppress(ChannelError, TimeoutError):
                await pool.request(place.worker, "drop_unit", participant=place.participant_id)
            self._unplace(place)

        try:
            offered = await pool.request(place.worker, "dial_unit", room=room,
                                         participant=place.participant_id, name=place.name,
                                         role=place.grant.role, media_host=self.media_host, srtp=srtp)
            dialled = await self.agent.dial(target, offered["offer"], caller=f"multipoint {room}",
                                            ring_s=ring_s)
        except BaseException:
            await give_up()
            raise
        if dialled.call is None:
            await give_up()
            raise DialFailed(DIAL_OUTCOMES.get(dialled.status, "failed"), dialled.reason, dialled.status)
        try:
            await pool.request(place.worker, "unit_answer", participant=place.participant_id,
                               answer=dialled.answer)
        except ChannelError as exc:
            self._unplace(place)
            await self.agent.hang_up(dialled.call, wait=False)
            outcome = "codec_mismatch" if exc.code in ("codec_mismatch", "bad_sdp") else "failed"
            raise DialFailed(outcome, exc.message, dialled.status) from None
        member = UnitMember(self, dialled.call, place.name)
        dialled.call.app = member
        await self._enter(member, place)
        if dialled.call.ended:
            # It hung up while its answer went to its worker: its BYE found no member to
            # end, and it would have stayed in the room until its media timed out.
            await member.close()
            raise DialFailed("failed", "the unit hung up as it answered", dialled.status)
        return member

    async def _place(self, room: str, name: str, scheduled: bool = True) -> _Place:
        """Admit a unit to ``room`` as a (scheduled) link's join is; reserve a worker."""
        signaling = self.signaling
        if not ROOM_NAME.match(room):
            raise Refused(404, "Not Found: no such room")
        name = "".join(ch for ch in name if ch.isprintable())[:MAX_NAME_CHARS].strip() or "room unit"
        grant = JoinGrant(room=room, role="guest", name=name, scheduled=scheduled)
        existing = signaling.channels.get(room)
        if existing is not None and existing.echo:
            raise Refused(404, "Not Found: no such room")
        if existing is not None and existing.locked:
            raise Refused(403, "Forbidden: the room is locked by its host")
        admission = await signaling.admit(grant, "mixed")
        if not admission.allowed:
            status = REFUSALS.get(admission.code, 480)
            if admission.code == "room_not_open" and admission.details.get("opens_at"):
                # A meeting yet to come, not a room nobody booked: the unit may call
                # again once it opens (docs/sip.md).
                status = 480
            raise Refused(status, _phrase(admission.message))
        if admission.redirect is not None:
            # The room's media is on another node: that node takes SIP calls too.
            raise Refused(480, "Temporarily Unavailable: the room is on another node; "
                          "call that node's SIP address")
        from signaling.server import RoomChannel

        channel = signaling.channels.get(room)
        if channel is not None and channel.locked:
            # Its host locked the room while the scheduler admitted the unit (a database
            # round trip): it is a newcomer, kept out as a page joining now is.
            raise Refused(403, "Forbidden: the room is locked by its host")
        if channel is None:
            channel = signaling.channels[room] = RoomChannel(room, False, signaling)
        if channel.video_codec is None:  # a room a unit starts forwards what units send
            channel.video_codec = codecs.room_codec(signaling.config.video_codec, [codecs.H264])
        units = signaling.config.units("mixed")
        worker = signaling.pool.place(channel.placed_workers(), units, admission.worker, admission.priority,
                                      mixed_room=room)  # a unit is always mixed
        if worker is None:
            self._drop_if_empty(channel)
            raise Refused(486, "Busy Here: every media worker is full")
        participant_id = signaling.new_participant_id()
        signaling.pool.reserve(worker, participant_id, units, mixed_room=room)
        channel.placing[participant_id] = worker
        return _Place(channel, worker, participant_id, grant, name, admission.spread)

    def _unplace(self, place: _Place) -> None:
        self.signaling.pool.release(place.worker, place.participant_id)
        place.channel.placing.pop(place.participant_id, None)
        self._drop_if_empty(place.channel)

    async def _enter(self, member: UnitMember, place: _Place) -> None:
        """The unit is in the room on its worker: the front lists it, as a page's join."""
        signaling = self.signaling
        place.channel.placing.pop(place.participant_id, None)
        member.participant_id, member.worker, member.channel, member.grant = \
            place.participant_id, place.worker, place.channel, place.grant
        signaling.connections[place.participant_id] = member  # type: ignore[assignment]
        place.channel.add(member, place.worker)  # type: ignore[arg-type]
        if place.spread and signaling.spread is not None and not place.channel.spread:
            # As a page's join (signaling/server.py): else the unit would sit in a room
            # of the same name on this node alone, unseen and unheard by the room's
            # participants on the other nodes.
            signaling.spread.take_part(place.channel)
        record = await signaling.call_log.joined(place.channel.name, place.name, "mixed", place.worker)
        if member.participant_id != place.participant_id:
            # It left while its record was written (its worker died, it hung up): its
            # leave found no record to close, so the record is closed here.
            await signaling.call_log.left(record)
            return
        member.call_record = record
        logger.info("SIP call %s: unit %r is %s in room %s", member.call.call_id, place.name,
                    place.participant_id, place.channel.name)

    def _drop_if_empty(self, channel: RoomChannel) -> None:
        signaling = self.signaling
        if not channel.connections and not channel.placing \
                and signaling.channels.get(channel.name) is channel:
            del signaling.channels[channel.name]


async def _entry(keys: asyncio.Queue[str], length: int) -> str:
    """One try at the PIN: keys up to ``#`` or the PIN's length; ``*`` starts again."""
    entered = ""
    while len(entered) < length:
        key = await keys.get()
        if key == "#":
            if entered:
                break
        elif key == "*":
            entered = ""
        else:
            entered += key
    return entered


def _sending_both_ways(sdp: str) -> str:
    """``sdp`` with every stream's direction sendrecv (the session we offer when a unit
    asks us for an offer: a stream it stopped, port 0, stays stopped)."""
    return re.sub(r"^a=(sendonly|recvonly|inactive)(?=[ \t]*\r?$)", "a=sendrecv", sdp, flags=re.MULTILINE)


def _phrase(text: str) -> str:
    """Text fit for a reason phrase: one line, printable."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:120]
