"""VP8 RTP payload descriptor (RFC 7741): enough to find where a keyframe starts."""

from __future__ import annotations


def is_keyframe_start(payload: bytes) -> bool:
    """True when this packet begins a VP8 keyframe (first partition start, P bit clear)."""
    if len(payload) < 1:
        return False
    first = payload[0]
    start_of_partition = first & 0x10
    partition_index = first & 0x07
    if not start_of_partition or partition_index != 0:
        return False
    offset = 1
    if first & 0x80:  # X: extended control bits follow
        if len(payload) < 2:
            return False
        extended = payload[1]
        offset = 2
        if extended & 0x80:  # I: picture ID, 7 or 15 bits
            if len(payload) <= offset:
                return False
            offset += 2 if payload[offset] & 0x80 else 1
        if extended & 0x40:  # L: TL0PICIDX
            offset += 1
        if extended & 0x30:  # T or K: TID/KEYIDX byte
            offset += 1
    if len(payload) <= offset:
        return False
    # VP8 payload header: bit 0 of the first byte is the inverse key frame flag.
    return not (payload[offset] & 0x01)
