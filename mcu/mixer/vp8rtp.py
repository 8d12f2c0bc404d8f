"""VP8 over RTP (RFC 7741): join payloads into frames, and split frames into payloads.

The compositor decodes whole frames and makes whole frames; these two functions are
the seam to the RTP side: `Vp8Depacketizer` for a source's incoming packets, and
`packetize` for the composite's outgoing ones (the caller sets the marker bit on
the last payload and writes the RTP header per subscriber).
"""

from __future__ import annotations

from dataclasses import dataclass

from .vp8 import is_keyframe

MAX_PAYLOAD = 1200  # bytes of RTP payload: stays under a 1280-byte IPv6 minimum MTU path


def parse_descriptor(payload: bytes) -> tuple[int, bool]:
    """Length of the payload descriptor and whether this payload starts a frame.

    Raises ValueError for a payload too short for the descriptor it announces.
    """
    if not payload:
        raise ValueError("empty VP8 payload")
    first = payload[0]
    size = 1
    if first & 0x80:  # X: extension byte
        if len(payload) < 2:
            raise ValueError("truncated VP8 descriptor")
        ext = payload[1]
        size = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) < 3:
                raise ValueError("truncated VP8 picture id")
            size += 2 if payload[2] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            size += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            size += 1
    if len(payload) <= size:
        raise ValueError("VP8 payload without data")
    start = bool(first & 0x10) and (first & 0x07) == 0  # S and partition index 0
    return size, start


def packetize(frame: bytes, picture_id: int, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """RTP payloads for one frame, each with a descriptor carrying a 15-bit picture id."""
    pid = picture_id & 0x7FFF
    ext = bytes([0x80, 0x80 | (pid >> 8), pid & 0xFF])  # I; then M + a 15-bit id
    first = b"\x90" + ext  # X and S: the start of partition 0
    rest = b"\x80" + ext
    room = max_payload - len(first)
    return [
        (first if pos == 0 else rest) + frame[pos : pos + room]
        for pos in range(0, max(len(frame), 1), room)
    ]


@dataclass(frozen=True, slots=True)
class Vp8Frame:
    data: bytes
    timestamp: int  # RTP timestamp, 90 kHz
    keyframe: bool
    after_gap: bool  # a frame before this one was lost: decoding may need a key frame


class Vp8Depacketizer:
    """Joins a source's RTP payloads into VP8 frames, tolerating reordering within a
    frame. A frame with a missing packet is dropped, never handed on damaged."""

    def __init__(self) -> None:
        self._ts: int | None = None
        self._parts: dict[int, bytes] = {}
        self._start: int | None = None
        self._end: int | None = None
        self._last_end: int | None = None  # seq of the last packet of the last frame out
        self._gap = False
        self._done_ts: int | None = None
        self.dropped_frames = 0
        self.invalid = 0

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> Vp8Frame | None:
        try:
            size, start = parse_descriptor(payload)
        except ValueError:
            self.invalid += 1
            return None
        seq &= 0xFFFF
        if timestamp == self._done_ts:
            return None  # a duplicate or retransmission of a frame already out
        if timestamp != self._ts:
            if self._parts:
                self.dropped_frames += 1  # the previous frame never completed
                self._gap = True
            self._ts = timestamp
            self._parts = {}
            self._start = self._end = None
        self._parts[seq] = payload[size:]
        if start:
            self._start = seq
        if marker:
            self._end = seq
        if self._start is None or self._end is None:
            return None
        count = ((self._end - self._start) & 0xFFFF) + 1
        if count > len(self._parts):
            return None
        seqs = [(self._start + i) & 0xFFFF for i in range(count)]
        if any(s not in self._parts for s in seqs):
            return None
        data = b"".join(self._parts[s] for s in seqs)
        gap = self._gap or (
            self._last_end is not None and (self._start - self._last_end) & 0xFFFF != 1
        )
        self._last_end = self._end
        self._done_ts = timestamp
        self._parts = {}
        self._start = self._end = None
        self._gap = False
        return Vp8Frame(data, timestamp, is_keyframe(data), gap)
