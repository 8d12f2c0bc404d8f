"""transport-cc feedback: the packet format both ways and the receive side's builder, in
C (mcu/_fanout.c), checked against the Python reading of the format
(tests/mcu/twcc_reference.py) on chosen and random inputs; malformed feedback counted,
never raised; and the offer/answer lines (mcu/twcc.py)."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import AsyncIterator

import pytest
from mcu._fanout import (
    Arrivals,
    Counters,
    Inbound,
    Leg,
    SendSideEstimator,
    Sink,
    forward,
    parse_feedback,
    receive,
    split_rtcp,
)

from mcu import twcc
from mcu.congestion import PaddingProbe
from mcu.forwarding import Consumer
from mcu.participant import Participant
from mcu.room import MediaWorker, Room
from tests.mcu import twcc_reference as reference
from tests.mcu.test_fanout import Link


def chunk_kinds(packet: bytes) -> list[str]:
    """What kind each packet chunk is, read from the wire bytes."""
    count = struct.unpack_from("!H", packet, 14)[0]
    kinds, at, covered = [], 20, 0
    while covered < count:
        chunk = struct.unpack_from("!H", packet, at)[0]
        at += 2
        if not chunk & 0x8000:
            kinds.append("run")
            covered += chunk & 0x1FFF
        elif not chunk & 0x4000:
            kinds.append("vector1")
            covered += 14
        else:
            kinds.append("vector2")
            covered += 7
    return kinds


def as_reference(packet: bytes) -> tuple[int, int, int, int, int, list[int | None]]:
    """The Python reading of a packet, in parse_feedback()'s shape."""
    feedback = reference.parse_feedback(packet)
    return (feedback.sender_ssrc, feedback.media_ssrc, feedback.base_seq, feedback.reference_time,
            feedback.feedback_count, feedback.arrivals)


def c_or_error(packet: bytes) -> object:
    try:
        return parse_feedback(packet)
    except ValueError:
        return ValueError


def reference_or_error(packet: bytes) -> object:
    try:
        return as_reference(packet)
    except ValueError:
        return ValueError


def test_round_trip_with_runs_vectors_losses_and_large_deltas() -> None:
    base = 1_000_000_000
    arrivals: list[int | None] = [base + 1000 * i for i in range(30)]  # a run of small deltas
    arrivals += [None] * 20  # a run of losses
    arrivals += [base + 40_000 + 1000 * i if i % 3 else None for i in range(14)]  # mixed
    arrivals += [base + 60_000 + 1000 * i if i % 2 else None for i in range(4)]
    arrivals += [base + 200_000, base + 150_000]  # a large delta, then a negative one
    packet = reference.build_feedback(0x11, 0x22, 65530, arrivals, 7)
    assert len(packet) % 4 == 0 and packet[1] == 205 and packet[0] & 0x1F == 15
    kinds = chunk_kinds(packet)
    assert "run" in kinds and "vector1" in kinds and "vector2" in kinds
    sender, media, base_seq, _, count, got = parse_feedback(packet)
    assert (sender, media, base_seq, count) == (0x11, 0x22, 65530, 7)
    assert len(got) == len(arrivals)
    for sent, arrived in zip(arrivals, got, strict=True):
        if sent is None:
            assert arrived is None
        else:
            assert arrived is not None and abs(arrived - sent) <= 250  # 250 us resolution, no drift
    assert parse_feedback(packet) == as_reference(packet)


def test_padding_and_truncation() -> None:
    packet = reference.build_feedback(1, 2, 0, [5_000_000], 0)  # 1 chunk + 1 delta: padded
    assert packet[0] & 0x20 and packet[-1] in (1, 2, 3)
    assert parse_feedback(packet)[5] == [5_000_000]
    broken = bytearray(reference.build_feedback(1, 2, 0, [5_000_000, 5_001_000, 5_300_000], 0))
    broken[3] -= 1  # the length says less than the deltas need
    for bad in (packet[:18], bytes(broken[:-4])):
        with pytest.raises(ValueError):
            parse_feedback(bad)
        with pytest.raises(ValueError):
            reference.parse_feedback(bad)
    with pytest.raises(ValueError):
        reference.build_feedback(1, 2, 0, [None, 5_000_000], 0)
    with pytest.raises(TypeError):
        parse_feedback(bytearray(packet))  # type: ignore[arg-type]


def malformed_packets() -> list[tuple[str, bytes]]:
    good = reference.build_feedback(1, 2, 100, [5_000_000, None, 5_001_000, 5_400_000], 9)
    header = bytearray(good[:20])
    cases = [
        ("empty", b""),
        ("a receiver report", struct.pack("!BBHI", 0x80, 201, 1, 0x1234)),
        ("a NACK", struct.pack("!BBHII", 0x81, 205, 2, 1, 2) + bytes(4)),
        ("version 1", bytes([0x4F]) + good[1:]),
        ("truncated header", good[:19]),
        ("truncated", good[:-4]),
        ("length short of its own fields", bytes([0x8F, 205, 0, 3]) + good[4:20]),
        ("length past the datagram", good[:2] + struct.pack("!H", 200) + good[4:]),
        ("padding of 0", bytes([good[0] | 0x20]) + good[1:-1] + b"\x00"),
        ("padding longer than the body", bytes([good[0] | 0x20]) + good[1:-1] + b"\xff"),
        ("a count the chunks do not cover", bytes(header[:14]) + struct.pack("!H", 400) + good[16:]),
        ("no deltas", bytes([0x8F, 205, 0, 5]) + good[4:20] + struct.pack("!HH", 0x2000 | 2, 0)),
        ("a reserved symbol", bytes([0x8F, 205, 0, 5]) + good[4:14] + struct.pack("!H", 1)
         + good[16:20] + struct.pack("!HBB", 0x6000 | 1, 0, 0)),
    ]
    return cases


@pytest.mark.parametrize(("name", "packet"), malformed_packets(), ids=[n for n, _ in malformed_packets()])
def test_malformed_feedback_is_refused_by_both_readings(name: str, packet: bytes) -> None:
    with pytest.raises(ValueError):
        parse_feedback(packet)
    with pytest.raises(ValueError):
        reference.parse_feedback(packet)
    sink = Sink()
    sink.transport_cc_id = 5
    estimator = SendSideEstimator()
    with pytest.raises(ValueError):
        estimator.on_packet(1.0, sink, packet)
    assert estimator.base_delay_s is None and estimator.loss == 0  # nothing taken


def random_arrivals(rng: random.Random, count: int) -> list[int | None]:
    """Arrival times (us) for ``count`` numbers: runs, losses, reordering, big jumps."""
    now = rng.randrange(0, 1 << 40)
    arrivals: list[int | None] = [now]
    for _ in range(count - 1):
        roll = rng.random()
        if roll < 0.2:
            arrivals.append(None)
            continue
        if roll < 0.3:
            now += rng.randrange(-2_000_000, 8_000_000)  # two-byte deltas, either way
        elif roll < 0.35:
            now += rng.randrange(0, 60)  # ties and sub-tick steps
        else:
            now += rng.randrange(0, 70_000)  # mostly one-byte deltas
        arrivals.append(now)
    return arrivals


def test_the_c_reading_matches_the_reference_on_random_packets() -> None:
    rng = random.Random(15)
    for _ in range(400):
        arrivals = random_arrivals(rng, rng.randrange(1, 600))
        packet = reference.build_feedback(rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(16),
                                          arrivals, rng.getrandbits(8))
        assert parse_feedback(packet) == as_reference(packet)


def test_the_c_reading_matches_the_reference_on_damaged_packets() -> None:
    """Flipped bytes, cut packets, random bytes: each either reads the same both ways or
    is refused by both, and never takes the process down."""
    rng = random.Random(16)
    refused = 0
    for _ in range(3000):
        packet = bytearray(reference.build_feedback(1, 2, rng.getrandbits(16),
                                                    random_arrivals(rng, rng.randrange(1, 40)), 3))
        roll = rng.random()
        if roll < 0.5:
            for _ in range(rng.randrange(1, 4)):
                packet[rng.randrange(len(packet))] = rng.getrandbits(8)
        elif roll < 0.8:
            packet = packet[:rng.randrange(len(packet))]
        else:
            packet = bytearray(bytes([0x8F, 205]) + rng.randbytes(rng.randrange(0, 80)))
        got = c_or_error(bytes(packet))
        assert got == reference_or_error(bytes(packet))
        refused += got is ValueError
    assert 0 < refused < 3000


def test_split_rtcp_takes_the_feedback_out_of_a_compound_packet() -> None:
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    remb = struct.pack("!BBHII4sBBHI", 0x8F, 206, 5, 1, 0, b"REMB", 1, 5, 0, 7)
    feedback = reference.build_feedback(1, 2, 10, [5_000_000], 3)
    other = reference.build_feedback(1, 2, 11, [5_000_250], 4)
    rest, found = split_rtcp(receiver_report + feedback + remb + other)
    assert rest == receiver_report + remb and found == [feedback, other]
    alone = receiver_report + remb
    rest, found = split_rtcp(alone)
    assert rest is alone and found == []
    assert split_rtcp(feedback) == (b"", [feedback])
    rng = random.Random(17)
    for _ in range(2000):  # including lengths that run past the end: left in the rest
        data = rng.choice([receiver_report, feedback, remb, b""]) + rng.randbytes(rng.randrange(0, 40))
        if rng.random() < 0.5:
            data = bytes([data[0] if data else 0x80, 205]) + data[2:]
        data = bytes([(data[0] & 0xE0) | 15]) + data[1:] if data and rng.random() < 0.5 else data
        assert split_rtcp(data) == reference.split_rtcp(data)


def test_the_builder_reports_each_number_once_across_wrap_reordering_and_loss() -> None:
    arrivals = Arrivals(0)
    # 65533..65535, 0 (wrap); 1 lost; 3 before 2 (reordered).
    for seq, at in [(65533, 1.0), (65534, 1.001), (65535, 1.002), (0, 1.003), (3, 1.005), (2, 1.006)]:
        arrivals.record(seq, at)
    assert arrivals.pending == 6
    first = arrivals.feedback(9, 8)
    assert len(first) == 1 and arrivals.pending == 0
    _, _, base, _, count, times = parse_feedback(first[0])
    assert base == 65533 and len(times) == 7
    assert [t is not None for t in times] == [True, True, True, True, False, True, True]
    assert times[6] is not None and times[5] is not None and times[6] < times[5]  # 3 came first
    # 1 comes late: already reported lost, it is not reported again; 4 and 5 are new.
    for seq, at in [(1, 1.1), (4, 1.1), (5, 1.101), (5, 1.101)]:
        arrivals.record(seq, at)
    second = parse_feedback(arrivals.feedback(9, 8)[0])
    assert second[2] == 4 and len(second[5]) == 2 and second[4] == count + 1
    assert arrivals.feedback(9, 8) == [] and arrivals.packets_reported == 9


def test_the_builder_splits_long_gaps_and_many_packets() -> None:
    arrivals = Arrivals(0)
    for n in range(1200):
        arrivals.record(n, 1.0 + n * 0.001)
    arrivals.record(1200, 20.0)
    packets = [parse_feedback(p) for p in arrivals.feedback(1, 2)]
    assert sum(len(p[5]) for p in packets) == 1201
    assert all(len(p[5]) <= reference.MAX_STATUSES for p in packets)
    assert packets[-1][2] == 1200


def test_the_c_builder_matches_the_reference_byte_for_byte() -> None:
    """Random traffic fed to both, call after call: duplicates, reordering, loss, the
    wrap, gaps over 8 s, more than 500 numbers, a sender that restarts its count."""
    rng = random.Random(18)
    for _ in range(60):
        arrivals, builder = Arrivals(0), reference.FeedbackBuilder()
        seq, now = rng.getrandbits(16), rng.uniform(1.0, 1e6)
        for _ in range(30):
            batch: list[tuple[int, float]] = []
            for _ in range(rng.choice([0, 1, 5, 40, 300, 700])):
                roll = rng.random()
                if roll < 0.1:
                    seq += rng.randrange(1, 30)  # lost
                elif roll < 0.15 and batch:
                    batch.append(rng.choice(batch))  # a duplicate
                    continue
                elif roll < 0.2:
                    seq -= rng.randrange(1, 10)  # reordered, or late
                elif roll < 0.202:
                    seq += rng.randrange(0x8000, 0x10000)  # the sender started afresh
                now += rng.choice([0.0, 0.0001, 0.002, 0.03, 9.0]) if roll < 0.95 else -0.003
                seq &= 0xFFFF
                batch.append((seq, now))
                seq += 1
            for number, at in batch:
                arrivals.record(number, at)
            ssrcs = rng.getrandbits(32), rng.getrandbits(32)
            assert arrivals.feedback(*ssrcs) == builder.build(batch, *ssrcs)
        assert arrivals.packets_reported == builder.packets_reported


def test_receive_records_the_transport_sequence_number() -> None:
    arrivals = Arrivals(5)
    counters = Counters()
    # One-byte extension block: transport-cc (ID 5) = 0xABCD; unknown SSRC.
    header = struct.pack("!BBHII", 0x90, 96, 1, 0, 0x1111)
    block = struct.pack("!HH", 0xBEDE, 1) + bytes([0x51, 0xAB, 0xCD, 0])
    receive({}, header + block + b"payload", counters, arrivals)
    receive({}, header + b"\xbe\xde\x00\x00" + b"no element", counters, arrivals)
    assert arrivals.pending == 1
    (packet,) = arrivals.feedback(1, 2)
    _, _, base, _, _, times = parse_feedback(packet)
    assert base == 0xABCD and len(times) == 1 and times[0] is not None and times[0] > 0
    assert arrivals.pending == 0
    receive({}, header + block + b"payload", counters)  # no Arrivals: nothing recorded
    receive({}, header + block + b"payload", counters, None)
    assert arrivals.pending == 0


@pytest.fixture
async def viewer() -> AsyncIterator[tuple[MediaWorker, Participant, Link]]:
    """A subscriber without a connection of its own: what it is sent goes on a Link."""
    worker = MediaWorker()
    participant = Participant(Room(worker, "feedback"), "viewer", "guest")
    link = Link()
    yield worker, participant, link
    link.close()
    await participant.pc.close()


def agree_transport_cc(participant: Participant, link: Link) -> None:
    link.sink.transport_cc_id = 5
    participant._sinks[0] = (link.sink, None)
    participant._set_transport_cc(5)


async def test_a_participant_counts_malformed_feedback_and_goes_on(viewer) -> None:
    """Feedback comes from the network: anything wrong in it is counted, never raised
    into the packet path, and good feedback after it is still taken."""
    worker, participant, link = viewer
    agree_transport_cc(participant, link)
    leg = Leg(video=False)
    leg.sink = link.sink
    for seq in range(3):
        forward((leg,), b"", b"x" * 100, 0, seq, seq * 960, False, False, False, 100)
    counters = worker.counters
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    for name, packet in malformed_packets():
        if packet[1:2] == b"\xcd" and packet[0] & 0x1F == 15 and len(packet) >= 4 \
                and 4 + 4 * int.from_bytes(packet[2:4], "big") <= len(packet):
            before = counters.rtcp_malformed
            participant._on_rtcp(receiver_report + packet)
            assert counters.rtcp_malformed > before, name  # (its tail may count too)
    assert participant.transport_feedback_received == 0
    good = reference.build_feedback(1, 2, 0, [5_000_000, None, 5_001_000], 0)
    participant._on_rtcp(receiver_report + good)
    assert participant.transport_feedback_received == 1
    assert counters.handler_errors == 0


async def test_the_estimate_is_filed_under_the_video_legs_once_a_control_step(viewer) -> None:
    """Feedback updates the estimate ten times a second; last-N and the layer choice
    read it where a REMB puts its, filed when the room's control step asks."""
    worker, participant, link = viewer
    agree_transport_cc(participant, link)
    videos = []
    for index, ssrc in enumerate((0x1001, 0x1002)):
        video = Consumer(f"viewer:camera{index}", "video", participant.id, worker.counters)
        video.configure(ssrc, ssrc + 1, 96, 97, lambda packet: None, link.sink)
        participant.consumers[video.id] = participant._consumer_by_ssrc[ssrc] = video
        videos.append(video)
    leg = Leg(video=False)  # what is sent on the connection, stamped (audio: no keyframe wait)
    leg.sink = link.sink
    for seq in range(3):
        forward((leg,), b"", b"x" * 100, 0, seq, seq * 960, False, False, False, 100)
    participant.file_estimate()  # no feedback yet: nothing to file
    assert participant.remb_estimates == {} and videos[0].remb_bps is None

    participant._on_rtcp(reference.build_feedback(1, 2, 0, [5_000_000, 5_001_000, 5_002_000], 0))
    assert participant.transport_feedback_received == 1
    assert videos[0].remb_bps is None  # not at the feedback itself
    participant.file_estimate()
    estimate = round(participant.estimator.estimate_bps)
    assert estimate > 0
    assert [video.remb_bps for video in videos] == [estimate, estimate]
    assert videos[0].remb_group == videos[1].remb_group  # one estimate for the connection
    assert participant.remb_estimates == {videos[0].remb_group: estimate}

    # A probe made the filed estimate stale (mcu/room.py pops it): it stays unknown
    # until new feedback comes, not filed again from the old one.
    participant.remb_estimates.clear()
    participant.file_estimate()
    assert participant.remb_estimates == {}
    forward((leg,), b"", b"x" * 100, 0, 3, 3 * 960, False, False, False, 100)
    participant._on_rtcp(reference.build_feedback(1, 2, 3, [5_100_000], 1))
    participant.file_estimate()
    assert participant.remb_estimates == {videos[0].remb_group: round(participant.estimator.estimate_bps)}


async def test_the_inbound_takes_feedback_once_agreed_and_leaves_it_to_a_probe(viewer) -> None:
    """The C path (Inbound) estimates from feedback when transport-cc was agreed and a
    sink sends on the connection; while a padding probe is out the feedback comes to
    Python, where the probe judges it, and goes back to C once the probe is judged."""
    _, participant, link = viewer
    inbound = Inbound({}, Counters(), None, lambda status, packet: None, participant._on_rtcp,
                      participant._on_malformed_feedback)
    participant._inbounds[0] = inbound
    participant._arm_feedback()
    assert inbound.estimator is None  # not agreed yet
    agree_transport_cc(participant, link)
    assert inbound.estimator is participant.estimator and inbound.sink is link.sink

    participant.probe = PaddingProbe(time.monotonic(), 2_000_000, None)
    participant._arm_feedback()
    assert inbound.estimator is None and inbound.sink is None
    leg = Leg(video=False)
    leg.sink = link.sink
    forward((leg,), b"", b"x" * 100, 0, 0, 0, False, False, False, 100)
    participant.probe.failed = True  # its padding stopped, say
    participant._on_rtcp(reference.build_feedback(1, 2, 0, [5_000_000], 0))
    assert participant.transport_feedback_received == 1
    assert inbound.estimator is participant.estimator  # the next one is C's again

    await participant.close()
    assert inbound.estimator is None and inbound.sink is None


SDP = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:0", "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=rtpmap:111 opus/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "a=mid:1", "a=rtpmap:97 VP8/90000",
    "a=rtcp-fb:97 goog-remb", "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97", "",
])


def test_offer_lines_and_what_an_answer_agreed_to() -> None:
    offer = twcc.offer_transport_cc(SDP)
    assert offer.count(f"a=extmap:5 {twcc.URI}") == 2
    assert "a=rtcp-fb:97 transport-cc" in offer and "a=rtcp-fb:111 transport-cc" in offer
    assert "a=rtcp-fb:98 transport-cc" not in offer
    assert twcc.answer_transport_cc(offer) == 5
    assert twcc.answer_transport_cc(SDP) == 0
    without_feedback = offer.replace("a=rtcp-fb:97 transport-cc\r\n", "").replace(
        "a=rtcp-fb:111 transport-cc\r\n", "")
    assert twcc.answer_transport_cc(without_feedback) == 0
    without_extension = offer.replace(f"a=extmap:5 {twcc.URI}\r\n", "")
    assert twcc.answer_transport_cc(without_extension) == 0
