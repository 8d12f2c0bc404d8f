"""What the central operator can see and do in live rooms (used by admin_web).

The operator acts through signaling, not on the media directly, so that the affected
participant is told exactly as when a host acts from the call page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from mcu.channel import ChannelError
from signaling.server import Signaling
from signaling.sip.units import DialFailed, RoomUnits

logger = logging.getLogger(__name__)

RECENT_DIALS = 20
# A booked unit that did not answer, was busy or could not be reached at the start gets
# one more call this much later: a unit still finishing another call or booting at the
# meeting's start is common, and half a minute covers both. Only once: a unit that is
# off or elsewhere would otherwise be rung all meeting long. A refusal, a declined call
# or a codec we do not share would go the same way again, so those are not retried.
BOOKED_RETRY_S = 30.0
BOOKED_RETRIED = frozenset({"no_answer", "busy", "unreachable"})
BOOKED_BY = "booking"  # who placed a booking's calls, in the operator's list


class LiveRooms:
    def __init__(self, signaling: Signaling, recordings_dir: Path) -> None:
        self.signaling = signaling
        self.pool = signaling.pool
        self.recordings_dir = recordings_dir
        self.units: RoomUnits | None = None  # SIP (signaling/sip/), when it is on
        # The operator's last calls to room units and how each went, newest first.
        self.dials: deque[dict[str, Any]] = deque(maxlen=RECENT_DIALS)
        self._dialling: set[asyncio.Task[None]] = set()
        self.booked_retry_s = BOOKED_RETRY_S

    async def rooms(self) -> list[dict[str, Any]]:
        """Every live room with its participants and each one's connection quality,
        gathered from every worker (a room spread over several is one room here)."""
        merged: dict[str, dict[str, Any]] = {}
        for worker, rooms in enumerate(await self.pool.request_all("rooms")):
            for room in rooms or []:
                channel = self.signaling.channels.get(room["name"])
                entry = merged.setdefault(room["name"], {
                    "name": room["name"], "selftest": room["selftest"], "since": room["since"],
                    "locked": channel.locked if channel is not None else False,
                    "recording": False, "workers": [], "participants": []})
                entry["workers"].append(worker)
                entry["recording"] = entry["recording"] or room["recording"]
                entry["since"] = min(entry["since"], room["since"])
                entry["participants"] += [{**p, "worker": worker} for p in room["participants"]]
        for entry in merged.values():
            # A room spread over nodes, as last read from the database: recording when
            # another node's worker records it, and the others' participants too, without
            # the connection figures only their node has (the operator mutes or removes
            # them through their node: mute, remove).
            channel = self.signaling.channels.get(entry["name"])
            if channel is not None:
                entry["recording"] = entry["recording"] or bool(channel.remote_recording)
                entry["participants"] += [{**p, "node": node} for node in sorted(channel.remote_listed)
                                          for p in channel.remote_listed[node]]
        return sorted(merged.values(), key=lambda r: r["since"])

    def load(self) -> dict[str, Any]:
        workers = self.pool.load()
        return {"rooms": len(self.signaling.channels),
                "participants": len(self.signaling.connections),
                "workers": workers,
                "packets_per_s": sum(w["packets_per_s"] for w in workers)}

    def _connection(self, room: str, participant: str) -> Any:
        channel = self.signaling.channels.get(room)
        connection = channel.connections.get(participant) if channel is not None else None
        if connection is None:
            raise LookupError(f"no participant {participant} in room {room}")
        return connection

    async def _elsewhere(self, room: str, participant: str, command: dict[str, Any],
                         by: str) -> bool:
        """The participant is on another node's part of the room: ``command`` goes to
        that node, as a host's moderation does, and this returns (True) once that node
        has done it (:meth:`Signaling.moderate_elsewhere_confirmed`)."""
        channel = self.signaling.channels.get(room)
        return channel is not None and await self.signaling.moderate_elsewhere_confirmed(
            channel, participant, command, by)

    async def mute(self, room: str, participant: str, by: str) -> None:
        if not await self._elsewhere(room, participant, {"action": "mute"}, by):
            await self._connection(room, participant).mute(by)

    async def remove(self, room: str, participant: str, by: str) -> None:
        if not await self._elsewhere(room, participant, {"action": "remove"}, by):
            await self._connection(room, participant).end("removed", f"removed by {by}")

    def dial(self, room: str, target: str, by: str) -> dict[str, Any]:
        """Call a room unit into a live room; it rings for a while, so this returns at
        once with the entry of :attr:`dials` that tells how it goes."""
        if self.units is None:
            raise LookupError("SIP is not on for this node")
        if room not in self.signaling.channels:
            raise LookupError(f"no live room {room}")
        entry: dict[str, Any] = {"room": room, "target": target, "by": by, "at": time.time(),
                                 "outcome": "ringing", "reason": ""}
        # The operator's word admits it: the room is live, booked or not.
        self._place_call(entry, self._ring(entry, scheduled=False))
        return entry

    def _place_call(self, entry: dict[str, Any], call: Coroutine[Any, Any, Any]) -> None:
        """List ``entry`` among the last calls and place ``call`` in the background."""
        self.dials.appendleft(entry)
        task = asyncio.ensure_future(call)
        self._dialling.add(task)
        task.add_done_callback(self._dialling.discard)

    async def _ring(self, entry: dict[str, Any], scheduled: bool) -> bool:
        """One call to the unit of ``entry``, which says how it went; True: it is in."""
        assert self.units is not None
        entry["outcome"], entry["reason"], entry["at"] = "ringing", "", time.time()
        try:
            member = await self.units.dial(entry["room"], entry["target"], name=entry.get("name", ""),
                                           scheduled=scheduled)
        except DialFailed as exc:
            entry["outcome"], entry["reason"] = exc.outcome, exc.reason
            return False
        except Exception as exc:  # the room closed meanwhile, a worker went away
            logger.exception("room %s: calling %s failed", entry["room"], entry["target"])
            entry["outcome"], entry["reason"] = "failed", str(exc)
            return False
        entry["outcome"], entry["participant"] = "connected", member.participant_id
        member.call_again = lambda: self._call_again(entry)
        return True

    def call_booked_units(self, room: str, units: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """A booked meeting on this node starts: call each of its units (name, SIP URI)
        into its room, all at once and in the background, each listed in :attr:`dials`
        with how it went. Returns those entries."""
        if not units:
            return []
        if self.units is None:
            logger.warning("room %s: SIP is off on this node; the booking's %d room unit(s) "
                           "are not called", room, len(units))
            return []
        entries = []
        for name, target in units:
            entry: dict[str, Any] = {"room": room, "target": target, "name": name,
                                     "by": BOOKED_BY, "at": time.time(),
                                     "outcome": "ringing", "reason": "", "tries": 0}
            entries.append(entry)
            self._place_call(entry, self._call_with_retry(entry))
        return entries

    async def _call_with_retry(self, entry: dict[str, Any]) -> None:
        room, target = entry["room"], entry["target"]
        for last_try in (False, True):
            entry["tries"] += 1
            # Admitted as the booking's links are (only while the booking is on); the
            # operator's call as the operator's word (the room is live, booked or not).
            if await self._ring(entry, scheduled=entry["by"] == BOOKED_BY):
                logger.info("room %s: unit %s answered (%s)", room, target, entry["participant"])
                return
            if last_try or entry["outcome"] not in BOOKED_RETRIED:
                break
            logger.info("room %s: unit %s: %s (%s); calling once more in %.0f s",
                        room, target, entry["outcome"], entry["reason"], self.booked_retry_s)
            await asyncio.sleep(self.booked_retry_s)
        logger.warning("room %s: unit %s not connected: %s (%s)", room, target,
                       entry["outcome"], entry["reason"])

    def _call_again(self, entry: dict[str, Any]) -> None:
        """A unit we called was cut off by the death of its media worker (signaling ends
        its call then, as it disconnects the pages, which rejoin by themselves): call it
        again, as a booking's calls are made (once more later if busy or not answering)."""
        again = {key: entry[key] for key in ("room", "target", "name", "by") if key in entry}
        again.update({"at": time.time(), "outcome": "ringing", "reason": "", "tries": 0})
        logger.info("room %s: unit %s lost its media worker; calling it again", again["room"],
                    again["target"])
        self._place_call(again, self._call_with_retry(again))

    async def stop_dialling(self) -> None:
        """The service stops: calls still waiting or ringing are given up."""
        tasks = list(self._dialling)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def lock(self, room: str, locked: bool) -> None:
        channel = self.signaling.channels.get(room)
        if channel is None:
            raise LookupError(f"no live room {room}")
        await self.signaling.set_locked(channel, locked)

    async def open(self, room: str, worker: int) -> None:
        """Have the room ready on its worker before anyone joins (a booking's start is near)."""
        await self.pool.request(worker, "open_room", room=room)

    async def close(self, room: str, reason: str, code: str = "room_closed") -> None:
        """End the room: everyone in it is told why (``reason`` in English, and as
        ``code`` for the page's own text: scheduler/media/closing.py) and disconnected;
        a recording finishes."""
        channel = self.signaling.channels.get(room)
        if channel is not None:
            for connection in list(channel.connections.values()):
                await connection.end("closed", reason, code=code)
        if self.units is not None:  # and the units keying in its PIN, not in it yet
            await self.units.room_closed(room, reason)
        await self.pool.request_all("close_room", room=room)  # a worker that is down has none

    async def close_by_operator(self, room: str, by: str) -> None:
        """The operator ends a live room (left running, abused): everyone in it, on every
        node with a part of it, is told (``closed_by_operator``, final for the page) and
        disconnected. The other nodes are asked first, and this node's part is closed
        once they have answered (or not in time): their answers come to this node's part.
        Raises :class:`~signaling.spread.NotConfirmed` if a node did not answer in time,
        ChannelError if closing failed there (this node's part is closed all the same)."""
        channel = self.signaling.channels.get(room)
        if channel is None:
            raise LookupError(f"no live room {room}")
        code = "closed_by_operator"
        reason = f"closed by {by}"  # as a removal says "removed by"
        spread = self.signaling.spread
        others = sorted(channel.remote_listed) if spread is not None else []
        command = {"action": "close", "code": code, "reason": reason}
        answers = await asyncio.gather(*(spread.ask(channel, node, command) for node in others),
                                       return_exceptions=True) if spread is not None else []
        await self.close(room, reason, code)
        for node, answer in zip(others, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            if answer == "failed":  # "gone": nobody of the room was left there
                raise ChannelError("failed_elsewhere", f"node {node} could not close room {room}")

    async def record(self, room: str, active: bool) -> None:
        """As a host's Record: one recording per room, wherever it runs (a room spread
        over nodes may be recorded by another node's worker; Stop stops it there)."""
        channel = self.signaling.channels.get(room)
        if channel is None:
            raise LookupError(f"no live room {room}")
        await self.signaling.set_recording(channel, active)

    def recordings(self) -> list[dict[str, Any]]:
        if not self.recordings_dir.is_dir():
            return []
        return [{"room": path.parent.name, "file": path.name, "bytes": path.stat().st_size,
                 "started": path.stem, "path": str(path)}
                for path in sorted(self.recordings_dir.glob("*/*.webm"), reverse=True)]

