"""Simulcast layer switches in the C packet path (mcu/_fanout.c: Leg.source and Leg.target).

A leg moves from one received track to another at the new one's keyframe; the subscriber
must see one stream: sequence numbers, timestamps and VP8 picture IDs / TL0PICIDX that
continue its own. Real SRTP on a loopback socket, as in test_fanout.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mcu._fanout import (
    CODEC_H264,
    RECEIVED_SWITCHED,
    RECEIVED_WANTS_KEYFRAME,
    Counters,
    Leg,
    Track,
    forward,
    receive,
)

from mcu import rtp
from tests.mcu.test_fanout import Link, leg_to

SSRC_A, SSRC_B = 0xA000, 0xB000  # two layers of one camera, as the publisher sends them
PT = 96


@pytest.fixture
def link() -> Iterator[Link]:
    made = Link()
    yield made
    made.close()


def vp8(picture_id: int, tl0: int, *, key: bool, wide: bool = True, tid: int = 0,
        body: bytes = b"frame") -> bytes:
    """One VP8 payload that starts a partition: descriptor with X, I (7- or 15-bit ID), L
    and T, then the payload header, whose P bit is clear on a keyframe (RFC 7741)."""
    wide_id = bytes([0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
    picture = wide_id if wide else bytes([picture_id & 0x7F])
    header = bytes([0x00 if key else 0x01])
    return bytes([0x90, 0xE0]) + picture + bytes([tl0 & 0xFF, tid << 6]) + header + body


def vp8_ids(payload: bytes) -> tuple[int, int, bool]:
    """(picture ID, TL0PICIDX, 15-bit) of a payload made by vp8()."""
    if payload[2] & 0x80:
        return ((payload[2] & 0x7F) << 8) | payload[3], payload[4], True
    return payload[2], payload[3], False


def packet(ssrc: int, seq: int, timestamp: int, payload: bytes, payload_type: int = PT) -> bytes:
    return rtp.rtp_header(payload_type, True, seq, timestamp, ssrc, False) + payload


class Camera:
    """Two layer tracks (A and B) of one camera and the SSRC map receive() looks them up in."""

    def __init__(self, codec: int | None = None) -> None:
        self.a = Track(video=True) if codec is None else Track(video=True, codec=codec)
        self.b = Track(video=True) if codec is None else Track(video=True, codec=codec)
        self.a.payload_type = self.b.payload_type = PT
        self.tracks = {SSRC_A: self.a, SSRC_B: self.b}
        self.counters = Counters()
        self.seq = {SSRC_A: 100, SSRC_B: 7000}  # each layer's own sequence numbers
        self.ts = {SSRC_A: 3000, SSRC_B: 123_456}

    def send(self, ssrc: int, payload: bytes) -> int:
        """One packet of one layer (a picture of its own: the next timestamp)."""
        data = packet(ssrc, self.seq[ssrc] & 0xFFFF, self.ts[ssrc] & 0xFFFFFFFF, payload)
        self.seq[ssrc] += 1
        self.ts[ssrc] += 3000
        return receive(self.tracks, data, self.counters)


def switching_leg(link: Link, camera: Camera, ssrc: int = 0x5151, next_seq: int = 1000) -> Leg:
    leg = leg_to(link, video=True, ssrc=ssrc, payload_type=PT, next_seq=next_seq, ts_offset=0)
    leg.source = camera.a
    camera.a.legs = (*camera.a.legs, leg)
    camera.b.legs = (*camera.b.legs, leg)
    return leg


def received(link: Link) -> tuple[rtp.RtpView, bytes, bytes]:
    data = link.receive()
    view = rtp.parse_rtp(data)
    return view, view.payload(data), data


def test_a_leg_moves_to_its_target_at_the_targets_keyframe_and_continues_its_numbers(link: Link) -> None:
    camera = Camera()
    leg = switching_leg(link, camera)
    assert camera.send(SSRC_A, vp8(30000, 200, key=True)) == 0
    assert camera.send(SSRC_A, vp8(30001, 200, key=False)) == 0
    first, second = received(link)[0], received(link)[0]
    assert [first.sequence_number, second.sequence_number] == [1000, 1001]

    # B's packets pass the leg by until it is told to move (no keyframe wanted either).
    assert camera.send(SSRC_B, vp8(5, 10, key=True)) == 0
    assert link.nothing_waiting()

    leg.target = camera.b
    # Not a keyframe of B: nothing sent, a keyframe asked for; A keeps flowing meanwhile.
    assert camera.send(SSRC_B, vp8(6, 10, key=False)) == RECEIVED_WANTS_KEYFRAME
    assert link.nothing_waiting()
    assert camera.send(SSRC_A, vp8(30002, 200, key=False)) == 0
    last_a, last_a_payload, _ = received(link)
    assert last_a.sequence_number == 1002 and vp8_ids(last_a_payload)[0] == 30002
    assert leg.source is camera.a and leg.target is camera.b

    flags = camera.send(SSRC_B, vp8(7, 11, key=True))
    assert flags & RECEIVED_SWITCHED and not flags & RECEIVED_WANTS_KEYFRAME
    assert leg.source is camera.b and leg.target is None
    switched, switched_payload, _ = received(link)
    assert switched.sequence_number == 1003  # no gap the subscriber would NACK
    # Timestamps continue ours (a little later than A's last), not B's own clock.
    assert 0 < (switched.timestamp - last_a.timestamp) & 0xFFFFFFFF < 90000
    assert switched.ssrc == 0x5151 and switched_payload[7:] == b"frame"

    # From now on A's packets are not sent, B's are, and B's timing carries through.
    assert camera.send(SSRC_A, vp8(30003, 200, key=False)) == 0
    assert link.nothing_waiting()
    assert camera.send(SSRC_B, vp8(8, 11, key=False)) == 0
    after, _, _ = received(link)
    assert after.sequence_number == 1004 and after.timestamp == (switched.timestamp + 3000) & 0xFFFFFFFF
    assert leg.next_seq == 1005
    # The flag is reported once: the switch is done.
    assert camera.send(SSRC_B, vp8(9, 11, key=True)) == 0
    received(link)


def test_picture_ids_and_tl0picidx_continue_across_a_switch(link: Link) -> None:
    camera = Camera()
    leg = switching_leg(link, camera)
    sent = [(30000, 250, True), (30001, 251, False), (30002, 252, False)]
    for picture_id, tl0, key in sent:
        camera.send(SSRC_A, vp8(picture_id, tl0, key=key))
    assert [vp8_ids(received(link)[1])[:2] for _ in sent] == [(30000, 250), (30001, 251), (30002, 252)]
    assert leg.last_picture_id == 30002

    leg.target = camera.b
    for picture_id, tl0, key in ((5, 3, True), (6, 4, False), (7, 5, False)):
        camera.send(SSRC_B, vp8(picture_id, tl0, key=key, tid=1 if picture_id == 6 else 0))
    ids = [vp8_ids(received(link)[1]) for _ in range(3)]
    # Last A id + 1 onwards; TL0PICIDX wraps at 255; the M bit stays (a 15-bit ID).
    assert ids == [(30003, 253, True), (30004, 254, True), (30005, 255, True)]
    assert leg.last_picture_id == 30005


def test_picture_ids_wrap_at_15_and_7_bits(link: Link) -> None:
    camera = Camera()
    switching_leg(link, camera)
    camera.send(SSRC_A, vp8(0x7FFE, 0, key=True))
    assert vp8_ids(received(link)[1])[0] == 0x7FFE
    camera.a.legs[0].target = camera.b
    for picture_id in (5, 6, 7):
        camera.send(SSRC_B, vp8(picture_id, 9, key=picture_id == 5))
    assert [vp8_ids(received(link)[1])[0] for _ in range(3)] == [0x7FFF, 0, 1]

    narrow = Camera()
    leg = switching_leg(link, narrow, ssrc=0x7777)
    for picture_id in (125, 126):
        narrow.send(SSRC_A, vp8(picture_id, 40, key=picture_id == 125, wide=False))
    assert [vp8_ids(received(link)[1]) for _ in range(2)] == [(125, 40, False), (126, 40, False)]
    leg.target = narrow.b
    for picture_id in (3, 4, 5):
        narrow.send(SSRC_B, vp8(picture_id, 2, key=picture_id == 3, wide=False))
    # 7-bit IDs stay 7-bit (one byte, no M bit) and wrap at 127.
    assert [vp8_ids(received(link)[1]) for _ in range(3)] == [(127, 41, False), (0, 41, False),
                                                              (1, 41, False)]


def test_a_picture_of_several_packets_keeps_one_id_after_a_switch(link: Link) -> None:
    camera = Camera()
    leg = switching_leg(link, camera)
    camera.send(SSRC_A, vp8(100, 1, key=True))
    received(link)
    leg.target = camera.b
    camera.send(SSRC_B, vp8(900, 50, key=True))
    # The picture's second packet: same timestamp and picture ID, not a partition start.
    continuation = bytes([0x80, 0xE0, 0x83, 0x84, 50, 0]) + b"rest"  # ID 900, TL0PICIDX 50
    data = packet(SSRC_B, camera.seq[SSRC_B], camera.ts[SSRC_B] - 3000, continuation)
    assert receive(camera.tracks, data, camera.counters) == 0
    first, first_payload, _ = received(link)
    second, second_payload, _ = received(link)
    assert vp8_ids(first_payload)[:2] == vp8_ids(second_payload)[:2] == (101, 2)
    assert second.timestamp == first.timestamp and second_payload.endswith(b"rest")


def test_picture_ids_continue_after_a_pause_and_resume(link: Link) -> None:
    camera = Camera()
    leg = switching_leg(link, camera)
    for picture_id in (30000, 30001):
        camera.send(SSRC_A, vp8(picture_id, 7, key=picture_id == 30000))
    assert [vp8_ids(received(link)[1])[0] for _ in range(2)] == [30000, 30001]
    leg.paused = True
    for picture_id in range(30002, 30010):  # not sent: the subscriber never saw these
        camera.send(SSRC_A, vp8(picture_id, 8, key=False))
    assert link.nothing_waiting()
    leg.paused, leg.started = False, False  # Consumer.resume(): re-gate on a keyframe
    assert camera.send(SSRC_A, vp8(30010, 9, key=False)) == RECEIVED_WANTS_KEYFRAME
    camera.send(SSRC_A, vp8(30011, 9, key=True))
    view, payload, _ = received(link)
    assert vp8_ids(payload)[:2] == (30002, 8) and view.sequence_number == 1002


def test_nack_history_resends_with_each_legs_own_picture_id(link: Link) -> None:
    camera = Camera()
    moved = switching_leg(link, camera, ssrc=0x1111, next_seq=500)
    # Another subscriber's leg on B all along: B's own IDs (no offset).
    native = leg_to(link, video=True, ssrc=0x2222, payload_type=PT, next_seq=9000, ts_offset=0)
    native.source = camera.b
    camera.b.legs = (moved, native)  # moved first: the shared history copy is made on its turn
    camera.send(SSRC_A, vp8(30000, 100, key=True))
    camera.send(SSRC_B, vp8(5, 20, key=True))
    received(link), received(link)
    moved.target = camera.b
    camera.send(SSRC_B, vp8(6, 21, key=True))
    camera.send(SSRC_B, vp8(7, 22, key=False))
    out = [received(link) for _ in range(4)]
    mine = [data for view, _, data in out if view.ssrc == 0x1111]
    theirs = [data for view, _, data in out if view.ssrc == 0x2222]
    assert [vp8_ids(rtp.parse_rtp(d).payload(d))[:2] for d in mine] == [(30001, 101), (30002, 102)]
    assert [vp8_ids(rtp.parse_rtp(d).payload(d))[:2] for d in theirs] == [(6, 21), (7, 22)]
    # A resend is exactly what each leg sent, however often it is asked for (the kept
    # copy is never rewritten in place).
    for _ in range(2):
        assert [moved.sent(n) for n in (501, 502)] == mine
        assert [native.sent(n) for n in (9001, 9002)] == theirs


def test_a_leg_without_a_source_takes_every_track_it_is_a_leg_of(link: Link) -> None:
    camera = Camera()
    leg = leg_to(link, video=True, ssrc=0x3333, payload_type=PT, next_seq=0, ts_offset=0)
    assert leg.source is None and leg.target is None
    camera.a.legs = camera.b.legs = (leg,)
    assert camera.send(SSRC_A, vp8(10, 1, key=True)) == 0
    # Started already: B's delta goes out at once, through the same offset (the room
    # re-points such a leg with started = False itself), and nothing is switched.
    assert camera.send(SSRC_B, vp8(20, 1, key=False)) == 0
    views = [received(link)[0] for _ in range(2)]
    assert [v.sequence_number for v in views] == [0, (7000 + leg.seq_offset) & 0xFFFF]
    assert leg.source is None and leg.packets == 2
    with pytest.raises(TypeError):
        leg.source = "a track"  # type: ignore[assignment]


def test_forward_sends_to_its_legs_whatever_their_source_and_rewrites_nothing(link: Link) -> None:
    camera = Camera()
    leg = switching_leg(link, camera)
    camera.send(SSRC_A, vp8(30000, 100, key=True))
    received(link)
    leg.target = camera.b
    camera.send(SSRC_B, vp8(5, 1, key=True))
    received(link)
    assert leg.source is camera.b  # with a picture ID offset now
    # The mixer's packets: its own encoder's IDs, passed as they are.
    payload = vp8(40, 3, key=False)
    assert forward((leg,), b"", payload, 0, 7001, 123_456 + 6000, True, False, False, len(payload))[0] == 1
    _, out, _ = received(link)
    assert out == payload
    assert leg.source is camera.b and leg.target is None


def test_h264_and_audio_payloads_are_never_rewritten(link: Link) -> None:
    camera = Camera(codec=CODEC_H264)
    leg = leg_to(link, video=True, ssrc=0x4444, payload_type=PT, next_seq=0, ts_offset=0)
    leg.codec = CODEC_H264
    leg.source = camera.a
    camera.a.legs = camera.b.legs = (leg,)
    # A FU-A start of an IDR slice and an SPS (where a switch to another layer happens),
    # with the forbidden bit set so that a VP8 parser would find X and I bits and a
    # "picture ID" to rewrite: only the codec check keeps them.
    idr_a = b"\xfc\x85\x12\x34\x56" + b"slice"
    sps_b = b"\xe7\xc0\x77\x00\x01" + b"params"
    camera.send(SSRC_A, idr_a)
    leg.target = camera.b
    assert camera.send(SSRC_B, sps_b) & RECEIVED_SWITCHED
    assert [received(link)[1] for _ in range(2)] == [idr_a, sps_b]

    audio_a, audio_b = Track(video=False), Track(video=False)
    audio_a.payload_type = audio_b.payload_type = 111
    voice = leg_to(link, video=False, ssrc=0x6666, payload_type=111, next_seq=0, ts_offset=0)
    audio_a.legs = audio_b.legs = (voice,)
    counters = Counters()
    looks_like_vp8 = vp8(30000, 1, key=True)
    tracks = {1: audio_a, 2: audio_b}
    assert receive(tracks, packet(1, 1, 960, looks_like_vp8, 111), counters) == 0
    assert receive(tracks, packet(2, 50, 480, vp8(5, 1, key=True), 111), counters) == 0
    assert [received(link)[1] for _ in range(2)] == [looks_like_vp8, vp8(5, 1, key=True)]
