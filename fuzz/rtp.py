"""RTP: one decrypted packet from a publisher, through the C packet path.

A participant's decrypted packet goes to ``mcu._fanout.receive`` (mcu/participant.py
``_on_rtp``); one whose SSRC it does not know yet goes to ``mcu.rtp.parse_rtp``, which is
the same C header parser. Bad input must come back as RECEIVED_MALFORMED (counted,
dropped) or :class:`MalformedPacket`, never as another exception or a crash. Checked
too: the two agree on what is malformed, and what a leg sends parses again with the
packet's payload. The last byte's low bits choose audio, VP8 or H.264 for the track, so
each codec's keyframe detection (RFC 7741, RFC 6184: single NAL unit, STAP-A, FU-A)
reads the payload as the receive path does, and is_keyframe_start agrees with it.
"""

from __future__ import annotations

import socket

from mcu._fanout import (
    CODEC_H264,
    CODEC_NONE,
    CODEC_VP8,
    RECEIVED_MALFORMED,
    RECEIVED_UNKNOWN,
    Counters,
    Leg,
    Sink,
    Track,
    is_keyframe_start,
    receive,
)

from mcu import rtp

_out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_out.bind(("127.0.0.1", 0))
_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_in.bind(("127.0.0.1", 0))
_in.setblocking(False)
_sink = Sink()
_sink.bind(_out.fileno(), *_in.getsockname(), 0, 0, None)  # plain RTP, as on a pipe
_counters = Counters()


def _track(codec: int, payload_type: int) -> Track:
    video = codec != CODEC_NONE
    track = Track(video=video, codec=codec)
    track.payload_type = payload_type
    leg = Leg(video=video, codec=codec)
    leg.ssrc, leg.payload_type, leg.sink, leg.started = 0x5EED, payload_type, _sink, True
    track.legs = (leg,)
    # A second leg waits for a keyframe: it sends exactly when the detector says one starts.
    waiting = Leg(video=video, codec=codec)
    waiting.ssrc, waiting.payload_type, waiting.sink = 0x5EEE, payload_type, _sink
    track.legs = (leg, waiting) if video else (leg,)
    return track


def _codec(data: bytes) -> int:
    return (CODEC_NONE, CODEC_VP8, CODEC_H264, CODEC_H264)[data[-1] & 3] if data else CODEC_NONE


def one_input(data: bytes) -> None:
    try:
        view = rtp.parse_rtp(data)
    except rtp.MalformedPacket:
        view = None
    if view is None:
        # The SSRC (if any) maps to a track, so only the header check can refuse it.
        ssrc = int.from_bytes(data[8:12], "big") if len(data) >= 12 else 0
        flags = receive({ssrc: _track(CODEC_NONE, 111)}, data, _counters)
        assert flags == RECEIVED_MALFORMED, (flags, data)
        return
    assert 12 <= view.payload_start <= view.payload_end <= len(data)
    codec = _codec(data)
    payload = data[view.payload_start:view.payload_end]
    keyframe = codec != CODEC_NONE and is_keyframe_start(payload, codec)
    flags = receive({view.ssrc: _track(codec, view.payload_type)}, data, _counters)
    assert not flags & (RECEIVED_MALFORMED | RECEIVED_UNKNOWN), flags
    try:
        sent = _in.recv(4096)
    except BlockingIOError:  # too long to forward with our header: counted as a send error
        assert len(data) - view.payload_start > 1400, len(data)
        return
    again = rtp.parse_rtp(sent)
    assert again.ssrc == 0x5EED and again.sequence_number == view.sequence_number
    # The payload travels as it came (padding included, flagged in the header again).
    assert sent[again.payload_start:] == data[view.payload_start:]
    try:  # the waiting leg: sent exactly when a keyframe starts here
        second = _in.recv(4096)
    except BlockingIOError:
        second = None
    assert (second is not None) == keyframe, (codec, payload[:8])
    if second is not None:
        assert rtp.parse_rtp(second).ssrc == 0x5EEE
