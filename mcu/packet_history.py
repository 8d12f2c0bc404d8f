"""Packets recently sent on one consumer, by outgoing sequence number, to answer NACKs."""

from __future__ import annotations

HISTORY_SIZE = 512  # about 2 s of 720p video: NACKs for older packets are not worth it


class PacketHistory:
    """A fixed ring of the last sent packets (unencrypted RTP bytes)."""

    __slots__ = ("_packets", "_size")

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._size = size
        self._packets: list[tuple[int, bytes] | None] = [None] * size

    def add(self, seq: int, packet: bytes) -> None:
        self._packets[seq % self._size] = (seq, packet)

    def get(self, seq: int) -> bytes | None:
        entry = self._packets[seq % self._size]
        if entry is not None and entry[0] == seq:
            return entry[1]
        return None
