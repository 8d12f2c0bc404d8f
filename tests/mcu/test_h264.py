"""H.264 in the C packet path (RFC 6184): where a keyframe starts, and legs of one codec.

Hand-built payloads for each packetization (single NAL unit, STAP-A, FU-A), payloads
from a real encoder (libx264 through aiortc), and the receive path: an H.264 track's
leg starts at the packet a decoder can start from, and a leg negotiated for VP8 never
gets its bytes.
"""

from __future__ import annotations

import fractions
import random
import socket
from collections.abc import Iterator

import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame
from mcu._fanout import (
    CODEC_H264,
    CODEC_NONE,
    CODEC_VP8,
    RECEIVED_WANTS_KEYFRAME,
    Counters,
    Leg,
    Sink,
    Track,
    is_keyframe_start,
    receive,
)

from mcu import rtp

SPS = b"\x67\x42\xe0\x1f\x8c\x8d\x40"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00\x33\xff"
SLICE = b"\x41\x9a\x02\x03"  # a non-IDR slice (type 1)
SEI = b"\x06\x05\x01\xff"


def h264(payload: bytes) -> bool:
    return is_keyframe_start(payload, CODEC_H264)


def stap_a(*units: bytes) -> bytes:
    return b"\x78" + b"".join(len(unit).to_bytes(2, "big") + unit for unit in units)


def fu_a(unit: bytes, *, start: bool, end: bool) -> bytes:
    indicator = (unit[0] & 0xE0) | 28
    header = (0x80 if start else 0) | (0x40 if end else 0) | (unit[0] & 0x1F)
    return bytes([indicator, header]) + unit[1:]


def test_single_nal_units_start_a_keyframe_at_the_sps_or_an_idr() -> None:
    assert h264(SPS) and h264(IDR)
    assert not h264(PPS)  # the SPS before it started the keyframe
    assert not h264(SLICE) and not h264(SEI)
    assert not h264(b"") and not h264(b"\x00") and not h264(b"\x1f")  # 0 and reserved types


def test_stap_a_is_walked_for_a_parameter_set_or_an_idr() -> None:
    assert h264(stap_a(SPS, PPS))  # Chrome's: the parameter sets, then the IDR as FU-A
    assert h264(stap_a(SPS, PPS, IDR))
    assert h264(stap_a(SEI, PPS, IDR))  # found past the first aggregated unit
    assert not h264(stap_a(SEI, PPS))
    assert not h264(stap_a(SEI, SLICE))
    assert not h264(b"\x78")  # no unit at all


def test_stap_a_sizes_that_do_not_fit_are_not_trusted() -> None:
    whole = stap_a(SEI, IDR)
    assert not h264(whole[:-1])  # the IDR's declared size runs past the payload
    assert not h264(b"\x78" + (200).to_bytes(2, "big") + IDR)
    assert not h264(b"\x78\x00\x00" + IDR)  # a zero size
    assert not h264(b"\x78\x00")  # half a size field
    assert not h264(b"\x78\x00\x01")  # a size and no unit
    # A good SPS first does not vouch for the rest: a unit cut short voids the packet.
    assert not h264(stap_a(SPS, PPS, IDR)[:-1])
    assert not h264(stap_a(SPS, PPS) + b"\x00")  # half a size field after the units


def test_fu_a_starts_a_keyframe_only_on_the_first_fragment_of_an_idr() -> None:
    assert h264(fu_a(IDR, start=True, end=False))
    assert not h264(fu_a(IDR, start=False, end=False))  # a middle fragment
    assert not h264(fu_a(IDR, start=False, end=True))  # the last one
    assert not h264(fu_a(SLICE, start=True, end=False))  # a P picture begins
    assert not h264(fu_a(IDR, start=True, end=True)[:2])  # a start with no NAL byte
    assert not h264(b"\x7c")  # the indicator alone


def test_other_packetizations_and_types_are_not_keyframes() -> None:
    for nal_type in (0, 25, 26, 27, 29, 30, 31):  # STAP-B, MTAP16/24, FU-B: not in mode 1
        assert not h264(bytes([0x60 | nal_type, 0x85]) + IDR)


def test_the_codec_decides_how_a_payload_is_read() -> None:
    vp8_keyframe = b"\x10\x00\x00\x00"  # S set, partition 0, inverse key frame bit clear
    assert is_keyframe_start(vp8_keyframe) and is_keyframe_start(vp8_keyframe, CODEC_VP8)
    assert not h264(vp8_keyframe)  # type 16: reserved
    assert not is_keyframe_start(IDR, CODEC_VP8)  # 0x65: no S bit, as VP8
    assert not is_keyframe_start(IDR, CODEC_NONE) and not is_keyframe_start(IDR, 99)


def test_garbage_never_crashes_and_is_rarely_a_keyframe() -> None:
    generator = random.Random(6184)
    for first in range(256):
        for length in range(0, 6):
            h264(bytes([first]) + bytes(generator.getrandbits(8) for _ in range(length)))
    for _ in range(20_000):
        data = bytes(generator.getrandbits(8) for _ in range(generator.randrange(0, 40)))
        found = h264(data)
        if found and data[0] & 0x1F not in (24, 28):
            assert data[0] & 0x1F in (5, 7)


def encoded_frames(count: int, keyframes: set[int]) -> list[list[bytes]]:
    encoder = get_encoder(RTCRtpCodecParameters(
        mimeType="video/H264", clockRate=90000, payloadType=102,
        parameters={"packetization-mode": "1", "profile-level-id": "42e01f"}))
    generator = np.random.default_rng(7)
    frames = []
    for index in range(count):
        # Noise: big frames, so the IDR is fragmented (FU-A) behind a STAP-A of SPS/PPS.
        image = generator.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=index in keyframes)
        frames.append(payloads)
    return frames


def test_a_real_encoders_keyframes_start_at_their_first_packet_and_nowhere_else() -> None:
    frames = encoded_frames(6, keyframes={3})
    for index, payloads in enumerate(frames):
        if index in (0, 3):  # the first picture and the forced one
            assert h264(payloads[0])  # the parameter sets lead the frame
            assert payloads[0][0] & 0x1F == 24
        else:
            assert not any(h264(payload) for payload in payloads)


# The receive path with codecs -----------------------------------------------------------


@pytest.fixture
def plain_link() -> Iterator[tuple[Sink, socket.socket]]:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    sink = Sink()
    sink.bind(sender.fileno(), *receiver.getsockname(), 0, 0, None)
    yield sink, receiver
    sink.unbind()
    sender.close()
    receiver.close()


def packet(seq: int, payload: bytes, timestamp: int = 9000) -> bytes:
    return rtp.rtp_header(102, False, seq, timestamp, 0xABC, False) + payload


def video_leg(sink: Sink, ssrc: int, codec: int) -> Leg:
    leg = Leg(video=True, codec=codec)
    leg.ssrc, leg.payload_type, leg.next_seq, leg.sink = ssrc, 102, 100, sink
    return leg


def test_an_h264_leg_starts_at_the_parameter_sets_and_a_vp8_leg_gets_nothing(
        plain_link: tuple[Sink, socket.socket]) -> None:
    sink, receiver = plain_link
    track = Track(video=True, codec=CODEC_H264)
    track.payload_type = 102
    h264_leg = video_leg(sink, 0x264, CODEC_H264)
    vp8_leg = video_leg(sink, 0x8, CODEC_VP8)
    vp8_leg.started = True  # even a leg past its gate: another codec's bytes never go out
    track.legs = (vp8_leg, h264_leg)
    counters = Counters()
    assert receive({0xABC: track}, packet(1, fu_a(SLICE, start=True, end=False)), counters) \
        == RECEIVED_WANTS_KEYFRAME
    assert receive({0xABC: track}, packet(2, stap_a(SPS, PPS), 12000), counters) == 0
    assert receive({0xABC: track}, packet(3, fu_a(IDR, start=True, end=False), 12000), counters) == 0
    got = [rtp.parse_rtp(receiver.recv(2048)) for _ in range(2)]
    assert [(v.ssrc, v.sequence_number) for v in got] == [(0x264, 100), (0x264, 101)]
    assert vp8_leg.packets == 0 and h264_leg.packets == 2
    assert counters.packets_forwarded == 2
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recv(2048)


def test_codecs_must_fit_the_kind() -> None:
    assert Track(video=True).codec == CODEC_VP8 and Leg(video=True).codec == CODEC_VP8
    assert Track(video=False).codec == CODEC_NONE and Leg(video=False).codec == CODEC_NONE
    with pytest.raises(ValueError):
        Leg(video=False, codec=CODEC_H264)
    with pytest.raises(ValueError):
        Track(video=True, codec=CODEC_NONE)
    with pytest.raises(ValueError):
        Track(video=True, codec=7)
