"""Simulcast layer switches of H.264 cameras in the C packet path (mcu/_fanout.c).

A leg moves to its target layer only at that layer's keyframe, and for H.264 at the
keyframe's packet that carries the SPS: the layers are pictures of different sizes, so
the subscriber's decoder must get the new layer's parameter sets before its IDR. Sequence
numbers and timestamps continue the leg's own, as for VP8; no byte of an H.264 payload is
changed (the VP8 picture-ID rewrite never touches one), live or resent from the NACK
history. Hand-built payloads for each packetization, and two layers from a real encoder
(libx264 through aiortc) decoded by FFmpeg on the subscriber's side. Real SRTP on a
loopback socket, as in test_layer_switch.py.
"""

from __future__ import annotations

import fractions
import itertools
from collections.abc import Iterator

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from mcu._fanout import (
    CODEC_H264,
    RECEIVED_SWITCHED,
    RECEIVED_WANTS_KEYFRAME,
    Leg,
    receive,
)

from mcu import rtp
from mcu.mixer.h264 import depayload
from tests.mcu.test_fanout import Link
from tests.mcu.test_h264 import IDR, PPS, SEI, SLICE, SPS, fu_a, stap_a
from tests.mcu.test_layer_switch import (
    PT,
    SSRC_A,
    SSRC_B,
    Camera,
    received,
    switching_leg,
    vp8,
    vp8_ids,
)


@pytest.fixture
def link() -> Iterator[Link]:
    made = Link()
    yield made
    made.close()


def h264_leg(link: Link, camera: Camera, ssrc: int = 0x264, next_seq: int = 1000) -> Leg:
    leg = switching_leg(link, camera, ssrc=ssrc, next_seq=next_seq)
    leg.codec = CODEC_H264
    return leg


def test_a_leg_moves_at_the_targets_idr_with_its_sps_and_at_no_other_packet(link: Link) -> None:
    camera = Camera(codec=CODEC_H264)
    leg = h264_leg(link, camera)
    layer_a = [stap_a(SPS, PPS), fu_a(IDR, start=True, end=False), fu_a(IDR, start=False, end=True),
               fu_a(SLICE, start=True, end=False)]
    for payload in layer_a:
        assert camera.send(SSRC_A, payload) == 0
    got = [received(link) for _ in layer_a]
    assert [view.sequence_number for view, _, _ in got] == [1000, 1001, 1002, 1003]
    assert [payload for _, payload, _ in got] == layer_a
    last_a = got[-1][0]

    leg.target = camera.b
    # None of these is where a decoder of layer B could start with B's parameter sets:
    # a P picture (fragmented or whole), a middle fragment of an IDR, a lone PPS or SEI,
    # and an IDR whose SPS did not come (lost): each asks for a keyframe, sends nothing.
    not_yet = [fu_a(SLICE, start=True, end=False), SLICE, fu_a(IDR, start=False, end=False), PPS, SEI,
               fu_a(IDR, start=True, end=False), IDR, stap_a(SEI, PPS, IDR)]
    for payload in not_yet:
        assert camera.send(SSRC_B, payload) == RECEIVED_WANTS_KEYFRAME, payload
    assert link.nothing_waiting()
    assert leg.source is camera.a and leg.target is camera.b
    # Layer A goes on meanwhile, with no gap in our numbers.
    assert camera.send(SSRC_A, SLICE) == 0
    still_a, still_a_payload, _ = received(link)
    assert still_a.sequence_number == 1004 and still_a_payload == SLICE

    # B's keyframe as Chrome packetizes it: SPS and PPS aggregated, then the IDR in FU-A.
    flags = camera.send(SSRC_B, stap_a(SPS, PPS))
    assert flags & RECEIVED_SWITCHED and not flags & RECEIVED_WANTS_KEYFRAME
    assert leg.source is camera.b and leg.target is None
    for payload in (fu_a(IDR, start=True, end=False), fu_a(IDR, start=False, end=True), SLICE):
        assert camera.send(SSRC_B, payload) == 0
    out = [received(link) for _ in range(4)]
    assert [view.sequence_number for view, _, _ in out] == [1005, 1006, 1007, 1008]
    assert [payload for _, payload, _ in out] == [stap_a(SPS, PPS), fu_a(IDR, start=True, end=False),
                                                  fu_a(IDR, start=False, end=True), SLICE]
    # Our timestamps go on a little after A's last, not on B's own clock (each packet
    # Camera.send makes is a picture of its own, 3000 ticks on).
    first_b = out[0][0]
    assert 0 < (first_b.timestamp - still_a.timestamp) & 0xFFFFFFFF < 90000
    assert [(view.timestamp - first_b.timestamp) & 0xFFFFFFFF for view, _, _ in out] == [0, 3000, 6000, 9000]
    assert first_b.timestamp != last_a.timestamp
    # A is not sent any more.
    assert camera.send(SSRC_A, SLICE) == 0
    assert link.nothing_waiting()


@pytest.mark.parametrize("keyframe", [
    [SPS, PPS, IDR],  # each parameter set a packet of its own
    [stap_a(SPS, PPS, IDR)],  # a small keyframe in one aggregate
    [stap_a(SEI, SPS, PPS), fu_a(IDR, start=True, end=True)],  # the SPS not the first unit
], ids=["single-nal-units", "stap-a-with-idr", "stap-a-sei-first"])
def test_every_packetization_of_the_sps_is_a_switch_point(link: Link, keyframe: list[bytes]) -> None:
    camera = Camera(codec=CODEC_H264)
    leg = h264_leg(link, camera)
    camera.send(SSRC_A, stap_a(SPS, PPS, IDR))
    received(link)
    leg.target = camera.b
    flags = [camera.send(SSRC_B, payload) for payload in keyframe]
    assert flags[0] == RECEIVED_SWITCHED and not any(flags[1:])
    assert [received(link)[1] for _ in keyframe] == keyframe
    assert leg.source is camera.b


def test_a_first_start_still_takes_an_idr_without_its_sps(link: Link) -> None:
    """Only a switch between layers needs the SPS: a leg's first start may begin at an IDR
    (its subscriber has no parameter sets of another size, and asks for them itself)."""
    camera = Camera(codec=CODEC_H264)
    leg = h264_leg(link, camera)
    assert camera.send(SSRC_A, SLICE) == RECEIVED_WANTS_KEYFRAME
    assert camera.send(SSRC_A, fu_a(IDR, start=True, end=False)) == 0
    assert received(link)[1] == fu_a(IDR, start=True, end=False) and leg.started


def test_no_byte_of_an_h264_payload_changes_live_or_resent_after_vp8_offsets(link: Link) -> None:
    """A leg that switched VP8 layers has picture-ID and TL0PICIDX offsets; renegotiated to
    H.264 (Leg.codec) and switched between H.264 layers, its payloads go out and are
    resent exactly as the publisher sent them, though they look like VP8 with an ID."""
    vp8_camera = Camera()
    leg = switching_leg(link, vp8_camera, ssrc=0x5151, next_seq=200)
    vp8_camera.send(SSRC_A, vp8(30000, 100, key=True))
    leg.target = vp8_camera.b
    vp8_camera.send(SSRC_B, vp8(5, 7, key=True))
    first, moved = received(link)[1], received(link)[1]
    assert vp8_ids(first)[:2] == (30000, 100) and vp8_ids(moved)[:2] == (30001, 101)  # offsets set

    camera = Camera(codec=CODEC_H264)
    vp8_camera.a.legs = vp8_camera.b.legs = ()
    leg.codec, leg.started, leg.rebase_ts = CODEC_H264, False, True
    leg.target = None
    leg.source = camera.a
    camera.a.legs = camera.b.legs = (leg,)
    # Forbidden bit set, so that read as VP8 they have X, I (15-bit) and L: a rewrite
    # would change bytes 2-4.
    sps_a = b"\xe7\xc0\x80\x10\x20" + SPS[1:]
    slice_a = b"\xfc\xc1\x80\x11\x21" + b"slice of A"
    sps_b = b"\xe7\xc0\x81\x00\x05" + SPS[1:]
    idr_b = b"\xfc\x85\x81\x01\x06" + b"idr of B"
    sent = [(SSRC_A, sps_a), (SSRC_A, slice_a)]
    for ssrc, payload in sent:
        camera.send(ssrc, payload)
    leg.target = camera.b
    assert camera.send(SSRC_B, sps_b) & RECEIVED_SWITCHED
    camera.send(SSRC_B, idr_b)
    payloads = [sps_a, slice_a, sps_b, idr_b]
    out = [received(link) for _ in payloads]
    assert [payload for _, payload, _ in out] == payloads
    assert [view.sequence_number for view, _, _ in out] == [202, 203, 204, 205]
    for view, payload, data in out:
        again = leg.sent(view.sequence_number)
        assert again == data  # header and payload as first sent: no offset re-applied
        assert rtp.parse_rtp(again).payload(again) == payload


# Two layers from a real encoder ---------------------------------------------------------


def drain(link: Link) -> list[tuple[rtp.RtpView, bytes, bytes]]:
    """Every packet waiting on the link now."""
    out = []
    link.receiver.setblocking(False)
    try:
        while True:
            data = link.rx.unprotect(link.receiver.recv(2048))
            view = rtp.parse_rtp(data)
            out.append((view, view.payload(data), data))
    except BlockingIOError:
        return out
    finally:
        link.receiver.settimeout(2)


def encode_layer(width: int, height: int, count: int, keyframes: set[int]) -> list[list[bytes]]:
    """``count`` pictures of a moving pattern at one size, as RTP payloads per picture."""
    encoder = get_encoder(RTCRtpCodecParameters(
        mimeType="video/H264", clockRate=90000, payloadType=PT,
        parameters={"packetization-mode": "1", "profile-level-id": "42e01f"}))
    generator = np.random.default_rng(width)
    pictures = []
    for index in range(count):
        image = generator.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=index in keyframes)
        pictures.append(payloads)
    return pictures


def test_a_real_encoders_layers_decode_without_a_break_across_a_switch(link: Link) -> None:
    camera = Camera(codec=CODEC_H264)
    leg = h264_leg(link, camera)
    big = encode_layer(320, 180, 10, keyframes={0})
    small = encode_layer(160, 90, 10, keyframes={0, 6})  # the keyframe the switch waits for
    timestamps = {SSRC_A: 3000, SSRC_B: 777_000}
    seqs = {SSRC_A: 10, SSRC_B: 60_000}
    sent = []
    got: list[tuple[rtp.RtpView, bytes, bytes]] = []
    for index in range(10):
        if index == 2:
            leg.target = camera.b
        for ssrc, pictures in ((SSRC_A, big), (SSRC_B, small)):
            payloads = pictures[index]
            for number, payload in enumerate(payloads):
                marker = number == len(payloads) - 1
                header = rtp.rtp_header(PT, marker, seqs[ssrc] & 0xFFFF, timestamps[ssrc], ssrc, False)
                data = header + payload
                seqs[ssrc] += 1
                flags = receive(camera.tracks, data, camera.counters)
                if flags & RECEIVED_SWITCHED:
                    sent.append(("switched", index))
            timestamps[ssrc] += 3000
            got += drain(link)  # a noise picture is big: more than a socket buffer holds
    assert sent == [("switched", 6)]
    assert leg.source is camera.b and leg.target is None

    # What the subscriber got: A's pictures 0-6 (A's 6th went out before B's keyframe of
    # that instant), then B's from its keyframe on, every payload as encoded, on one run
    # of sequence numbers.
    expected = [payload for pictures in big[:7] for payload in pictures]
    expected += [payload for pictures in small[6:] for payload in pictures]
    assert link.nothing_waiting()
    assert [payload for _, payload, _ in got] == expected
    assert [view.sequence_number for view, _, _ in got] == list(range(1000, 1000 + len(expected)))

    # FFmpeg decodes it as one stream: seven pictures of 320x180, then four of 160x90,
    # each picture's timestamp later than the one before.
    decoder = av.CodecContext.create("h264", "r")
    sizes = []
    pictures: list[tuple[int, bytes]] = []
    for view, payload, _ in got:
        annex_b, _ = depayload(payload)
        if pictures and pictures[-1][0] == view.timestamp:
            pictures[-1] = (view.timestamp, pictures[-1][1] + annex_b)
        else:
            pictures.append((view.timestamp, annex_b))
    assert all(((later[0] - earlier[0]) & 0xFFFFFFFF) - 1 < 0x7FFFFFFF
               for earlier, later in itertools.pairwise(pictures))
    for _, access_unit in pictures:
        for frame in decoder.decode(av.Packet(access_unit)):
            sizes.append((frame.width, frame.height))
    for frame in decoder.decode(None):
        sizes.append((frame.width, frame.height))
    assert sizes == [(320, 180)] * 7 + [(160, 90)] * 4
