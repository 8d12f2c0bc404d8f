"""H.264 cameras for the composite: payloads from a real encoder (libx264 through aiortc)
joined into access units and decoded, with loss and reordering."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

from mcu.mixer.h264 import H264Decoder, H264Depacketizer, depayload, is_keyframe
from mcu.mixer.vp8 import SelectiveDecoder

Packet = tuple[int, int, bool, bytes]


def h264_packets(count: int, keyframes: set[int], seq0: int = 65530) -> list[list[Packet]]:
    """Each picture's RTP packets (seq, timestamp, marker, payload): a moving gradient
    with noise, so pictures are several packets (STAP-A, FU-A and single NAL units)."""
    encoder = get_encoder(RTCRtpCodecParameters(
        mimeType="video/H264", clockRate=90000, payloadType=102,
        parameters={"packetization-mode": "1", "profile-level-id": "42e01f"}))
    generator = np.random.default_rng(264)
    pictures, seq = [], seq0
    for index in range(count):
        image = np.zeros((240, 320, 3), dtype=np.uint8)
        image[..., 0] = (np.arange(320) + index * 9) % 256
        image[..., 1] = generator.integers(0, 256, (240, 320), dtype=np.uint8)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=index in keyframes)
        packets = []
        for position, payload in enumerate(payloads):
            packets.append((seq & 0xFFFF, timestamp, position == len(payloads) - 1, payload))
            seq += 1
        pictures.append(packets)
    return pictures


@pytest.fixture(scope="module")
def pictures() -> list[list[Packet]]:
    return h264_packets(6, keyframes={4})


def test_every_picture_comes_out_whole_and_decodes(pictures: list[list[Packet]]) -> None:
    depacketizer, decoder = H264Depacketizer(), H264Decoder()
    decoded = []
    for index, packets in enumerate(pictures):
        assert len(packets) > 1 or index not in (0, 4)  # keyframes: STAP-A, then FU-A
        out = [depacketizer.push(*packet) for packet in packets]
        assert all(frame is None for frame in out[:-1]) and out[-1] is not None
        frame = out[-1]
        assert frame.keyframe == (index in (0, 4)) and frame.after_gap == (index == 0)
        picture = decoder.decode(frame.data)
        assert picture is not None and (picture.width, picture.height) == (320, 240)
        decoded.append(picture)
    assert decoder.errors == 0 and depacketizer.invalid == 0
    # The gradient moved: these are the pictures sent, not one repeated.
    first, last = (p.to_ndarray(format="gray") for p in (decoded[0], decoded[-1]))
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 5


def test_a_picture_with_a_lost_packet_is_dropped_and_the_decoder_waits_for_a_keyframe(
        pictures: list[list[Packet]]) -> None:
    depacketizer, decoder = H264Depacketizer(), H264Decoder()
    frames = []
    for index, packets in enumerate(pictures):
        for position, packet in enumerate(packets):
            if index == 1 and position == 1:
                continue  # lost on the way
            frame = depacketizer.push(*packet)
            if frame is not None:
                frames.append((index, frame))
    # Picture 2 follows what was seen of picture 1 (its marked packet came).
    assert [index for index, _ in frames] == [0, 2, 3, 4, 5]
    assert [frame.after_gap for _, frame in frames] == [True, True, False, False, False]
    assert depacketizer.dropped_frames == 1
    # A decoder that (re)starts after the loss decodes nothing before the next IDR.
    restarted = H264Decoder()
    assert [restarted.decode(frame.data) is not None for index, frame in frames if index > 0] \
        == [False, False, True, True]
    assert decoder.decode(frames[0][1].data) is not None


def test_reordered_packets_within_a_picture_still_make_it(pictures: list[list[Packet]]) -> None:
    depacketizer = H264Depacketizer()
    for packets in pictures[:1]:
        order = [packets[-1], *packets[:-1][::-1]]  # the marked one first, the rest backwards
        out = [depacketizer.push(*packet) for packet in order]
    assert out[-1] is not None and out[-1].keyframe
    assert all(frame is None for frame in out[:-1])


def test_a_picture_whose_head_is_lost_is_not_handed_on(pictures: list[list[Packet]]) -> None:
    keyframe = pictures[0]
    assert keyframe[0][3][0] & 0x1F == 24 and keyframe[1][3][:2] == bytes([0x7C, 0x85])
    # Without the parameter sets: it begins with the IDR's first fragment, and whether
    # anything came before it is not known.
    depacketizer = H264Depacketizer()
    assert all(depacketizer.push(*packet) is None for packet in keyframe[1:])
    # Without the first fragment too: the rest begins inside a fragmented NAL unit.
    depacketizer = H264Depacketizer()
    assert all(depacketizer.push(*packet) is None for packet in keyframe[2:])
    # The next keyframe is taken whole, the dropped picture counted.
    later = [depacketizer.push(*packet) for packet in pictures[4]]
    assert later[-1] is not None and later[-1].keyframe and later[-1].after_gap
    assert depacketizer.dropped_frames == 1


def test_malformed_payloads_are_counted_not_raised() -> None:
    depacketizer = H264Depacketizer()
    for bad in (b"", b"\x78\x00", b"\x78\x00\x09\x65", b"\x7c", b"\x79\x00", b"\x60\x00"):
        assert depacketizer.push(1, 3000, True, bad) is None
    assert depacketizer.invalid == 6
    with pytest.raises(ValueError):
        depayload(b"\x78\x00\x00")
    assert not is_keyframe(b"") and is_keyframe(b"\x00\x00\x00\x01\x65\x88")


def test_the_selective_decoder_follows_a_source_s_codec(pictures: list[list[Packet]]) -> None:
    decoders = SelectiveDecoder()
    assert decoders.select(["camera"]) == ["camera"]
    depacketizer = H264Depacketizer()
    frame = None
    for packet in pictures[0]:
        frame = depacketizer.push(*packet) or frame
    assert frame is not None
    assert decoders.decode("camera", frame.data, "h264") is not None
    assert not decoders.needs_keyframe("camera")
    # Read as VP8 it is not a keyframe: nothing is decoded, nothing raised.
    assert decoders.decode("camera", frame.data, "vp8") is None
    assert decoders.needs_keyframe("camera")
