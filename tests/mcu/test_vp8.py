"""VP8 keyframe detection on packets from a real encoder."""

from __future__ import annotations

import fractions

import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame
from mcu._fanout import is_keyframe_start


def encoded_frames(count: int) -> list[list[bytes]]:
    encoder = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    frames = []
    for index in range(count):
        image = np.full((240, 320, 3), index * 7 % 255, dtype=np.uint8)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=index == 5)
        frames.append(payloads)
    return frames


def test_keyframes_are_found_only_at_their_first_packet() -> None:
    frames = encoded_frames(8)
    assert is_keyframe_start(frames[0][0])  # the first frame is a keyframe
    assert is_keyframe_start(frames[5][0])  # and the forced one
    for index in (1, 2, 3, 4, 6, 7):
        assert not is_keyframe_start(frames[index][0])
    for payloads in frames:
        for later in payloads[1:]:
            assert not is_keyframe_start(later)
    assert not is_keyframe_start(b"") and not is_keyframe_start(b"\x90")
