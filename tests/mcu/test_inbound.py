"""Inbound: a connection's received SRTP and SRTCP, decrypted and handled in C.

Real libsrtp sessions on both sides (the client's outbound, our inbound), real sockets
for what is forwarded; the Python paths it stands in for (receive() after
aiortc_adapter.unprotect_with, SendSideEstimator.on_packet) are the reference.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pylibsrtp
import pytest
from mcu._fanout import RECEIVED_UNKNOWN, Counters, Inbound, Leg, SendSideEstimator, forward

from mcu import aiortc_adapter as adapter
from mcu import rtp
from tests.mcu import twcc_reference as reference
from tests.mcu.test_fanout import Link, audio_track, publisher_packet

RECEIVER_REPORT = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
PLI = struct.pack("!BBHII", 0x81, 206, 2, 0x1234, 0x55)


class Client:
    """What a client sends us: protected with its outbound session, which our inbound
    session (whose libsrtp address take() is given) decrypts."""

    def __init__(self) -> None:
        key = os.urandom(30)
        self.tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self.rx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self.session = adapter.srtp_session_address(self.rx)

    def rtp(self, packet: bytes) -> bytes:
        return self.tx.protect(packet)

    def rtcp(self, packet: bytes) -> bytes:
        return self.tx.protect_rtcp(packet)


class Calls:
    def __init__(self) -> None:
        self.received: list[tuple[int, bytes]] = []
        self.rtcp: list[bytes] = []
        self.malformed = 0

    def after_receive(self, status: int, packet: bytes) -> None:
        self.received.append((status, packet))

    def on_rtcp(self, packet: bytes) -> None:
        self.rtcp.append(packet)

    def on_malformed(self) -> None:
        self.malformed += 1


@pytest.fixture
def link() -> Iterator[Link]:
    made = Link()
    yield made
    made.close()


def inbound_for(tracks: dict, counters: Counters, calls: Calls) -> Inbound:
    inbound = Inbound(tracks, counters, None, calls.after_receive, calls.on_rtcp, calls.on_malformed)
    inbound.set_unprotect(adapter._SRTP_UNPROTECT, adapter._SRTP_UNPROTECT_RTCP)
    return inbound


def test_rtp_is_decrypted_and_forwarded_and_only_the_rest_reaches_python(link: Link) -> None:
    track, _ = audio_track(link)
    counters, calls, client = Counters(), Calls(), Client()
    inbound = inbound_for({0xABC: track}, counters, calls)
    for seq in (1, 2):
        assert inbound.take(client.session, client.rtp(publisher_packet(seq, level=20))) is None
    assert [rtp.parse_rtp(link.receive()).sequence_number for _ in range(2)] == [10, 11]
    assert (counters.packets_received, counters.packets_forwarded) == (2, 2)
    assert calls.received == [] and calls.rtcp == []

    # An SSRC it does not know: Python learns it, from the decrypted packet.
    unknown = publisher_packet(3, ssrc=0xDEF)
    inbound.take(client.session, client.rtp(unknown))
    assert calls.received == [(RECEIVED_UNKNOWN, unknown)]


def test_forgeries_replays_and_odd_sizes_are_dropped_without_a_call(link: Link) -> None:
    track, _ = audio_track(link)
    counters, calls, client = Counters(), Calls(), Client()
    inbound = inbound_for({0xABC: track}, counters, calls)
    protected = client.rtp(publisher_packet(1))
    forged = protected[:-1] + bytes([protected[-1] ^ 1])
    for bad in (forged, protected[:12], b"\x80", b"", bytes(3000)):
        inbound.take(client.session, bad)
    inbound.take(client.session, protected)
    inbound.take(client.session, protected)  # replayed
    assert counters.packets_received == 1 and calls.received == [] and calls.rtcp == []
    with pytest.raises(TypeError):
        inbound.take(client.session, "not bytes")
    with pytest.raises(ValueError):
        inbound.take(0, protected)
    with pytest.raises(ValueError):  # not told libsrtp's functions
        Inbound({}, counters, None, calls.after_receive, calls.on_rtcp, calls.on_malformed).take(
            client.session, protected)


def sent_on(link: Link, count: int) -> None:
    """``count`` packets stamped with transport-wide numbers 0.. on the link's sink."""
    link.sink.transport_cc_id = 5
    leg = Leg(video=False)
    leg.sink = link.sink
    for seq in range(count):
        forward((leg,), b"", b"x" * 100, 0, seq, seq * 960, False, False, False, 100)


def test_feedback_goes_to_the_estimator_and_the_rest_of_the_rtcp_to_python(link: Link) -> None:
    sent_on(link, 4)
    counters, calls, client = Counters(), Calls(), Client()
    inbound = inbound_for({}, counters, calls)
    feedback = reference.build_feedback(1, 2, 0, [5_000_000, None, 5_002_000, 5_003_000], 0)

    # Not armed (transport-cc not agreed, or a probe judging it): all to Python.
    estimator = SendSideEstimator()
    inbound.take(client.session, client.rtcp(RECEIVER_REPORT + feedback))
    assert calls.rtcp == [RECEIVER_REPORT + feedback] and estimator.feedbacks == 0

    inbound.arm(estimator, link.sink)
    assert inbound.estimator is estimator and inbound.sink is link.sink
    inbound.take(client.session, client.rtcp(RECEIVER_REPORT + feedback + PLI))
    assert calls.rtcp[1:] == [RECEIVER_REPORT + PLI]  # in their order, without the feedback
    assert estimator.feedbacks == 1 and estimator.changed == 1

    # The same as the Python path gives: the estimator's on_packet on the same stamps.
    other = Link()
    try:
        sent_on(other, 4)
        expected = SendSideEstimator()
        expected.on_packet(0.0, other.sink, feedback)
        assert estimator.estimate_bps == expected.estimate_bps
        assert estimator.received_bps == expected.received_bps
    finally:
        other.close()

    # Feedback alone: nothing for Python. Numbers that are not ours: taken, no change.
    estimator.changed = 0
    inbound.take(client.session, client.rtcp(reference.build_feedback(1, 2, 900, [6_000_000], 1)))
    assert len(calls.rtcp) == 2 and estimator.feedbacks == 2 and estimator.changed == 0

    inbound.arm(None, None)
    assert inbound.estimator is None and inbound.sink is None
    inbound.take(client.session, client.rtcp(feedback))
    assert calls.rtcp[-1] == feedback and estimator.feedbacks == 2


def test_malformed_feedback_is_counted_and_the_rest_still_handled(link: Link) -> None:
    sent_on(link, 2)
    counters, calls, client = Counters(), Calls(), Client()
    inbound = inbound_for({}, counters, calls)
    estimator = SendSideEstimator()
    inbound.arm(estimator, link.sink)
    good = reference.build_feedback(1, 2, 0, [5_000_000, 5_001_000], 0)
    # Says 300 statuses in a packet that holds a handful.
    bad = good[:14] + struct.pack("!H", 300) + good[16:]
    inbound.take(client.session, client.rtcp(RECEIVER_REPORT + bad + PLI))
    assert calls.malformed == 1 and calls.rtcp == [RECEIVER_REPORT + PLI] and estimator.feedbacks == 0
    inbound.take(client.session, client.rtcp(good))
    assert estimator.feedbacks == 1 and estimator.changed == 1
    # A cut compound: what parses is handled, the cut tail goes to Python with the rest.
    inbound.take(client.session, client.rtcp(RECEIVER_REPORT + good[:9]))
    assert calls.rtcp[-1] == RECEIVER_REPORT + good[:9]


def test_what_the_handlers_raise_reaches_the_caller(link: Link) -> None:
    track, _ = audio_track(link)
    client = Client()

    def fails(*args: object) -> None:
        raise RuntimeError("handler")

    inbound = Inbound({0xABC: track}, Counters(), None, fails, fails, fails)
    inbound.set_unprotect(adapter._SRTP_UNPROTECT, adapter._SRTP_UNPROTECT_RTCP)
    with pytest.raises(RuntimeError):
        inbound.take(client.session, client.rtp(publisher_packet(1, ssrc=0xDEF)))
    with pytest.raises(RuntimeError):
        inbound.take(client.session, client.rtcp(RECEIVER_REPORT))
    with pytest.raises(TypeError):
        inbound.arm("estimator", None)
    with pytest.raises(TypeError):
        inbound.arm(SendSideEstimator(), None)  # both or neither
    with pytest.raises(AttributeError):
        inbound.estimator = SendSideEstimator()  # only arm() sets it
    with pytest.raises(TypeError):
        Inbound({}, Counters(), None, fails, fails, "not callable")
