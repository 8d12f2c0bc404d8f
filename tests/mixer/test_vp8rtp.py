"""VP8 RTP payloads: our packetizer against aiortc's public depayloader, and back."""

from __future__ import annotations

import random

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor, vp8_depayload

from mcu.mixer.vp8 import Vp8Decoder
from mcu.mixer.vp8rtp import Vp8Depacketizer, packetize, parse_descriptor
from tests.mixer.mixer_media import vp8_frames


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return vp8_frames((200, 100, 50), 8, size=(640, 480))


def rtp(frames: list[bytes], seq0: int = 65000) -> list[tuple[int, int, bool, bytes]]:
    packets = []
    seq = seq0
    for i, frame in enumerate(frames):
        payloads = packetize(frame, picture_id=32760 + i, max_payload=300)
        for j, payload in enumerate(payloads):
            packets.append((seq & 0xFFFF, i * 3000, j == len(payloads) - 1, payload))
            seq += 1
    return packets


def test_packetized_frames_are_read_back_by_aiortc(frames) -> None:
    for n, frame in enumerate(frames):
        payloads = packetize(frame, picture_id=30000 + n)
        for k, payload in enumerate(payloads):
            descriptor, _ = VpxPayloadDescriptor.parse(payload)
            assert descriptor.picture_id == 30000 + n
            assert descriptor.partition_start == (k == 0) and descriptor.partition_id == 0
        assert all(len(p) <= 1200 for p in payloads)
        assert b"".join(vp8_depayload(p) for p in payloads) == frame
        assert parse_descriptor(payloads[0])[1] and not any(
            parse_descriptor(p)[1] for p in payloads[1:]
        )


def test_frames_are_joined_across_seq_wrap_and_reordering(frames) -> None:
    packets = rtp(frames)
    rng = random.Random(2)
    for k in range(0, len(packets) - 1, 2):  # swap neighbours now and then
        if rng.random() < 0.5 and packets[k][1] == packets[k + 1][1]:
            packets[k], packets[k + 1] = packets[k + 1], packets[k]
    depack = Vp8Depacketizer()
    out = [f for p in packets if (f := depack.push(*p)) is not None]
    assert [f.data for f in out] == frames
    assert out[0].keyframe and not any(f.after_gap for f in out)
    decoder = Vp8Decoder()
    assert all(decoder.decode(f.data) is not None for f in out)


def test_a_lost_packet_drops_its_frame_and_flags_the_next(frames) -> None:
    packets = rtp(frames)
    lost = next(i for i, p in enumerate(packets) if p[1] == 3 * 3000)
    depack = Vp8Depacketizer()
    out = [f for i, p in enumerate(packets) if i != lost and (f := depack.push(*p)) is not None]
    assert [f.timestamp for f in out] == [i * 3000 for i in range(8) if i != 3]
    assert [f.after_gap for f in out].count(True) == 1
    assert out[3].after_gap


def test_garbage_payloads_are_refused() -> None:
    depack = Vp8Depacketizer()
    for junk in (b"", b"\x80", b"\x80\x80", b"\x90"):
        assert depack.push(1, 0, True, junk) is None
    assert depack.invalid == 4
