"""transport-cc feedback (mcu/twcc.py): the packet format both ways, the receive side's
builder, and the offer/answer lines."""

from __future__ import annotations

import struct

import pytest
from mcu._fanout import Arrivals, Counters, receive

from mcu import twcc
from mcu.twcc import FeedbackBuilder, build_feedback, parse_feedback, split_rtcp


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


def test_round_trip_with_runs_vectors_losses_and_large_deltas() -> None:
    base = 1_000_000_000
    arrivals: list[int | None] = [base + 1000 * i for i in range(30)]  # a run of small deltas
    arrivals += [None] * 20  # a run of losses
    arrivals += [base + 40_000 + 1000 * i if i % 3 else None for i in range(14)]  # mixed
    arrivals += [base + 60_000 + 1000 * i if i % 2 else None for i in range(4)]
    arrivals += [base + 200_000, base + 150_000]  # a large delta, then a negative one
    packet = build_feedback(0x11, 0x22, 65530, arrivals, 7)
    assert len(packet) % 4 == 0 and packet[1] == 205 and packet[0] & 0x1F == 15
    kinds = chunk_kinds(packet)
    assert "run" in kinds and "vector1" in kinds and "vector2" in kinds
    feedback = parse_feedback(packet)
    assert (feedback.sender_ssrc, feedback.media_ssrc) == (0x11, 0x22)
    assert feedback.base_seq == 65530 and feedback.feedback_count == 7
    assert len(feedback.arrivals) == len(arrivals)
    for sent, got in zip(arrivals, feedback.arrivals, strict=True):
        if sent is None:
            assert got is None
        else:
            assert got is not None and abs(got - sent) <= 250  # 250 us resolution, no drift


def test_padding_and_truncation() -> None:
    packet = build_feedback(1, 2, 0, [5_000_000], 0)  # 1 chunk + 1 delta: padded
    assert packet[0] & 0x20 and packet[-1] in (1, 2, 3)
    assert parse_feedback(packet).arrivals == [5_000_000]
    with pytest.raises(ValueError):
        parse_feedback(packet[:18])
    broken = bytearray(build_feedback(1, 2, 0, [5_000_000, 5_001_000, 5_300_000], 0))
    broken[3] -= 1  # the length says less than the deltas need
    with pytest.raises(ValueError):
        parse_feedback(bytes(broken[:-4]))
    with pytest.raises(ValueError):
        build_feedback(1, 2, 0, [None, 5_000_000], 0)


def test_split_rtcp_takes_the_feedback_out_of_a_compound_packet() -> None:
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    feedback = build_feedback(1, 2, 10, [5_000_000], 3)
    rest, found = split_rtcp(receiver_report + feedback)
    assert rest == receiver_report and found == [feedback]
    assert split_rtcp(receiver_report) == (receiver_report, [])


def test_the_builder_reports_each_number_once_across_wrap_reordering_and_loss() -> None:
    builder = FeedbackBuilder()
    # 65533..65535, 0 (wrap); 1 lost; 3 before 2 (reordered).
    first = builder.build([(65533, 1.0), (65534, 1.001), (65535, 1.002), (0, 1.003),
                           (3, 1.005), (2, 1.006)], 9, 8)
    assert len(first) == 1
    feedback = parse_feedback(first[0])
    assert feedback.base_seq == 65533 and len(feedback.arrivals) == 7
    received = [a is not None for a in feedback.arrivals]
    assert received == [True, True, True, True, False, True, True]
    times = feedback.arrivals
    assert times[6] is not None and times[5] is not None and times[6] < times[5]  # 3 came first
    # 1 comes late: already reported lost, it is not reported again; 4 and 5 are new.
    second = parse_feedback(builder.build([(1, 1.1), (4, 1.1), (5, 1.101), (5, 1.101)], 9, 8)[0])
    assert second.base_seq == 4 and len(second.arrivals) == 2
    assert second.feedback_count == feedback.feedback_count + 1
    assert builder.build([], 9, 8) == []


def test_the_builder_splits_long_gaps_and_many_packets() -> None:
    builder = FeedbackBuilder()
    arrivals = [(n, 1.0 + n * 0.001) for n in range(1200)] + [(1200, 20.0)]
    packets = [parse_feedback(p) for p in builder.build(arrivals, 1, 2)]
    assert sum(len(p.arrivals) for p in packets) == 1201
    assert all(len(p.arrivals) <= twcc.MAX_STATUSES for p in packets)
    assert packets[-1].base_seq == 1200


def test_receive_records_the_transport_sequence_number() -> None:
    arrivals = Arrivals(5)
    counters = Counters()
    # One-byte extension block: transport-cc (ID 5) = 0xABCD; unknown SSRC.
    header = struct.pack("!BBHII", 0x90, 96, 1, 0, 0x1111)
    block = struct.pack("!HH", 0xBEDE, 1) + bytes([0x51, 0xAB, 0xCD, 0])
    receive({}, header + block + b"payload", counters, arrivals)
    receive({}, header + b"\xbe\xde\x00\x00" + b"no element", counters, arrivals)
    assert arrivals.pending == 1
    (seq, at), = arrivals.take()
    assert seq == 0xABCD and at > 0 and arrivals.pending == 0
    receive({}, header + block + b"payload", counters)  # no Arrivals: nothing recorded
    receive({}, header + block + b"payload", counters, None)
    assert arrivals.pending == 0


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
