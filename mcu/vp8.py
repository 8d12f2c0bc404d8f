"""VP8 RTP payload descriptor (RFC 7741): enough to find where a keyframe starts."""

from __future__ import annotations


def is_keyframe_start(packet: bytes, start: int = 0) -> bool:
    """True when the VP8 payload at ``packet[start:]`` begins a keyframe (first partition
    start, P bit clear). Reading in place spares a copy of the payload per packet."""
    size = len(packet)
    if size <= start:
        return False
    first = packet[start]
    start_of_partition = first & 0x10
    partition_index = first & 0x07
    if not start_of_partition or partition_index != 0:
        return False
    offset = start + 1
    if first & 0x80:  # X: extended control bits follow
        if size <= offset:
            return False
        extended = packet[offset]
        offset += 1
        if extended & 0x80:  # I: picture ID, 7 or 15 bits
            if size <= offset:
                return False
            offset += 2 if packet[offset] & 0x80 else 1
        if extended & 0x40:  # L: TL0PICIDX
            offset += 1
        if extended & 0x30:  # T or K: TID/KEYIDX byte
            offset += 1
    if size <= offset:
        return False
    # VP8 payload header: bit 0 of the first byte is the inverse key frame flag.
    return not (packet[offset] & 0x01)
