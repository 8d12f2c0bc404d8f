"""A media worker: one process (one core) owning its rooms, their connections and packets.

The front process starts one per core (``python -m mcu.worker``, see mcu/pool.py) and
talks to it over the control channel (mcu/channel.py; the messages are listed in
docs/workers.md). :class:`WorkerService` turns those requests into calls on this
process's :class:`~mcu.room.MediaWorker` and reports what happens as events: offers
and other messages for one participant, a room's speaker and participant list, a
participant whose media connection died, and the worker's load every second.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from mcu import codecs
from mcu.channel import Channel, ChannelError
from mcu.participant import NegotiationError, Offer, Participant
from mcu.pipe import PipedProducer
from mcu.room import MediaConfig, MediaWorker, Room
from mcu.unit import UnitParticipant
from mcu.unit_sdp import SdpError

logger = logging.getLogger(__name__)

LOAD_INTERVAL_S = 1.0
SOURCES = ("microphone", "camera", "screen")
MODES = ("forwarded", "mixed")

Emit = Callable[[str, dict[str, Any]], None]


class WorkerService:
    """The requests a worker answers (docs/workers.md), on one MediaWorker."""

    def __init__(self, worker: MediaWorker, emit: Emit) -> None:
        self.worker = worker
        self.emit = emit
        self.participants: dict[str, Participant] = {}
        # Room units not yet in their room: those we call, until they answer, and those
        # that dialled a meeting's number, until they key in its PIN.
        self.outside: dict[str, UnitParticipant] = {}
        # Rooms spread over several workers: the pipe addresses of the other workers that
        # host part of each room (the front says which, with link_room).
        self.peers: dict[str, list[tuple[str, int]]] = {}
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._forwarded_mark = worker.counters.packets_forwarded

    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        handler = getattr(self, "do_" + method, None)
        if handler is None:
            raise ChannelError("unknown_method", f"no method {method!r}")
        try:
            inspect.signature(handler).bind(**params)
        except TypeError as exc:  # missing or unexpected parameters (a bug inside is not)
            raise ChannelError("bad_request", f"{method}: {exc}") from None
        try:
            return await handler(**params)
        except NegotiationError as exc:
            raise ChannelError(exc.code, exc.message) from None
        except ValueError as exc:  # a pipe request the pipe refused (mcu/pipe.py)
            raise ChannelError("refused", f"{method}: {exc}") from None

    # Rooms and participants ----------------------------------------------------------

    def _room(self, name: str, echo: bool = False) -> Room:
        room = self.worker.rooms.get(name)
        if room is not None and room.echo != echo:
            raise ChannelError("room_not_found", "no such room for this link")
        if room is None:
            room = self.worker.room(name, echo=echo)
            room.on_event = lambda event, details, r=room: self._room_event(r, event, details)
            # Its last participant leaving must not close it under a unit still outside
            # it: that unit's right PIN, or its answer, found the room closed and was hung up.
            room.keep_open = lambda r=room: any(unit.room is r for unit in self.outside.values())
        return room

    def _participant(self, participant_id: str) -> Participant:
        participant = self.participants.get(participant_id)
        if participant is None or participant.closed:
            raise ChannelError("unknown_participant", f"no participant {participant_id!r} here")
        return participant

    def _room_event(self, room: Room, event: str, details: dict[str, Any]) -> None:
        if event == "left":
            self.participants.pop(details["participant"], None)
            self.emit("left", {"room": room.name, **details})
            if self.peers.get(room.name):  # the other workers drop what we piped them
                self.emit("unpiped", {"room": room.name, "participant": details["participant"]})
        elif event == "participants":
            self.emit("participants", {"room": room.name, "recording": room.recording,
                                       "participants": room.describe_participants()})
        else:
            self.emit(event, {"room": room.name, **details})

    async def do_open_room(self, room: str) -> None:
        self._room(room)

    async def do_join(self, room: str, participant: str, name: str, role: str,
                      mode: str = "forwarded", echo: bool = False, video_codec: str = codecs.VP8,
                      video_codecs: list[str] | None = None) -> dict[str, Any]:
        if mode not in MODES:
            raise ChannelError("bad_request", f"unknown mode {mode!r}")
        if video_codec not in codecs.VIDEO_CODECS:
            raise ChannelError("bad_request", f"unknown video codec {video_codec!r}")
        if video_codecs is not None and not (isinstance(video_codecs, list)
                                             and all(isinstance(c, str) for c in video_codecs)):
            raise ChannelError("bad_request", "video_codecs must be a list of names")
        joined = self._room(room, echo).join(name, role, "forwarded" if echo else mode,
                                             participant_id=participant, video_codec=video_codec,
                                             video_codecs=video_codecs)
        self.participants[joined.id] = joined

        async def send_offer(offer: Offer) -> None:
            self.emit("offer", {"participant": joined.id, "sdp": offer.sdp,
                                "revision": offer.revision, "publish": offer.publish,
                                "tracks": offer.tracks})

        async def send_message(message: dict[str, Any]) -> None:
            self.emit("message", {"participant": joined.id, "message": message})

        joined.send_offer, joined.send_message = send_offer, send_message
        joined.on_publishing = lambda producer: self._export(joined.room)
        # The front counts a join as pending (holding media ports) until this event.
        joined.on_connected = lambda: self.emit("connected", {"participant": joined.id})
        return {"participant": joined.id, "mode": joined.mode, "video_codec": joined.video_codec}

    async def do_join_unit(self, room: str, participant: str, name: str, role: str, offer: str,
                           media_host: str, lobby: bool = False) -> dict[str, Any]:
        """A room unit's SIP call (mcu/unit.py): its SDP offer in, our answer out. In the
        ``lobby`` (it dialled a meeting's number) it waits outside the room, its DTMF keys
        sent to the front as ``dtmf`` events, until the front admits it (``unit_admit``)
        for the right PIN or drops it (``drop_unit``)."""
        if not isinstance(offer, str) or not isinstance(media_host, str) or not isinstance(lobby, bool):
            raise ChannelError("bad_request", "join_unit needs an SDP offer and a media host")
        live = self._room(room)
        unit = UnitParticipant(live, name, role, participant, media_host)
        try:
            answer = await unit.start(offer)  # before it is in: a refused offer leaves no trace
        except SdpError as exc:
            await unit.close()
            self._close_if_unused(live)
            raise ChannelError(exc.code, str(exc)) from None
        self.outside[unit.id] = unit
        if lobby:
            unit.on_dtmf = lambda key: self.emit("dtmf", {"participant": unit.id, "key": key})
            unit.start_prompt()
        else:
            await self.do_unit_admit(unit.id)
        return {"participant": unit.id, "answer": answer}

    async def do_dial_unit(self, room: str, participant: str, name: str, role: str, media_host: str,
                           srtp: bool = False) -> dict[str, Any]:
        """We call a room unit (dial-out): our SDP offer. The unit joins the room when its
        answer comes (``unit_answer``); a call that fails is dropped (``drop_unit``)."""
        if not isinstance(media_host, str) or not isinstance(srtp, bool):
            raise ChannelError("bad_request", "dial_unit needs a media host")
        live = self._room(room)
        unit = UnitParticipant(live, name, role, participant, media_host)
        offer = await unit.make_offer(srtp)
        self.outside[unit.id] = unit
        return {"participant": unit.id, "offer": offer}

    async def do_unit_answer(self, participant: str, answer: str) -> None:
        unit = self.outside.get(participant)
        if unit is None or unit.closed or unit.answered:
            raise ChannelError("unknown_participant", f"no call to {participant!r} under way")
        try:
            await unit.accept_answer(answer if isinstance(answer, str) else "")
        except SdpError as exc:
            self.outside.pop(participant, None)
            await unit.close()
            # The room dial_unit made for it goes with it when nobody else is in it (a
            # test call's room always): else each refused answer left an empty room here.
            self._close_if_unused(unit.room)
            raise ChannelError(exc.code, str(exc)) from None
        await self.do_unit_admit(participant)

    async def do_update_unit(self, participant: str, offer: str,
                             version: int | None = None) -> dict[str, Any]:
        """A room unit's re-INVITE with a new offer (hold, resume, a new address): our
        answer; ``bad_sdp`` or ``codec_mismatch`` when it asks what we cannot do (the call
        goes on as it was). With ``version``: a re-INVITE the unit cancelled after this
        took it is undone, ``offer`` being the one it had before and ``version`` that of
        our SDP it has (UnitParticipant.update)."""
        unit = self.participants.get(participant) or self.outside.get(participant)
        if not isinstance(unit, UnitParticipant) or unit.closed:
            raise ChannelError("unknown_participant", f"no unit {participant!r} here")
        if not isinstance(offer, str) or not offer:
            raise ChannelError("bad_request", "update_unit needs an SDP offer")
        if version is not None and (type(version) is not int or version < 0):
            raise ChannelError("bad_request", "update_unit's version is a count")
        try:
            return {"answer": await unit.update(offer, version)}
        except SdpError as exc:
            raise ChannelError(exc.code, str(exc)) from None

    async def do_unit_admit(self, participant: str) -> None:
        """A unit outside its room (answered our call, or keyed in the right PIN) goes in."""
        unit = self.outside.pop(participant, None)
        if unit is None or unit.closed or not unit.answered:
            raise ChannelError("unknown_participant", f"no unit {participant!r} waiting")
        unit.on_dtmf = None
        unit.stop_prompt()
        if self.worker.rooms.get(unit.room.name) is not unit.room:  # closed meanwhile
            await unit.close()
            raise ChannelError("unknown_room", f"room {unit.room.name} is closed")
        unit.room.add_unit(unit)
        self.participants[unit.id] = cast(Participant, unit)
        self._export(unit.room)

    async def do_drop_unit(self, participant: str) -> None:
        unit = self.outside.pop(participant, None)
        if unit is not None:
            await unit.close()
            self._close_if_unused(unit.room)

    def _close_if_unused(self, room: Room) -> None:
        """A room nobody is in goes, unless a unit is still outside it: a booking rings
        its units all at once, and one that fails must not close the room under another
        one ringing, or keying in its PIN."""
        if not room.participants and not room.remote_participants \
                and not any(unit.room is room for unit in self.outside.values()):
            room.close()

    async def do_negotiate(self, participant: str) -> None:
        """After the front told the client it joined: the first offer, then the others'."""
        joined = self._participant(participant)
        await joined.renegotiate()
        joined.room.announce_join(joined)

    async def do_answer(self, participant: str, sdp: str, revision: int | None = None) -> None:
        await self._participant(participant).accept_answer(sdp, revision)

    async def do_restart_ice(self, participant: str) -> None:
        """The client's network went away and came back: a fresh offer restarting ICE."""
        await self._participant(participant).restart_ice()

    async def do_tiles(self, participant: str, tiles: dict[str, float]) -> None:
        self._participant(participant).set_tiles(tiles)

    async def do_set_muted(self, participant: str, source: str, muted: bool) -> None:
        if source not in SOURCES:
            raise ChannelError("bad_request", f"unknown source {source!r}")
        joined = self._participant(participant)
        joined.room.set_muted(joined, source, muted)

    async def do_screen(self, participant: str, active: bool) -> None:
        joined = self._participant(participant)
        joined.room.set_sharing(joined, active)
        if self.peers.get(joined.room.name):
            self.emit("pipe_update", {"room": joined.room.name,
                                      "producer": joined.producers["screen"].id, "sharing": active})

    async def do_set_mode(self, participant: str, mode: str) -> None:
        if mode not in MODES:
            raise ChannelError("bad_request", f"unknown mode {mode!r}")
        joined = self._participant(participant)
        if isinstance(joined, UnitParticipant):
            raise ChannelError("bad_request", "a room unit is always mixed")
        joined.room.set_mode(joined, mode)

    async def do_leave(self, participant: str) -> None:
        joined = self.participants.pop(participant, None)
        if joined is not None:
            await joined.room.leave(joined)

    async def do_media_counts(self, participant: str) -> dict[str, int] | None:
        joined = self.participants.get(participant)
        return None if joined is None else joined.media_counts()

    async def do_record(self, room: str, active: bool, path: str = "") -> bool:
        live = self.worker.rooms.get(room)
        if live is None or live.echo:
            raise ChannelError("unknown_room", f"no live room {room}")
        if active and not live.recording:
            if not path:
                raise ChannelError("bad_request", "recording needs a path")
            try:
                live.start_recording(Path(path))
            except OSError as exc:
                # The host is told what it can act on (and the call goes on); the
                # operator's log says where.
                logger.warning("room %s: recording to %s failed: %s", room, path, exc)
                raise ChannelError("recording_failed", "the recording could not be started: the "
                                   f"server cannot write it ({exc.strerror or exc})") from None
        elif not active:
            live.stop_recording()
        return live.recording

    async def do_close_room(self, room: str) -> None:
        live = self.worker.rooms.get(room)
        if live is None:
            return
        for participant in list(live.participants.values()):
            await live.leave(participant, reason="closed")
        live.close()

    # Rooms across workers (mcu/pipe.py; docs/workers.md) ------------------------------

    async def do_link_room(self, room: str, peers: list[list[Any]]) -> None:
        """Pipe this room's tracks to exactly these workers (and take theirs from them).

        A peer is ``[host, port]`` (a worker of this node: plain RTP) or ``[host, port,
        secret]`` (another node's, its pipe secret in hex: SRTP, mcu/pipe.py)."""
        live = self.worker.rooms.get(room)
        pipe = self.worker.pipe
        if live is None or pipe is None:
            return
        try:
            secrets = {(str(p[0]), int(p[1])): bytes.fromhex(p[2]) if len(p) > 2 else None
                       for p in peers}
        except (TypeError, ValueError, IndexError) as exc:
            raise ChannelError("bad_request", f"link_room: bad peer ({exc})") from None
        wanted = list(secrets)
        for peer, secret in secrets.items():
            # Before anything is exported there: its sink is bound with the right keys.
            if secret is not None:
                pipe.secure(peer, secret)
        for gone in [p for p in self.peers.get(room, []) if p not in wanted]:
            for participant in live.participants.values():
                for producer in participant.producers.values():
                    pipe.stop_export(producer.id, gone)
        for remote in list(live.remote_participants.values()):
            if tuple(remote.origin) not in wanted:
                for producer in list(remote.producers.values()):
                    pipe.stop_import(room, producer.id)
        if wanted:
            self.peers[room] = wanted
        else:
            self.peers.pop(room, None)
        for peer in pipe.secured():  # no room pipes with it any more: its keys go
            if not any(peer in linked for linked in self.peers.values()):
                pipe.unsecure(peer)
        self._export(live)

    def _export(self, room: Room) -> None:
        """Pipe each negotiated local track once to each peer that lacks it, or again
        when what the peer was told changed (a camera's simulcast layers, its codec);
        the front passes the descriptions on (``piped`` event -> the peer's ``import``)."""
        pipe = self.worker.pipe
        if pipe is None:
            return
        for peer in self.peers.get(room.name, []):
            piped = []
            for participant in room.participants.values():
                for producer in participant.producers.values():
                    if producer.payload_type is None or producer.local_only:
                        continue
                    before = pipe.described(producer.id, peer)
                    described = pipe.export_producer(producer, peer)
                    # A share starting or stopping is told by pipe_update, not here.
                    if before is None or replace(before, sharing=False) != replace(described, sharing=False):
                        piped.append(described.to_json())
            if piped:
                self.emit("piped", {"room": room.name, "to": list(peer),
                                    "origin": list(pipe.address), "producers": piped})

    async def do_import(self, room: str, origin: list[Any], producers: list[dict[str, Any]]) -> None:
        live = self.worker.rooms.get(room)
        if live is None or self.worker.pipe is None:
            raise ChannelError("unknown_room", f"no live room {room} here")
        for piped in producers:
            self.worker.pipe.import_producer(live, PipedProducer.from_json(piped), origin)

    async def do_drop_remote(self, room: str, participant: str) -> None:
        live = self.worker.rooms.get(room)
        remote = live.remote_participants.get(participant) if live is not None else None
        if remote is not None and self.worker.pipe is not None:
            for producer in list(remote.producers.values()):
                self.worker.pipe.stop_import(room, producer.id)

    async def do_update_import(self, room: str, producer: str, sharing: bool) -> None:
        if self.worker.pipe is not None:
            self.worker.pipe.update_import(room, producer, sharing)

    async def do_rooms(self) -> list[dict[str, Any]]:
        """Every room here with its participants and their connection quality."""
        now = time.time()
        result = []
        for room in sorted(self.worker.rooms.values(), key=lambda r: r.created_at):
            participants = [{**p.describe(), **p.quality(),
                             "connected_s": round(now - p.joined_at)}
                            for p in room.participants.values()]
            result.append({"name": room.name, "selftest": room.echo, "recording": room.recording,
                           "since": room.created_at, "participants": participants})
        return result

    async def do_stats(self) -> dict[str, Any]:
        return self.load()

    async def do_ping(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    # Load ------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """What the front places by and the operator sees: counts, CPU, packet rate."""
        now, cpu = time.monotonic(), time.process_time()
        wall = now - self._cpu_mark[0]
        forwarded = self.worker.counters.packets_forwarded
        figures = {
            "rooms": len(self.worker.rooms),
            "participants": self.worker.participant_count,
            "cpu": round((cpu - self._cpu_mark[1]) / wall, 3) if wall > 0 else 0.0,
            "packets_per_s": round((forwarded - self._forwarded_mark) / wall) if wall > 0 else 0,
            "counters": self.worker.counters.as_dict(),
        }
        if wall >= LOAD_INTERVAL_S / 2:
            self._cpu_mark, self._forwarded_mark = (now, cpu), forwarded
        return figures

    async def report_load(self) -> None:
        while True:
            await asyncio.sleep(LOAD_INTERVAL_S)
            self.emit("load", self.load())


def worker_config(raw: dict[str, Any]) -> MediaConfig:
    """The worker's MediaConfig from the JSON the front passes on its command line."""
    from mcu import aiortc_adapter

    aiortc_adapter.configure_ice(raw.get("media_addresses", []),
                                 tuple(raw["udp_port_range"]) if raw.get("udp_port_range") else None)
    servers = aiortc_adapter.ice_servers(raw.get("stun_servers", []), raw.get("turn_servers", []),
                                         raw.get("turn_username", ""), raw.get("turn_password", ""))
    return room_config(raw, servers)


def room_config(raw: dict[str, Any], ice_servers: list[Any] | None = None) -> MediaConfig:
    """What the rooms of a worker keep to, from the front's JSON (no global ICE setup)."""
    composite_max = raw.get("unit_composite_max")
    return MediaConfig(ice_servers=ice_servers or [], last_n=int(raw.get("last_n", 9)),
                       **({"unit_composite_max": tuple(composite_max)} if composite_max else {}))


async def serve(channel_fd: int, config: MediaConfig, name: str, pipe_host: str) -> None:
    worker = MediaWorker(config)
    pipe = await worker.open_pipe(pipe_host)
    sock = socket.socket(fileno=channel_fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    channel: Channel | None = None

    def emit(event: str, data: dict[str, Any]) -> None:
        if channel is not None:
            channel.emit(event, data)

    service = WorkerService(worker, emit)
    channel = Channel(reader, writer, name=name, on_request=service.handle)
    reporting = asyncio.ensure_future(service.report_load())
    channel.emit("ready", {"pid": os.getpid(), "pipe": list(pipe.address),
                           "pipe_secret": pipe.secret.hex()})
    try:
        await channel.run()  # until the front goes away: then this worker has no purpose
    finally:
        reporting.cancel()
        await worker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcu.worker",
                                     description="one media worker process (started by the front)")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--config", default="{}", help="JSON: addresses, ports, ICE servers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("MULTIPOINT_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s worker{args.index} %(levelname)s %(name)s: %(message)s")
    import uvloop

    raw = json.loads(args.config)
    config = worker_config(raw)
    # What start-up allocated (modules, aiortc) stays out of later garbage collections.
    import gc

    gc.collect()
    gc.freeze()
    uvloop.run(serve(args.channel_fd, config, f"worker{args.index}",
                     raw.get("pipe_host", "127.0.0.1")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
