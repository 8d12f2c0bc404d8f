"""The C packet path (mcu/_fanout.c): real SRTP sessions and real UDP sockets on loopback."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator

import pylibsrtp
import pytest
from mcu._fanout import (
    HISTORY_SIZE,
    MAX_PACKET,
    RECEIVED_MALFORMED,
    RECEIVED_TAPPED,
    RECEIVED_UNKNOWN,
    RECEIVED_WANTS_KEYFRAME,
    Counters,
    Leg,
    Sink,
    Track,
    forward,
    receive,
)

from mcu import aiortc_adapter as adapter
from mcu import rtp


class Link:
    """A sending socket with an outbound SRTP session, and a receiver that decrypts."""

    def __init__(self) -> None:
        key = os.urandom(30)
        self.tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self.rx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.settimeout(2)
        self.sink = Sink()
        adapter.point_sink(self.sink, self.sender.fileno(), self.receiver.getsockname(), self.tx,
                           (None, self.tx))

    def receive(self) -> bytes:
        return self.rx.unprotect(self.receiver.recv(2048))

    def nothing_waiting(self) -> bool:
        self.receiver.setblocking(False)
        try:
            self.receiver.recv(2048)
        except BlockingIOError:
            return True
        finally:
            self.receiver.settimeout(2)
        return False

    def close(self) -> None:
        self.sink.unbind()
        self.sender.close()
        self.receiver.close()


@pytest.fixture
def link() -> Iterator[Link]:
    made = Link()
    yield made
    made.close()


@pytest.fixture
def pipe() -> Iterator[socket.socket]:
    """The socket of another media worker's pipe: plain RTP and RTCP arrive there."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    yield receiver
    receiver.close()


def leg_to(link: Link, *, video: bool, ssrc: int, payload_type: int, next_seq: int,
           ts_offset: int) -> Leg:
    leg = Leg(video=video)
    leg.ssrc, leg.payload_type, leg.next_seq, leg.ts_offset = ssrc, payload_type, next_seq, ts_offset
    leg.sink = link.sink
    return leg


def send(legs: tuple[Leg, ...], payload: bytes, seq: int, timestamp: int, *, marker: bool = False,
         keyframe: bool = False) -> tuple[int, int, int, bool]:
    return forward(legs, b"", payload, 0, seq, timestamp, marker, keyframe, False, len(payload))


def test_each_leg_gets_its_own_header_and_the_same_payload(link: Link) -> None:
    first = leg_to(link, video=False, ssrc=0x11111111, payload_type=111, next_seq=500, ts_offset=1000)
    second = leg_to(link, video=False, ssrc=0x22222222, payload_type=109, next_seq=65535,
                    ts_offset=0xFFFFFFF0)
    for index, seq in enumerate((7, 8, 9)):
        result = send((first, second), b"opus-%d" % index, seq, 960 * index, marker=index == 0)
        assert result == (2, 2 * (12 + 6), 0, False)
    received = [rtp.parse_rtp(link.receive()) for _ in range(6)]
    to_first = [v for v in received if v.ssrc == 0x11111111]
    to_second = [v for v in received if v.ssrc == 0x22222222]
    assert [v.sequence_number for v in to_first] == [500, 501, 502]
    assert [v.sequence_number for v in to_second] == [65535, 0, 1]  # wraps
    assert [v.timestamp for v in to_first] == [1000, 1960, 2920]
    assert [v.timestamp for v in to_second] == [0xFFFFFFF0, 960 - 16, 1920 - 16]
    assert {v.payload_type for v in to_first} == {111} and {v.payload_type for v in to_second} == {109}
    assert [v.marker for v in to_first] == [True, False, False]
    assert first.packets == 3 and first.octets == 18 and first.next_seq == 503
    assert second.last_ts == (1920 - 16) & 0xFFFFFFFF


def test_the_extension_block_and_the_payload_are_joined_behind_the_header(link: Link) -> None:
    leg = leg_to(link, video=False, ssrc=9, payload_type=111, next_seq=0, ts_offset=0)
    level = rtp.one_byte_extension_block([(rtp.EXT_AUDIO_LEVEL, b"\x85")])
    publisher_packet = b"H" * 12 + b"opus" + b"\x00\x00\x03"  # three bytes of padding
    assert forward((leg,), level, publisher_packet, 12, 1, 1, False, False, True, 4) == (1, 27, 0, False)
    plain = link.receive()
    view = rtp.parse_rtp(plain)
    assert view.extensions == {rtp.EXT_AUDIO_LEVEL: b"\x85"}
    assert plain[view.payload_start:view.payload_end] == b"opus" and plain[0] & 0x30 == 0x30
    assert leg.octets == 4


def test_received_packets_are_decrypted_once_and_forgeries_dropped(link: Link) -> None:
    packet = rtp.rtp_header(96, False, 1, 1, 77, False) + b"media"
    protected = link.tx.protect(packet)
    assert adapter.unprotect_with(link.rx, protected) == packet
    assert adapter.unprotect_with(link.rx, protected) is None  # a replay
    forged = bytearray(link.tx.protect(rtp.rtp_header(96, False, 2, 1, 77, False) + b"media"))
    forged[-1] ^= 1
    assert adapter.unprotect_with(link.rx, bytes(forged)) is None
    assert adapter.unprotect_with(link.rx, bytes(4000)) is None  # longer than any packet
    report = rtp.rtcp_receiver_report(5, [])
    assert adapter.unprotect_with(link.rx, link.tx.protect_rtcp(report)) == report


def test_video_waits_for_a_keyframe_and_keeps_what_it_sent(link: Link) -> None:
    leg = leg_to(link, video=True, ssrc=0x33, payload_type=96, next_seq=42, ts_offset=0)
    assert send((leg,), b"delta", 1000, 3000) == (0, 0, 0, True)
    assert link.nothing_waiting()
    assert send((leg,), b"key", 1001, 6000, keyframe=True) == (1, 15, 0, False)
    assert send((leg,), b"next", 1002, 6000) == (1, 16, 0, False)
    first, second = link.receive(), link.receive()
    assert rtp.parse_rtp(first).sequence_number == 42
    assert leg.sent(42) == first and leg.sent(43) == second
    assert leg.sent(44) is None and leg.sent(42 + HISTORY_SIZE) is None  # same slot, other packet
    with pytest.raises(ValueError):
        leg.sent(70000)


def test_legs_resend_with_their_own_header_from_one_kept_copy(link: Link) -> None:
    # One received packet out on two legs: each leg's history answers with exactly what
    # it sent (its SSRC, payload type, numbers), though the packet is kept only once.
    first = leg_to(link, video=True, ssrc=0xA1, payload_type=96, next_seq=10, ts_offset=5)
    second = leg_to(link, video=True, ssrc=0xB2, payload_type=100, next_seq=60000, ts_offset=7)
    extension = rtp.one_byte_extension_block([(rtp.EXT_ABS_SEND_TIME, b"\x01\x02\x03")])
    for seq, payload in ((300, b"key"), (301, b"frame-1"), (302, b"frame-2")):
        result = forward((first, second), extension, payload, 0, seq, 9000, seq == 302,
                         seq == 300, False, len(payload))
        assert result[0] == 2
    sent = [link.receive() for _ in range(6)]
    for leg in (first, second):
        mine = [p for p in sent if rtp.parse_rtp(p).ssrc == leg.ssrc]
        numbers = [rtp.parse_rtp(p).sequence_number for p in mine]
        assert [leg.sent(n) for n in numbers] == mine
        assert rtp.parse_rtp(leg.sent(numbers[-1])).marker


def test_paused_and_unconnected_legs_send_nothing(link: Link) -> None:
    paused = leg_to(link, video=False, ssrc=1, payload_type=111, next_seq=0, ts_offset=0)
    paused.paused = True
    detached = leg_to(link, video=False, ssrc=2, payload_type=111, next_seq=0, ts_offset=0)
    detached.sink = None
    unbound = leg_to(link, video=False, ssrc=3, payload_type=111, next_seq=0, ts_offset=0)
    unbound.sink = Sink()
    assert send((paused, detached, unbound), b"x", 1, 1) == (0, 0, 1, False)
    assert unbound.sink.send_errors == 1 and unbound.packets == 0
    assert link.nothing_waiting()


def test_a_sink_sends_from_its_own_copy_of_the_socket_until_unbound(link: Link) -> None:
    leg = leg_to(link, video=False, ssrc=5, payload_type=111, next_seq=0, ts_offset=0)
    port = link.sender.getsockname()[1]
    link.sender.close()  # the ICE transport closing under us
    assert send((leg,), b"still", 1, 1)[0] == 1
    data, source = link.receiver.recvfrom(2048)
    assert source[1] == port and link.rx.unprotect(data).endswith(b"still")
    link.sink.unbind()
    assert not link.sink.bound and link.sink.owner is None
    assert send((leg,), b"gone", 2, 2) == (0, 0, 1, False)


def test_bad_arguments_are_refused_before_anything_is_sent(link: Link) -> None:
    leg = leg_to(link, video=False, ssrc=5, payload_type=111, next_seq=0, ts_offset=0)
    with pytest.raises(ValueError, match="too long"):
        send((leg,), bytes(MAX_PACKET), 1, 1)
    with pytest.raises(ValueError, match="outside"):
        forward((leg,), b"", b"abc", 4, 1, 1, False, False, False, 0)
    with pytest.raises(TypeError):
        send((leg, "not a leg"), b"x", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        send((leg,), b"x", 70000, 1)
    with pytest.raises(TypeError):
        leg.sink = "somewhere"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="not an IP address"):
        Sink().bind(link.receiver.fileno(), "example.org", 5000, 1, 1, None)
    with pytest.raises(ValueError, match="owner"):
        adapter.point_sink(Sink(), link.receiver.fileno(), ("127.0.0.1", 9), link.tx, (None, link.rx))
    assert link.nothing_waiting() and leg.packets == 0


def test_a_sink_bound_without_srtp_sends_plain_rtp_beside_protected_legs(
        link: Link, pipe: socket.socket) -> None:
    # The pipe to another media worker: the same leg machinery, plain RTP on the wire.
    plain_sink = Sink()
    try:
        plain_sink.bind(link.sender.fileno(), *pipe.getsockname(), 0, 0, None)
        assert plain_sink.bound and plain_sink.plain and not link.sink.plain
        track = Track(video=True)
        track.payload_type = 96
        to_worker = Leg(video=True)
        to_worker.ssrc, to_worker.payload_type, to_worker.sink = 0x77, 96, plain_sink
        # Started from the first packet: no keyframe gate, the track's own numbers.
        to_worker.started = True
        to_participant = leg_to(link, video=True, ssrc=0x88, payload_type=100, next_seq=9, ts_offset=0)
        track.legs = (to_worker, to_participant)
        counters = Counters()
        delta = rtp.rtp_header(96, True, 4000, 90, 0xABC, False) + b"\x01delta"
        assert receive({0xABC: track}, delta, counters) == RECEIVED_WANTS_KEYFRAME
        data = pipe.recv(2048)
        view = rtp.parse_rtp(data)
        assert (view.ssrc, view.sequence_number, view.payload_type) == (0x77, 4000, 96)
        assert data[view.payload_start:view.payload_end] == b"\x01delta"  # not encrypted
        assert to_worker.sent(4000) == data and to_worker.seq_offset == 0
        assert link.nothing_waiting() and counters.packets_forwarded == 1
        assert to_participant.seq_offset == 0 and not to_participant.started
        keyframe = rtp.rtp_header(96, True, 4001, 180, 0xABC, False) + b"\x10\x00key"
        assert receive({0xABC: track}, keyframe, counters) == 0
        assert rtp.parse_rtp(pipe.recv(2048)).sequence_number == 4001
        assert rtp.parse_rtp(link.receive()).sequence_number == 9
        assert to_participant.seq_offset == (9 - 4001) & 0xFFFF
        with pytest.raises(ValueError, match="both"):
            Sink().bind(link.sender.fileno(), "127.0.0.1", 9, 0, 1, None)
        plain_sink.unbind()
        assert not plain_sink.plain and not plain_sink.bound
    finally:
        plain_sink.unbind()


# receive(): the whole packet path of one received packet --------------------------------


def publisher_packet(seq: int, *, ssrc: int = 0xABC, payload_type: int = 111, level: int | None = None,
                     payload: bytes = b"opus", padding: int = 0) -> bytes:
    elements = [(rtp.EXT_MID, b"0")]
    if level is not None:
        elements.append((rtp.EXT_AUDIO_LEVEL, bytes([level])))
    extension = rtp.one_byte_extension_block(elements)
    header = rtp.rtp_header(payload_type, False, seq, seq * 960, ssrc, True, padding > 0)
    return header + extension + payload + (bytes(padding - 1) + bytes([padding]) if padding else b"")


def audio_track(link: Link) -> tuple[Track, Leg]:
    track = Track(video=False)
    track.payload_type = 111
    leg = leg_to(link, video=False, ssrc=0x55, payload_type=109, next_seq=10, ts_offset=0)
    track.legs = (leg,)
    return track, leg


def test_a_received_packet_is_counted_and_forwarded_with_only_its_audio_level(link: Link) -> None:
    track, _ = audio_track(link)
    counters = Counters()
    for seq in (65535, 0, 1):  # wraps: one cycle
        assert receive({0xABC: track}, publisher_packet(seq, level=0x80 | 20, padding=3), counters) == 0
    assert (counters.packets_received, counters.packets_forwarded, counters.send_errors) == (3, 3, 0)
    assert (track.packets, track.octets, track.base_seq, track.highest_seq) == (3, 12, 65535, 1)
    assert track.cycles == 65536
    assert (track.activity_sum, track.activity_packets) == (3 * (127 - 20), 3)
    views = [rtp.parse_rtp(link.receive()) for _ in range(3)]
    assert [v.sequence_number for v in views] == [10, 11, 12] and {v.payload_type for v in views} == {109}
    assert views[0].extensions == {rtp.EXT_AUDIO_LEVEL: bytes([0x80 | 20])}  # the mid is not passed on
    assert counters.bytes_forwarded == 3 * (12 + 8 + 4 + 3)


def test_bad_unknown_and_stray_packets_are_dropped_and_counted(link: Link) -> None:
    track, _ = audio_track(link)
    counters = Counters()
    tracks = {0xABC: track}
    good = publisher_packet(1)
    zero_padding = bytes([good[0] | 0x20]) + good[1:-1] + b"\x00"
    cut_element = good[:12] + b"\xbe\xde\x00\x01\x13\x00\x00\x00"  # says 4 bytes, has 3
    for bad in (b"", good[:11], b"\x40" + good[1:], b"\x8f" + good[1:20],  # short, version 1, CSRCs
                good[:13], good[:12] + b"\xbe\xde\x00\x09", zero_padding, cut_element):
        assert receive(tracks, bytes(bad), counters) == RECEIVED_MALFORMED
        with pytest.raises(rtp.MalformedPacket):  # the Python parser (the mixer's) agrees
            rtp.parse_rtp(bytes(bad))
    padded = bytearray(publisher_packet(2, padding=2))
    padded[-1] = 200  # more padding than packet
    assert receive(tracks, bytes(padded), counters) == RECEIVED_MALFORMED
    assert counters.packets_malformed == 9
    assert receive(tracks, publisher_packet(3, ssrc=0xDEF), counters) == RECEIVED_UNKNOWN
    assert receive(tracks, publisher_packet(4, payload_type=112), counters) == 0  # RTX, say
    assert counters.packets_unroutable == 1 and counters.packets_received == 10  # the unknown is the caller's
    assert track.packets == 0 and link.nothing_waiting()
    with pytest.raises(TypeError):
        receive({0xABC: "not a track"}, good, counters)


def test_muted_tapped_and_video_tracks_tell_the_caller_what_is_left(link: Link) -> None:
    track, leg = audio_track(link)
    counters = Counters()
    track.muted = track.tapped = True
    assert receive({0xABC: track}, publisher_packet(1), counters) == 0  # not for the taps either
    assert track.packets == 1 and leg.packets == 0  # counted, not forwarded
    track.muted, track.tapped = False, True
    assert receive({0xABC: track}, publisher_packet(2), counters) == RECEIVED_TAPPED
    assert leg.packets == 1 and rtp.parse_rtp(link.receive()).ssrc == 0x55

    video = Track(video=True)
    video.payload_type = 96
    video_leg = leg_to(link, video=True, ssrc=0x66, payload_type=96, next_seq=0, ts_offset=0)
    video.legs = (video_leg,)
    delta, key = b"\x90\x80\x05\x01", b"\x90\x80\x06\x00"  # VP8: S bit, picture ID; P bit set / clear
    flags = receive({7: video}, publisher_packet(1, ssrc=7, payload_type=96, payload=delta), counters)
    assert flags == RECEIVED_WANTS_KEYFRAME and video_leg.packets == 0
    assert receive({7: video}, publisher_packet(2, ssrc=7, payload_type=96, payload=key), counters) == 0
    plain = link.receive()
    view = rtp.parse_rtp(plain)
    assert rtp.EXT_ABS_SEND_TIME in view.extensions and plain.endswith(key) and video_leg.sent(0) == plain


def test_a_gated_track_keeps_quiet_packets_from_the_taps_but_forwards_them(link: Link) -> None:
    # The mixer's gate on a source it does not play: below -70 dBov, no Python at all.
    track, leg = audio_track(link)
    counters = Counters()
    track.tapped = True
    assert (track.tap_level_limit, track.held_level) == (127, 128)  # no gate: all tapped
    assert receive({0xABC: track}, publisher_packet(1, level=127), counters) == RECEIVED_TAPPED
    track.tap_level_limit = 70
    for seq, level in ((2, 127), (3, 0x80 | 90), (4, 110)):  # the V bit does not count
        assert receive({0xABC: track}, publisher_packet(seq, level=level), counters) == 0
    assert track.held_level == 90  # the loudest held back
    assert receive({0xABC: track}, publisher_packet(5, level=70), counters) == RECEIVED_TAPPED
    assert receive({0xABC: track}, publisher_packet(6, level=0x80 | 12), counters) == RECEIVED_TAPPED
    assert receive({0xABC: track}, publisher_packet(7), counters) == RECEIVED_TAPPED  # no level
    assert track.held_level == 90  # passed packets are not "held"
    # Every packet was still counted and forwarded to the subscribers' legs.
    assert track.packets == leg.packets == counters.packets_forwarded == 7
    assert track.activity_packets == 6
    track.tapped = False  # no taps: nothing to report, nothing held
    track.held_level = 128
    assert receive({0xABC: track}, publisher_packet(8, level=127), counters) == 0
    assert track.held_level == 128


def test_garbage_never_crashes_the_packet_path(link: Link) -> None:
    """Mutated and random packets: each is dropped or forwarded, C and Python agree on
    which are malformed, and none passes as authentic SRTP."""
    rng = random.Random(7)
    track, _ = audio_track(link)
    video = Track(video=True)
    video.payload_type = 96
    video.legs = (leg_to(link, video=True, ssrc=0x77, payload_type=96, next_seq=0, ts_offset=0),)
    tracks = {0xABC: track, 7: video}
    counters = Counters()
    seeds = [publisher_packet(1, level=5, padding=4),
             publisher_packet(2, ssrc=7, payload_type=96, payload=b"\x90\x80\x06\x00" + bytes(40))]
    for round_ in range(3000):
        packet = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
        if round_ % 5 == 0:
            packet = packet[:rng.randrange(len(packet) + 1)]
        if round_ % 7 == 0:
            packet = bytearray(rng.randbytes(rng.randrange(1600)))
        status = receive(tracks, bytes(packet), counters)
        assert status in (0, RECEIVED_MALFORMED, RECEIVED_UNKNOWN, RECEIVED_WANTS_KEYFRAME)
        try:
            rtp.parse_rtp(bytes(packet))
        except rtp.MalformedPacket:
            assert status == RECEIVED_MALFORMED
        else:
            assert status != RECEIVED_MALFORMED
        assert adapter.unprotect_with(link.rx, bytes(packet)) is None  # never authentic
    assert counters.packets_malformed > 100 and counters.packets_forwarded > 0


# transport-cc ------------------------------------------------------------------------


def test_a_sink_with_transport_cc_stamps_each_packet_with_the_connections_next_number(link: Link) -> None:
    # Two legs on one connection share its number space; the count wraps at 65535.
    link.sink.transport_cc_id = 5
    link.sink.transport_seq = 65534
    audio = leg_to(link, video=False, ssrc=0xA, payload_type=111, next_seq=0, ts_offset=0)
    video = leg_to(link, video=True, ssrc=0xB, payload_type=96, next_seq=0, ts_offset=0)
    level = rtp.one_byte_extension_block([(rtp.EXT_AUDIO_LEVEL, b"\x85")])
    send_time = rtp.one_byte_extension_block([(rtp.EXT_ABS_SEND_TIME, b"\x01\x02\x03")])
    forward((audio,), level, b"opus", 0, 1, 0, False, False, False, 4)
    forward((video,), send_time, b"key", 0, 1, 0, False, True, False, 3)
    forward((audio,), b"", b"bare", 0, 2, 960, False, False, False, 4)  # no block of its own
    forward((audio, video), send_time, b"both", 0, 3, 1920, False, False, False, 4)
    views = [rtp.parse_rtp(p) for p in (link.receive() for _ in range(5))]
    numbers = [int.from_bytes(v.extensions[5], "big") for v in views]
    assert numbers == [65534, 65535, 0, 1, 2]
    assert views[0].extensions[rtp.EXT_AUDIO_LEVEL] == b"\x85"
    assert views[1].extensions[rtp.EXT_ABS_SEND_TIME] == b"\x01\x02\x03"
    assert link.sink.transport_seq == 3
    # What was sent is kept by number: when (monotonic) and how big (plain RTP bytes).
    kept = link.sink.sent_range(65534, 6)
    assert kept[5] is None and all(k is not None for k in kept[:5])
    assert [size for _, size in kept[:5]] == [12 + 12 + 4, 12 + 12 + 3, 12 + 8 + 4, 12 + 12 + 4, 12 + 12 + 4]
    assert kept[0][0] <= kept[4][0]
    # The ring forgets what it has overwritten.
    link.sink.transport_seq = (65534 + 4096) & 0xFFFF  # the same slot of the ring
    forward((audio,), b"", b"late", 0, 4, 2880, False, False, False, 4)
    link.receive()
    assert link.sink.sent_range(65534, 1) == [None]


def test_without_transport_cc_nothing_is_stamped_and_a_retransmission_gets_a_new_number(link: Link) -> None:
    leg = leg_to(link, video=True, ssrc=0xC, payload_type=96, next_seq=100, ts_offset=0)
    send_time = rtp.one_byte_extension_block([(rtp.EXT_ABS_SEND_TIME, b"\x01\x02\x03")])
    forward((leg,), send_time, b"key", 0, 1, 0, False, True, False, 3)
    assert 5 not in rtp.parse_rtp(link.receive()).extensions
    assert link.sink.sent_range(0, 1) == [None]
    link.sink.transport_cc_id = 5
    link.sink.transport_seq = 40
    forward((leg,), send_time, b"next", 0, 2, 0, False, False, False, 4)
    original = link.receive()
    assert rtp.parse_rtp(original).extensions[5] == b"\x00\x28"
    assert leg.sent(101) == original  # a look at the history takes no number
    again = leg.sent(101, restamp=True)
    assert rtp.parse_rtp(again).extensions[5] == b"\x00\x29" and again[20:] != original[20:]
    assert link.sink.transport_seq == 42 and link.sink.sent_range(41, 1)[0] is not None
    assert leg.sent(100, restamp=True) == leg.sent(100)  # sent unstamped: stays so
    with pytest.raises(ValueError):
        link.sink.transport_cc_id = 15


def test_a_sink_sends_our_rtcp_protected_by_its_session(link: Link) -> None:
    report = rtp.rtcp_receiver_report(0x1234, [(0xABC, 0, 0, 4000, 0, 0, 0)])
    pli = rtp.rtcp_pli(0x1234, 0xABC)
    link.sink.send_rtcp(report + pli)  # a compound packet, as the worker's reports are
    link.sink.send_rtcp(pli)
    # SRTCP on the wire (index and tag appended), what the subscriber's session accepts.
    first = link.receiver.recv(2048)
    assert len(first) > len(report + pli) and first[:8] == (report + pli)[:8]
    assert link.rx.unprotect_rtcp(first) == report + pli
    assert link.rx.unprotect_rtcp(link.receiver.recv(2048)) == pli  # the SRTCP index moved on
    # The same session's Python path goes on from there: the two share libsrtp's state.
    link.sender.sendto(link.tx.protect_rtcp(report), link.receiver.getsockname())
    assert link.rx.unprotect_rtcp(link.receiver.recv(2048)) == report
    assert link.sink.send_errors == 0


def test_a_sink_refuses_rtcp_it_cannot_send(link: Link) -> None:
    pli = rtp.rtcp_pli(0x1234, 0xABC)
    without = Sink()  # bound to an SRTP session but not given srtp_protect_rtcp
    without.bind(link.sender.fileno(), *link.receiver.getsockname(), adapter._SRTP_PROTECT,
                 adapter.srtp_session_address(link.tx), (None, link.tx))
    with pytest.raises(ConnectionError, match="SRTCP"):
        without.send_rtcp(pli)
    without.unbind()
    with pytest.raises(ConnectionError, match="not bound"):
        without.send_rtcp(pli)
    assert without.send_errors == 2
    with pytest.raises(TypeError):
        link.sink.send_rtcp("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        link.sink.send_rtcp(b"\x80\xc9")
    with pytest.raises(ValueError):
        link.sink.send_rtcp(bytes(1501))
    with pytest.raises(ValueError, match="SRTP session"):
        Sink().bind(link.sender.fileno(), "127.0.0.1", 9, 0, 0, None, 1)
    assert link.nothing_waiting() and link.sink.send_errors == 0


def test_a_plain_sink_sends_rtcp_plain(link: Link, pipe: socket.socket) -> None:
    plain = Sink()
    plain.bind(link.sender.fileno(), *pipe.getsockname(), 0, 0, None)
    pli = rtp.rtcp_pli(0x1234, 0xABC)
    plain.send_rtcp(pli)
    assert pipe.recv(2048) == pli
    plain.unbind()
