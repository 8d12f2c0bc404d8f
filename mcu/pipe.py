"""Rooms that span media workers: each producer piped once to each other worker.

When a room's participants sit on several media workers of one node, every producer
(an incoming track) goes once to every other worker that hosts part of the room, as
plain RTP over UDP between the workers (a loopback or operator network: no SRTP, no
ICE). On the origin worker the pipe is one more C leg on the producer's track, whatever
the number of subscribers on the other side; on the receiving worker the piped track
is a producer of a :class:`~mcu.room.RemoteParticipant` in that worker's room, and its
packets go through the same C fan-out (:func:`mcu._fanout.receive`) as a local one's.

One UDP socket per worker carries every pipe of every room, both ways. It is read in C
(:class:`mcu.udp.CReadTransport`): RTP from a worker that pipes tracks here goes from
one ``recvmmsg`` batch straight to :func:`~mcu._fanout.receive` (decrypted first when
that worker is another node's), with no Python per packet; RTCP, and anything from
elsewhere, comes to :meth:`PipeTransport.datagram_received`.

* RTP, origin to receiver: one SSRC per (producer, destination), chosen at random; the
  receiver finds the track by SSRC. The pipe leg forwards every packet under the
  publisher's own sequence numbers (no keyframe gate: the receiver's consumers gate
  for themselves, and ask for a keyframe up the pipe). A simulcast camera is piped
  with all its layers, each on a pipe leg and an SSRC of its own (still one pipe per
  producer and destination): on the receiving worker it is a layered camera again, and
  each of its subscribers there gets the layer that fits, as a local one would.
* RTCP, receiver to origin: PLI/FIR (the origin asks the publisher, throttled there)
  and NACK for packets lost on the pipe (answered from the pipe leg's history), on
  the SSRC of the track (the layer) concerned; and for a layered camera, each control
  step, which of its layers the receiver's subscribers use (an APP packet named
  ``LAYR``, :meth:`PipeTransport.report_layers`), so that the origin pauses at the
  publisher only the layers nobody on any worker watches.
* RTCP, origin to receiver: a sender report per pipe leg each second, on the
  publisher's own NTP timeline, so subscribers on the other worker keep lip-sync.

What a worker tells another about a producer is a :class:`PipedProducer`, plain values
for the control channel between workers (not this module's business). Mute is the
origin's: a muted track sends nothing, on the pipe either.

A pipe to a worker of *another node* crosses the operator's network, so it is SRTP
(:meth:`PipeTransport.secure`): each worker makes a random secret at start, and what
worker S sends to worker R (its RTP, sender reports, and its feedback on what R pipes
to it) is keyed by HMAC-SHA256(secret of S, secret of R)[:30], AES-CM-128 with
HMAC-SHA1-80. So each direction of each pair of workers has a key of its own (no
keystream is ever used twice across sessions), whatever addresses the packets travel
by; the fronts pass each worker's secret on with its pipe's address. Packets are taken
only from the address a track was piped from, and on a secured pipe only if authentic.
Pipes between the workers of one node stay plain RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import pylibsrtp

from mcu import aiortc_adapter as adapter
from mcu import codecs, rtp
from mcu._fanout import (
    RECEIVED_MALFORMED,
    RECEIVED_SWITCHED,
    RECEIVED_TAPPED,
    RECEIVED_UNKNOWN,
    RECEIVED_WANTS_KEYFRAME,
    Sink,
    Track,
    address_key,
    receive,
)
from mcu.forwarding import Consumer, Producer
from mcu.participant import Participant
from mcu.room import MediaWorker, RemoteParticipant, Room
from mcu.udp import CReadTransport

logger = logging.getLogger(__name__)

Address = tuple[str, int]

SOCKET_BUFFER_BYTES = 4 << 20  # every pipe of the worker shares the socket: room for bursts
SECRET_BYTES = 32
# Retransmissions on the pipe resend a packet under its own sequence number: the
# receiver's replay window must reach back as far as the pipe leg's history.
REPLAY_WINDOW = 1024
NO_TRACKS: dict[int, Track] = {}
KINDS = {"microphone": "audio", "camera": "video", "screen": "video"}
# The RTCP APP packet (RFC 3550 6.7) in which a receiving worker tells the origin which
# layers of a piped camera its subscribers use: the sender's SSRC, the name, then the
# pipe SSRC of the camera's lowest layer (which names the camera) and the pipe SSRCs of
# the layers used, 32 bits each.
LAYER_REPORT = b"LAYR"


@dataclass(frozen=True)
class PipedProducer:
    """What the origin worker tells a receiving worker about one piped producer."""

    producer_id: str
    owner_id: str
    owner_name: str
    owner_role: str
    kind: str  # "audio" or "video"
    source: str  # "microphone", "camera" or "screen"
    ssrc: int  # of the pipe to that worker
    payload_type: int
    rtx_payload_type: int | None
    sharing: bool = False
    codec: str | None = None  # video: "vp8" or "h264" (absent: vp8, what older workers piped)
    # A simulcast camera: its layers low to high, each (RID, SSRC of its pipe leg); ``ssrc``
    # is then the top layer's. Empty: one stream.
    layers: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [list(layer) for layer in self.layers]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipedProducer:
        fields = dict(data)
        try:
            fields["layers"] = tuple((str(rid), int(ssrc)) for rid, ssrc in fields.get("layers") or ())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad layers: {exc}") from None
        return cls(**fields)


@dataclass(eq=False)
class _Leg:
    """One pipe leg: a track (the producer, or one layer of a layered camera) sent to
    one worker on an SSRC of its own."""

    stream: Producer
    consumer: Consumer  # rewrite, history, sender reports, retransmission


@dataclass(eq=False)
class _Export:
    room: Room
    producer: Producer
    to: Address
    piped: PipedProducer
    legs: list[_Leg] = field(default_factory=list)  # one, or one per layer (low to high)

    @property
    def rids(self) -> list[str | None]:
        return [leg.stream.rid for leg in self.legs if leg.stream is not self.producer]


@dataclass(eq=False)
class _Import:
    room: Room
    remote_id: str
    producer: Producer
    origin: Address
    piped: PipedProducer
    streams: dict[int, Producer] = field(default_factory=dict)  # pipe SSRC -> it or its layer


def pipe_key(sender_secret: bytes, receiver_secret: bytes) -> bytes:
    """The SRTP master key and salt (30 bytes) of what one worker sends another."""
    return hmac.new(sender_secret, receiver_secret, hashlib.sha256).digest()[:30]


def _srtp(key: bytes, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                              else pylibsrtp.Policy.SSRC_ANY_INBOUND,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    if outbound:
        policy.allow_repeat_tx = True  # a NACKed packet goes again as it was
    else:
        policy.window_size = REPLAY_WINDOW
    return pylibsrtp.Session(policy)


@dataclass(eq=False)
class _Secured:
    """The SRTP sessions of the pipe to and from one worker of another node."""

    peer_secret: bytes
    tx: pylibsrtp.Session  # what we send there: keyed by our secret
    rx: pylibsrtp.Session  # what comes from there: keyed by its secret
    open: Callable[[bytes], bytes | None] = field(init=False)  # rx's unprotect

    def __post_init__(self) -> None:
        self.open = adapter.unprotector(self.rx)


def _check_layers(piped: PipedProducer) -> None:
    """A piped layered camera must say its layers plainly (refused otherwise)."""
    if not piped.layers:
        return
    rids = [rid for rid, _ in piped.layers]
    ssrcs = [ssrc for _, ssrc in piped.layers]
    if piped.source != "camera" or len(piped.layers) < 2:
        raise ValueError("only a camera is piped with layers, and then with two or more")
    if len(set(rids)) != len(rids) or not all(rids) or len(set(ssrcs)) != len(ssrcs):
        raise ValueError("each layer has a RID and an SSRC of its own")
    if not all(0 < ssrc < 1 << 32 for ssrc in ssrcs) or piped.ssrc != ssrcs[-1]:
        raise ValueError("a layered camera's SSRC is its top layer's")


def _piped_codec(piped: PipedProducer) -> str | None:
    if piped.kind != "video":
        return None
    return piped.codec or codecs.VP8


def _address(address: Sequence[Any]) -> Address:
    """(host, port) as the socket reports a sender: a JSON list works too."""
    host, port = address[0], int(address[1])
    return str(ipaddress.ip_address(host)), port


class PipeTransport(asyncio.DatagramProtocol):
    """One UDP socket per worker for every pipe of every room on it."""

    def __init__(self, worker: MediaWorker) -> None:
        self.worker = worker
        self.counters = worker.counters
        self.transport: CReadTransport | None = None
        self.address: Address = ("", 0)
        self._exports: dict[tuple[str, Address], _Export] = {}  # (producer id, to)
        self._exports_by_ssrc: dict[int, tuple[_Export, _Leg]] = {}
        self._sinks: dict[Address, Sink] = {}  # one per destination worker
        self._imports: dict[tuple[str, str], _Import] = {}  # (room name, producer id)
        self._imports_by_ssrc: dict[int, _Import] = {}
        # The same, for the C packet path, by the address they come from: a packet from
        # anywhere else finds no track. And as the socket's Reader routes them: by
        # address_key, (those tracks, the libsrtp session that decrypts them or 0, its owner).
        self._tracks: dict[Address, dict[int, Track]] = {}
        self._routes: dict[bytes, tuple[dict[int, Track], int, Any]] = {}
        self._packet_counters = worker.counters.packet_path
        self.secret = secrets.token_bytes(SECRET_BYTES)  # keys what this worker sends
        self._secured: dict[Address, _Secured] = {}  # workers of other nodes

    @classmethod
    async def open(cls, worker: MediaWorker, host: str = "127.0.0.1", port: int = 0) -> PipeTransport:
        """Bind the worker's pipe socket; the worker keeps it (``worker.pipe``)."""
        if worker.pipe is not None:
            raise RuntimeError("this worker has a pipe already")
        loop = asyncio.get_running_loop()
        family, _, _, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        pipe = cls(worker)
        transport = CReadTransport(sock, pipe)
        pipe.connection_made(transport)
        transport.reader.route(pipe._routes, pipe._packet_counters, pipe._after_receive,
                               adapter.SRTP_UNPROTECT)
        worker.pipe = pipe
        return pipe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(CReadTransport, transport)
        sock = transport.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # the kernel caps it; what it grants will do
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        self.address = _address(transport.get_extra_info("sockname"))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for something we sent (a worker gone): the packet is lost.
        self.counters.send_errors += 1

    # Origin side ----------------------------------------------------------------------

    def export_producer(self, producer: Producer, to: Sequence[Any]) -> PipedProducer:
        """Pipe a local producer to the worker at ``to`` (once: idempotent per pair), a
        layered camera with all its layers."""
        destination = _address(to)
        export = self._exports.get((producer.id, destination))
        if export is not None and export.rids != [layer.rid for layer in producer.layers]:
            # Its layers were learned after the first export, or renegotiated: the legs
            # of the old ones go, and it is piped anew (new SSRCs: the receiving worker
            # imports it again).
            self.stop_export(producer.id, destination)
            export = None
        if export is not None:
            if export.piped.codec != producer.codec:
                # Renegotiated to another codec (a mode switch): the pipe legs follow, and
                # the receiving worker re-imports it as a producer of that codec.
                for leg in export.legs:
                    leg.consumer.codec = producer.codec or codecs.VP8
                    leg.consumer.leg.started = True  # the pipe carries every packet as it is
                export.piped = replace(export.piped, codec=producer.codec)
            return replace(export.piped, sharing=producer.sharing)
        room, owner = self._local_owner(producer)
        if producer.payload_type is None:
            raise ValueError(f"producer {producer.id} is not negotiated yet")
        if self.transport is None:
            raise ConnectionError("the pipe is closed")
        legs: list[_Leg] = []
        for stream in producer.layers or [producer]:
            legs.append(self._pipe_leg(destination, stream, producer.payload_type,
                                       {leg.consumer.ssrc for leg in legs}))
        ssrcs = [leg.consumer.ssrc for leg in legs]
        piped = PipedProducer(
            producer.id, owner.id, owner.name, owner.role, producer.kind, producer.source, ssrcs[-1],
            producer.payload_type, producer.rtx_payload_type, producer.sharing, producer.codec,
            tuple((layer.rid or "", ssrc) for layer, ssrc in zip(producer.layers, ssrcs, strict=False)))
        export = _Export(room, producer, destination, piped, legs)
        self._exports[(producer.id, destination)] = export
        for leg in legs:
            self._exports_by_ssrc[leg.consumer.ssrc] = (export, leg)
        self.worker.start_ticking()  # the sender reports
        return export.piped

    def _pipe_leg(self, destination: Address, stream: Producer, payload_type: int,
                  taken: set[int]) -> _Leg:
        """A pipe leg for ``stream`` (the exported producer, or one of its layers), on an
        SSRC that is none of ``taken`` (its siblings')."""
        ssrc = self._new_ssrc()
        while ssrc in taken:
            ssrc = self._new_ssrc()
        name = f"pipe:{destination[0]}:{destination[1]}"
        consumer = Consumer(f"{name}<{stream.id}", stream.kind, name, self.counters,
                            codec=stream.codec or codecs.VP8)
        # A pipe leg shows one track for good (not a slot that is re-pointed).
        consumer.producer = stream
        consumer.leg.clock_rate = stream.clock_rate
        # Every packet from the first on, under the publisher's own sequence numbers
        # (seq_offset stays 0): the receiving worker's consumers wait for a keyframe and
        # re-base for themselves, and its NACKs name the numbers the history is keyed by.
        consumer.leg.started = True
        consumer.configure(ssrc, 0, payload_type, None, self._writer(destination),
                           self._sink(destination))
        # A layer's leg hangs on the layer itself, not on the camera's slots: it is no
        # subscriber here, and the layers it carries are no demand of this worker's
        # (the receiving worker reports its own: report_layers).
        stream.attach(consumer)
        return _Leg(stream, consumer)

    def stop_export(self, producer_id: str, to: Sequence[Any]) -> None:
        export = self._exports.pop((producer_id, _address(to)), None)
        if export is None:
            return
        for leg in export.legs:
            del self._exports_by_ssrc[leg.consumer.ssrc]
            leg.stream.detach(leg.consumer)
            leg.consumer.disconnect()
        if not any(other.to == export.to for other in self._exports.values()):
            self._sinks.pop(export.to).unbind()

    def described(self, producer_id: str, to: Sequence[Any]) -> PipedProducer | None:
        """What was said of this producer when it was piped to ``to`` (None: it is not)."""
        export = self._exports.get((producer_id, _address(to)))
        return None if export is None else export.piped

    def forget_producers(self, producers: Iterable[Producer]) -> None:
        """Their owner left: stop piping them anywhere."""
        ids = {producer.id for producer in producers}
        for producer_id, to in [key for key in self._exports if key[0] in ids]:
            self.stop_export(producer_id, to)

    def exports_of(self, producer: Producer) -> list[Address]:
        """The workers this producer is piped to."""
        return [to for producer_id, to in self._exports if producer_id == producer.id]

    def send_reports(self) -> None:
        """A sender report for each pipe leg (each RTCP interval, from the worker's tick)."""
        for export in list(self._exports.values()):
            for leg in export.legs:
                report = leg.consumer.sender_report()
                if report is not None and leg.consumer.write is not None:
                    try:
                        leg.consumer.write(report)
                    except (ConnectionError, OSError):
                        self.counters.send_errors += 1

    def _local_owner(self, producer: Producer) -> tuple[Room, Participant]:
        for room in self.worker.rooms.values():
            owner = room.participants.get(producer.owner_id)
            if owner is not None and owner.producers.get(producer.source) is producer:
                return room, owner
        # A producer piped in here stays where it came from: pipes are one hop.
        raise ValueError(f"producer {producer.id} is not a local participant's")

    def _new_ssrc(self) -> int:
        while True:
            ssrc = random.getrandbits(32)
            if ssrc and ssrc not in self._exports_by_ssrc and ssrc not in self._imports_by_ssrc:
                return ssrc

    def _sink(self, to: Address) -> Sink:
        sink = self._sinks.get(to)
        if sink is None:
            sink = self._sinks[to] = Sink()
            self._bind(sink, to)
        return sink

    def _bind(self, sink: Sink, to: Address) -> None:
        assert self.transport is not None
        fileno = self.transport.get_extra_info("socket").fileno()
        secured = self._secured.get(to)
        if secured is None:
            # protect = session = 0: plain RTP; no SRTP session to keep alive.
            sink.bind(fileno, to[0], to[1], 0, 0, None)
        else:
            adapter.point_sink(sink, fileno, to, secured.tx, (secured, secured.tx))

    def _writer(self, to: Address) -> Callable[[bytes], None]:
        def write(packet: bytes) -> None:
            if self.transport is None or self.transport.is_closing():
                raise ConnectionError("the pipe is closed")
            secured = self._secured.get(to)
            if secured is not None:
                packet = secured.tx.protect_rtcp(packet) if 192 <= packet[1] <= 223 \
                    else secured.tx.protect(packet)
            self.transport.sendto(packet, to)

        return write

    # Pipes to other nodes ----------------------------------------------------------------

    def secure(self, peer: Sequence[Any], peer_secret: bytes) -> None:
        """The pipe to and from the worker at ``peer`` (of another node) is SRTP, keyed
        by our secret one way and ``peer_secret`` the other (see the module's text)."""
        address = _address(peer)
        if len(peer_secret) != SECRET_BYTES:
            raise ValueError(f"a pipe secret is {SECRET_BYTES} bytes, not {len(peer_secret)}")
        known = self._secured.get(address)
        if known is not None and known.peer_secret == peer_secret:
            return
        # New, or the peer started again at the same address with a new secret.
        self._secured[address] = _Secured(
            peer_secret, _srtp(pipe_key(self.secret, peer_secret), outbound=True),
            _srtp(pipe_key(peer_secret, self.secret), outbound=False))
        sink = self._sinks.get(address)
        if sink is not None:
            self._bind(sink, address)
        self._route(address)

    def unsecure(self, peer: Sequence[Any]) -> None:
        """The worker at ``peer`` is no longer another node's (or gone): plain again."""
        address = _address(peer)
        if self._secured.pop(address, None) is not None and address in self._sinks:
            self._bind(self._sinks[address], address)
        self._route(address)

    def secured(self) -> list[Address]:
        return list(self._secured)

    # Receiving side -------------------------------------------------------------------

    def import_producer(self, room: Room, piped: PipedProducer, origin: Sequence[Any]) -> None:
        """Forward a producer piped in from the worker at ``origin`` in ``room``."""
        source_address = _address(origin)
        key = (room.name, piped.producer_id)
        known = self._imports.get(key)
        if known is not None:
            if (known.piped.ssrc == piped.ssrc and known.piped.layers == piped.layers
                    and known.origin == source_address and known.producer.codec == _piped_codec(piped)):
                self.update_import(room.name, piped.producer_id, piped.sharing)
                return
            self.stop_import(room.name, piped.producer_id)
        if self.worker.rooms.get(room.name) is not room:
            raise ValueError(f"room {room.name} is not open on this worker")
        if KINDS.get(piped.source) != piped.kind:
            raise ValueError(f"a {piped.kind} producer cannot be a {piped.source}")
        if piped.kind == "video" and piped.codec is not None and piped.codec not in codecs.VIDEO_CODECS:
            raise ValueError(f"unknown video codec {piped.codec!r}")
        if piped.owner_id in room.participants:
            raise ValueError(f"participant {piped.owner_id} is on this worker")
        _check_layers(piped)
        ssrcs = [ssrc for _, ssrc in piped.layers] or [piped.ssrc]
        if any(ssrc in self._imports_by_ssrc for ssrc in ssrcs):
            raise ValueError(f"SSRC {piped.ssrc} is piped in already")
        producer = Producer(piped.producer_id, piped.owner_id, piped.kind, piped.source, self.counters,
                            codec=_piped_codec(piped) or codecs.VP8)
        producer.payload_type = piped.payload_type
        producer.rtx_payload_type = piped.rtx_payload_type
        producer.ssrc = piped.ssrc
        producer.sharing = piped.sharing
        producer.feedback = self._writer(source_address)  # PLI, NACK and layer reports go up the pipe
        # A layered camera is layered here too: its subscribers here each get the layer
        # that fits them (mcu/room.py, _step_layers), as the origin's own do.
        producer.set_layers([rid for rid, _ in piped.layers])
        streams = producer.layers or [producer]
        imported = _Import(room, piped.owner_id, producer, source_address, piped)
        for stream, ssrc in zip(streams, ssrcs, strict=True):
            stream.ssrc = ssrc
            stream.nacks_upstream = True
            imported.streams[ssrc] = stream
            self._imports_by_ssrc[ssrc] = imported
            self._tracks.setdefault(source_address, {})[ssrc] = stream.track
        self._route(source_address)
        self._imports[key] = imported
        remote = room.remote_participants.get(piped.owner_id) or RemoteParticipant(
            piped.owner_id, piped.owner_name, piped.owner_role, source_address)
        room.add_remote_producer(remote, producer)
        self.worker.start_ticking()  # the room's control step: speakers, videos

    def report_layers(self, room_name: str, producer_id: str, layers: Iterable[int]) -> None:
        """Tell the origin of a piped layered camera which of its layers (indices, low to
        high) this worker's subscribers use now (each control step: a lost report costs
        nothing but a later one; the origin keeps a layer on while reports name it)."""
        imported = self._imports.get((room_name, producer_id))
        if imported is None or not imported.piped.layers or imported.producer.feedback is None:
            return
        piped = imported.piped.layers
        used = [piped[index][1] for index in sorted(set(layers)) if 0 <= index < len(piped)]
        data = b"".join(ssrc.to_bytes(4, "big") for ssrc in (piped[0][1], *used))
        try:
            imported.producer.feedback(rtp.rtcp_app(0, imported.producer.feedback_ssrc, LAYER_REPORT, data))
        except (ConnectionError, OSError):
            self.counters.send_errors += 1

    def update_import(self, room_name: str, producer_id: str, sharing: bool) -> None:
        """A piped screen producer's share starts or stops: subscribers get or lose it."""
        imported = self._imports.get((room_name, producer_id))
        if imported is None or imported.producer.source != "screen":
            return
        remote = imported.room.remote_participants.get(imported.remote_id)
        if remote is not None:
            imported.room.set_sharing(remote, sharing)

    def stop_import(self, room_name: str, producer_id: str) -> None:
        """Stop forwarding a piped producer; its remote participant goes with its last."""
        imported = self._drop_import((room_name, producer_id))
        if imported is not None:
            imported.room.remove_remote_producer(imported.remote_id, imported.producer)

    def forget_room(self, room: Room) -> None:
        """The room closes here: drop its pipes both ways."""
        for key in [key for key, imported in self._imports.items() if imported.room is room]:
            self._drop_import(key)
        for export in [export for export in self._exports.values() if export.room is room]:
            self.stop_export(export.producer.id, export.to)

    def _drop_import(self, key: tuple[str, str]) -> _Import | None:
        imported = self._imports.pop(key, None)
        if imported is not None:
            tracks = self._tracks[imported.origin]
            for ssrc, stream in imported.streams.items():
                del self._imports_by_ssrc[ssrc]
                del tracks[ssrc]
                stream.feedback = None
            if not tracks:
                del self._tracks[imported.origin]
                self._route(imported.origin)
            imported.producer.feedback = None
        return imported

    # The socket ---------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # Whatever arrives, nothing escapes into the event loop: drops are counted.
        try:
            source = (addr[0], addr[1])
            if len(data) < 8 or data[0] >> 6 != 2:
                self.counters.pipe_dropped += 1
                return
            rtcp = 192 <= data[1] <= 223  # RFC 5761
            secured = self._secured.get(source)
            if secured is not None:  # another node's worker: only what is authentic
                plain = secured.open(data)
                if plain is None:
                    self.counters.pipe_dropped += 1
                    return
                data = plain
            if rtcp:
                self._on_rtcp(data, source)
            else:
                self._on_rtp(data, source)
        except Exception:
            self.counters.handler_errors += 1
            logger.exception("pipe: a datagram from %s failed", addr)

    def _route(self, source: Address) -> None:
        """Keep the Reader's route for ``source`` as its tracks and keys are now."""
        key = address_key(*source)
        tracks = self._tracks.get(source)
        if tracks is None:
            self._routes.pop(key, None)
            return
        secured = self._secured.get(source)
        self._routes[key] = (tracks, adapter.srtp_session_address(secured.rx), secured) \
            if secured is not None else (tracks, 0, None)

    def _on_rtp(self, data: bytes, source: Address) -> None:
        """RTP that did not come the C way (that did not decrypt there, say)."""
        status = receive(self._tracks.get(source, NO_TRACKS), data, self._packet_counters)
        if status:
            self._after_receive(status, data)

    def _after_receive(self, status: int, data: bytes) -> None:
        """What receive() leaves to Python of a piped packet (the Reader calls it too)."""
        if status & (RECEIVED_MALFORMED | RECEIVED_UNKNOWN):
            if status & RECEIVED_UNKNOWN:  # C counts the others
                self.counters.packets_received += 1
                self.counters.packets_unroutable += 1
            self.counters.pipe_dropped += 1
            return
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self._imports_by_ssrc[ssrc].streams[ssrc]  # the producer, or one layer of it
        if status & RECEIVED_WANTS_KEYFRAME:
            stream.request_keyframe()  # of that layer: up the pipe on its SSRC
        if status & RECEIVED_SWITCHED and stream.group is not None:
            for consumer in stream.group.consumers:  # slots that moved to this layer now
                if consumer.target_layer is not None:
                    consumer.switched()
        if status & RECEIVED_TAPPED:
            stream.run_taps(data)

    def _on_rtcp(self, data: bytes, source: tuple[Any, Any]) -> None:
        try:
            packets = adapter.parse_rtcp(data)
            apps = rtp.rtcp_app_packets(data)  # aiortc's parser skips them
        except ValueError:
            self.counters.rtcp_malformed += 1
            self.counters.pipe_dropped += 1
            return
        for packet in packets:
            if not self._handle_rtcp(packet, source):
                self.counters.pipe_dropped += 1
        for _, _, name, payload in apps:
            if name != LAYER_REPORT or not self._on_layer_report(payload, source):
                self.counters.pipe_dropped += 1

    def _handle_rtcp(self, packet: Any, source: tuple[Any, Any]) -> bool:
        # Each kind is taken only from the worker at the other end of that pipe.
        if isinstance(packet, adapter.RtcpSr):
            imported = self._imports_by_ssrc.get(packet.ssrc)
            if imported is None or imported.origin != source:
                return False
            info = packet.sender_info
            imported.streams[packet.ssrc].on_sender_report(info.ntp_timestamp, info.rtp_timestamp)
            return True
        keyframe = isinstance(packet, adapter.RtcpPsfb) and packet.fmt in (rtp.RTCP_PSFB_PLI,
                                                                          rtp.RTCP_PSFB_FIR)
        nack = isinstance(packet, adapter.RtcpRtpfb) and packet.fmt == rtp.RTCP_RTPFB_NACK
        if not (keyframe or nack):
            return False
        found = self._exports_by_ssrc.get(packet.media_ssrc)
        if found is None or found[0].to != source:
            return False
        leg = found[1]
        if keyframe:
            self.counters.pipe_keyframe_requests += 1
            leg.stream.request_keyframe()  # throttled there, for every asker alike
        else:
            self.counters.pipe_nacks_received += 1
            leg.consumer.retransmit(adapter.nack_lost(packet))
        return True

    def _on_layer_report(self, payload: bytes, source: Address) -> bool:
        """Which layers of a camera we pipe the worker at ``source`` its subscribers use:
        each counts as wanted now, as a layer a slot here takes does (mcu/room.py,
        _request_layers pauses at the publisher the layers wanted nowhere for a while)."""
        if not payload or len(payload) % 4:
            return False
        ssrcs = [int.from_bytes(payload[i:i + 4], "big") for i in range(0, len(payload), 4)]
        found = self._exports_by_ssrc.get(ssrcs[0])
        if found is None or found[0].to != source or not found[0].producer.layers:
            return False
        export = found[0]
        camera = export.producer
        now = time.monotonic()
        for ssrc in ssrcs[1:]:
            used = self._exports_by_ssrc.get(ssrc)
            if used is None or used[0] is not export:
                continue
            index = camera.layer_index(used[1].stream.track)
            if index is not None:
                camera.layer_wanted_at[index] = now
        self.counters.pipe_layer_reports += 1
        return True

    def close(self) -> None:
        """Stop every pipe of this worker and close the socket."""
        for key in list(self._imports):
            self.stop_import(*key)
        for producer_id, to in list(self._exports):
            self.stop_export(producer_id, to)
        for sink in self._sinks.values():
            sink.unbind()
        self._sinks.clear()
        self._routes.clear()
        self._secured.clear()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self.worker.pipe is self:
            self.worker.pipe = None
