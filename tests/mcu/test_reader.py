"""Reader: a UDP socket read in C (mcu/_fanout.c): an ICE host socket's keyed media to an
Inbound, a pipe socket's RTP by the address it comes from.

Real UDP sockets on loopback and real libsrtp sessions; aioice's protocol is stood in
for by a recorder of what it would be handed (on_other), which is all the Reader calls.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from mcu._fanout import RECEIVED_UNKNOWN, Counters, Inbound, Reader, address_key, packet_time

from mcu import aiortc_adapter as adapter
from mcu import rtp
from tests.mcu.test_fanout import Link, audio_track, publisher_packet
from tests.mcu.test_inbound import RECEIVER_REPORT, Calls, Client, inbound_for

STUN_BINDING = bytes.fromhex("000100002112a442") + bytes(12)  # a header: STUN starts with 0b00
DTLS_RECORD = b"\x16\xfe\xfd" + bytes(10)


class Socket:
    """A bound socket its Reader reads, and a peer that sends to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.other: list[tuple[bytes, tuple[str, int]]] = []
        self.errors: list[BaseException] = []
        self.reader = Reader(self.sock.fileno(), self.on_other, self.errors.append)

    def on_other(self, data: bytes, addr: tuple[str, int]) -> None:
        self.other.append((data, addr))

    def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.peer.sendto(datagram, self.sock.getsockname())

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
        self.peer.close()


@pytest.fixture
def udp() -> Iterator[Socket]:
    made = Socket()
    yield made
    made.close()


@pytest.fixture
def link() -> Iterator[Link]:
    made = Link()
    yield made
    made.close()


def test_unkeyed_everything_goes_to_the_protocol_in_order_with_its_address(udp: Socket) -> None:
    datagrams = [STUN_BINDING, DTLS_RECORD] + [bytes([0x80, 96]) + bytes([n]) * 20 for n in range(10)]
    udp.send(*datagrams)
    time.sleep(0.05)
    udp.reader.readable()
    assert [d for d, _ in udp.other] == datagrams[:8]  # one recvmmsg: a batch of 8
    assert udp.reader.batches == 1
    udp.reader.readable()
    udp.reader.readable()  # nothing queued: nothing happens
    assert [d for d, _ in udp.other] == datagrams
    assert {addr for _, addr in udp.other} == {udp.peer.getsockname()}
    assert (udp.reader.datagrams, udp.reader.batches, udp.reader.dropped) == (12, 2, 0)
    assert udp.errors == [] and not udp.reader.keyed


def test_keyed_media_goes_to_the_inbound_and_the_rest_still_to_the_protocol(udp: Socket, link: Link) -> None:
    track, _ = audio_track(link)
    counters, calls, client = Counters(), Calls(), Client()
    inbound = inbound_for({0xABC: track}, counters, calls)
    key_errors: list[BaseException] = []
    udp.reader.key(inbound, client.session, client.rx, key_errors.append)
    assert udp.reader.keyed

    udp.send(client.rtp(publisher_packet(1, level=20)), STUN_BINDING, client.rtcp(RECEIVER_REPORT),
             DTLS_RECORD, client.rtp(publisher_packet(2, level=20)))
    time.sleep(0.05)
    udp.reader.readable()
    # Forwarded by the C path to the leg's subscriber, without a call into Python.
    assert [rtp.parse_rtp(link.receive()).sequence_number for _ in range(2)] == [10, 11]
    assert (counters.packets_received, counters.packets_forwarded) == (2, 2)
    assert calls.rtcp == [RECEIVER_REPORT]  # decrypted: what the Inbound leaves to Python
    assert [d for d, _ in udp.other] == [STUN_BINDING, DTLS_RECORD]

    # A forgery is dropped by libsrtp, not handed to anyone.
    forged = bytearray(client.rtp(publisher_packet(3)))
    forged[-1] ^= 1
    udp.send(bytes(forged))
    time.sleep(0.02)
    udp.reader.readable()
    assert counters.packets_received == 2 and len(udp.other) == 2 and key_errors == []

    udp.reader.key(None, 0, None, None)  # unkeyed: media goes to the protocol again
    media = client.rtp(publisher_packet(4))
    udp.send(media)
    time.sleep(0.02)
    udp.reader.readable()
    assert not udp.reader.keyed and udp.other[-1][0] == media and counters.packets_received == 2


def test_a_datagram_too_large_for_a_slot_is_dropped_and_the_next_one_read(udp: Socket) -> None:
    udp.send(bytes([0x80]) * 3000, STUN_BINDING)
    time.sleep(0.05)
    udp.reader.readable()
    assert [d for d, _ in udp.other] == [STUN_BINDING]
    assert udp.reader.dropped == 1


def test_what_handlers_raise_goes_to_on_error_and_reading_goes_on(udp: Socket, link: Link) -> None:
    failures = iter([RuntimeError("protocol")])

    def on_other(data: bytes, addr: tuple[str, int]) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        udp.other.append((data, addr))

    udp.reader = Reader(udp.sock.fileno(), on_other, udp.errors.append)
    udp.send(STUN_BINDING, DTLS_RECORD)
    time.sleep(0.05)
    udp.reader.readable()
    assert [str(e) for e in udp.errors] == ["protocol"] and [d for d, _ in udp.other] == [DTLS_RECORD]

    # The Inbound's handlers: to the on_error given with the key.
    track, _ = audio_track(link)
    client, key_errors = Client(), []

    def fails(*args: object) -> None:
        raise ValueError("handler")

    inbound = Inbound({0xABC: track}, Counters(), None, fails, fails, fails)
    inbound.set_unprotect(adapter._SRTP_UNPROTECT, adapter._SRTP_UNPROTECT_RTCP)
    udp.reader.key(inbound, client.session, client.rx, key_errors.append)
    udp.send(client.rtcp(RECEIVER_REPORT), client.rtp(publisher_packet(1)))
    time.sleep(0.05)
    udp.reader.readable()
    assert [str(e) for e in key_errors] == ["handler"]
    assert link.receive() is not None  # the packet after the failure was still forwarded


def test_a_handler_that_unkeys_or_closes_the_reader_mid_batch(udp: Socket, link: Link) -> None:
    track, _ = audio_track(link)
    client = Client()

    def on_rtcp(packet: bytes) -> None:
        udp.reader.key(None, 0, None, None)  # the last reference to the Inbound goes
        udp.reader.close()

    inbound = Inbound({0xABC: track}, Counters(), None, on_rtcp, on_rtcp, on_rtcp)
    inbound.set_unprotect(adapter._SRTP_UNPROTECT, adapter._SRTP_UNPROTECT_RTCP)
    udp.reader.key(inbound, client.session, client.rx, udp.errors.append)
    del inbound
    udp.send(client.rtcp(RECEIVER_REPORT), client.rtp(publisher_packet(1)), STUN_BINDING)
    time.sleep(0.05)
    udp.reader.readable()
    # The rest of the batch read before the close: the media to the protocol now.
    assert udp.reader.closed and not udp.reader.keyed and udp.errors == []
    assert len(udp.other) == 2
    udp.reader.readable()  # closed: reads nothing, raises nothing


def test_arrival_times_are_kept_per_datagram_once_asked(udp: Socket) -> None:
    seen: list[float] = []
    udp.reader = Reader(udp.sock.fileno(), lambda data, addr: seen.append(udp.reader.arrival),
                        udp.errors.append)
    udp.send(STUN_BINDING)
    time.sleep(0.02)
    udp.reader.readable()
    assert seen == [0.0]  # not asked for
    udp.reader.stamp_arrivals()
    # The kernel may turn its receive clock on a little later (the first datagram after
    # may be stamped when it is read): one ahead, as arrival_clock's first call is.
    udp.send(STUN_BINDING)
    time.sleep(0.02)
    udp.reader.readable()
    sent = time.time()
    udp.send(STUN_BINDING)
    time.sleep(0.05)
    udp.send(STUN_BINDING)
    time.sleep(0.02)
    udp.reader.readable()  # both in one batch, each with its own time
    assert len(seen) == 4 and sent <= seen[2] <= seen[3] - 0.04  # the first one's own time


def test_drain_reads_everything_queued_and_says_how_much(udp: Socket) -> None:
    datagrams = [bytes([0x80, 96]) + bytes([n]) * 20 for n in range(21)]
    udp.send(*datagrams)
    time.sleep(0.05)
    assert udp.reader.drain() == 21  # three batches: 8, 8 and 5
    assert [d for d, _ in udp.other] == datagrams and udp.reader.batches == 3
    assert udp.reader.drain() == 0
    udp.reader.close()
    assert udp.reader.drain() == 0  # closed: reads nothing, raises nothing


def test_a_drain_stops_after_32_batches_and_the_next_reads_the_rest(udp: Socket) -> None:
    udp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    udp.send(*[STUN_BINDING] * 300)
    time.sleep(0.1)
    assert udp.reader.drain() == 256
    assert udp.reader.drain() == 300 - 256


@pytest.mark.parametrize("stamped", [True, False])
def test_media_read_late_is_timed_when_the_kernel_received_it(udp: Socket, link: Link, stamped: bool) -> None:
    """A socket read on a tick (drain) holds its packets up to 20 ms: with the kernel's
    receive times the receive path times each packet by them (the track's last packet,
    transport-cc arrivals), without it by the moment it was read."""
    track, _ = audio_track(link)
    client = Client()
    udp.reader.key(inbound_for({0xABC: track}, Counters(), Calls()), client.session, client.rx,
                   udp.errors.append)
    if stamped:
        udp.reader.stamp_arrivals()
        udp.send(STUN_BINDING)  # the kernel may stamp the first datagram after when read
        time.sleep(0.02)
        udp.reader.drain()
    sent = time.monotonic()
    udp.send(client.rtp(publisher_packet(1, level=20)))
    time.sleep(0.15)
    read = time.monotonic()
    assert udp.reader.drain() == 1
    assert link.receive() is not None and udp.errors == []
    if stamped:
        assert sent - 0.005 <= track.last_packet_at <= sent + 0.05
    else:
        assert track.last_packet_at >= read


def test_python_handlers_time_a_datagram_read_late_by_the_kernel(udp: Socket) -> None:
    """packet_time(): what Python times a received packet by (an RTCP round trip, a
    sender report's arrival) is the kernel's receive time while a stamped Reader hands it
    on, and now outside any read."""
    times: list[float] = []
    udp.reader = Reader(udp.sock.fileno(), lambda data, addr: times.append(packet_time()),
                        udp.errors.append)
    udp.reader.stamp_arrivals()
    udp.send(STUN_BINDING)  # the kernel may stamp the first datagram after when read
    time.sleep(0.02)
    udp.reader.drain()
    sent = time.monotonic()
    udp.send(STUN_BINDING)
    time.sleep(0.15)
    read = time.monotonic()
    assert udp.reader.drain() == 1
    assert sent - 0.005 <= times[-1] <= sent + 0.05 < read
    assert packet_time() >= read  # no datagram in hand: now


def test_wrong_arguments_are_refused(udp: Socket) -> None:
    with pytest.raises(TypeError):
        Reader(udp.sock.fileno(), "not callable", print)
    with pytest.raises(OSError):
        Reader(10_000, print, print)  # no such descriptor
    with pytest.raises(TypeError):
        udp.reader.key("inbound", 1, None, print)
    with pytest.raises(TypeError):  # not told libsrtp's functions
        udp.reader.key(Inbound({}, Counters(), None, print, print, print), 1, None, print)
    client = Client()
    inbound = inbound_for({}, Counters(), Calls())
    with pytest.raises(ValueError):
        udp.reader.key(inbound, 0, client.rx, print)
    with pytest.raises(TypeError):
        udp.reader.key(inbound, client.session, client.rx, "not callable")
    assert not udp.reader.keyed


# Routes: a worker's pipe socket ------------------------------------------------------------


def routed(udp: Socket, routes: dict, counters: Counters) -> list[tuple[int, bytes]]:
    """Route ``udp``'s Reader by ``routes``; what after_receive is handed."""
    after: list[tuple[int, bytes]] = []
    udp.reader.route(routes, counters, lambda status, packet: after.append((status, packet)),
                     adapter.SRTP_UNPROTECT)
    return after


def test_rtp_from_a_routed_sender_is_received_in_c_and_the_rest_goes_to_python(udp: Socket,
                                                                               link: Link) -> None:
    track, _ = audio_track(link)
    counters = Counters()
    host, port = udp.peer.getsockname()
    routes = {address_key(host, port): ({0xABC: track}, 0, None)}
    after = routed(udp, routes, counters)
    unknown = publisher_packet(5, ssrc=0xDEF)
    udp.send(publisher_packet(1), publisher_packet(2), RECEIVER_REPORT, unknown, b"\x80")
    time.sleep(0.05)
    udp.reader.readable()
    # Forwarded in C, no Python; an unknown SSRC's status to after_receive; RTCP and a
    # datagram too short for RTP to the protocol.
    assert [rtp.parse_rtp(link.receive()).sequence_number for _ in range(2)] == [10, 11]
    assert counters.packets_forwarded == 2 and track.packets == 2
    assert after == [(RECEIVED_UNKNOWN, unknown)]
    assert [d for d, _ in udp.other] == [RECEIVER_REPORT, b"\x80"]
    assert udp.reader.routed == 3
    # Another sender (another port) has no route: its RTP goes to the protocol.
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stranger.sendto(publisher_packet(3), udp.sock.getsockname())
    stranger.close()
    # A route taken away (the tracks piped no more): to the protocol too.
    del routes[address_key(host, port)]
    udp.send(publisher_packet(4))
    time.sleep(0.05)
    udp.reader.readable()
    assert [d for d, _ in udp.other][2:] == [publisher_packet(3), publisher_packet(4)]
    assert link.nothing_waiting() and udp.errors == []


def test_a_route_with_srtp_decrypts_and_what_is_not_authentic_goes_to_python(udp: Socket,
                                                                             link: Link) -> None:
    track, _ = audio_track(link)
    counters = Counters()
    host, port = udp.peer.getsockname()
    sender = Link()  # its tx protects what the peer sends; its rx is the route's session
    try:
        routes = {address_key(host, port): ({0xABC: track}, adapter.srtp_session_address(sender.rx),
                                            sender)}
        after = routed(udp, routes, counters)
        good = [sender.tx.protect(publisher_packet(seq)) for seq in (1, 2)]
        forged = publisher_packet(3)  # plain, from the routed address: not authentic
        udp.send(good[0], forged, good[1], good[0])  # and a replay
        time.sleep(0.05)
        udp.reader.readable()
        assert [rtp.parse_rtp(link.receive()).sequence_number for _ in range(2)] == [10, 11]
        assert after == [] and counters.packets_received == 2
        assert [d for d, _ in udp.other] == [forged, good[0]]  # Python counts them dropped
    finally:
        sender.close()


def test_a_handler_that_fails_or_drops_the_routes_does_not_stop_the_batch(udp: Socket, link: Link) -> None:
    track, _ = audio_track(link)
    counters = Counters()
    host, port = udp.peer.getsockname()
    routes = {address_key(host, port): ({0xABC: track}, 0, None)}
    seen: list[int] = []

    def after_receive(status: int, packet: bytes) -> None:
        seen.append(status)
        routes.clear()  # the sender's tracks are no longer piped here
        raise RuntimeError("handler failed")

    udp.reader.route(routes, counters, after_receive, adapter.SRTP_UNPROTECT)
    udp.send(publisher_packet(1, ssrc=0x999), publisher_packet(2))
    time.sleep(0.05)
    udp.reader.readable()
    assert seen == [RECEIVED_UNKNOWN]
    assert [type(e) for e in udp.errors] == [RuntimeError]
    assert [d for d, _ in udp.other] == [publisher_packet(2)]  # no route left for it


def test_routes_take_only_what_they_are_made_of() -> None:
    assert address_key("127.0.0.1", 5000) == bytes([127, 0, 0, 1]) + (5000).to_bytes(2, "big")
    assert address_key("::1", 1) == socket.inet_pton(socket.AF_INET6, "::1") + b"\x00\x01"
    for bad in (("localhost", 1), ("127.0.0.1", 70000)):
        with pytest.raises(ValueError):
            address_key(*bad)
    reader = Reader(0, print, print)
    try:
        with pytest.raises(TypeError):
            reader.route([], Counters(), print, adapter.SRTP_UNPROTECT)
        with pytest.raises(TypeError):
            reader.route({}, Counters(), None, adapter.SRTP_UNPROTECT)
        with pytest.raises(ValueError):
            reader.route({}, Counters(), print, 0)
    finally:
        reader.close()
