"""Counters of one media worker, read by /metrics at scrape time.

The packet path's counters live in C (:class:`mcu._fanout.Counters`), where received
packets are counted and forwarded; the rest are plain integers that Python code
increments. Both read and write as attributes of :class:`WorkerCounters`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mcu._fanout import Counters

PACKET_PATH_COUNTERS = ("packets_received", "packets_forwarded", "bytes_forwarded",
                        "packets_malformed", "packets_unroutable", "send_errors")


def _packet_path_counter(name: str) -> property:
    def read(self: WorkerCounters) -> int:
        return getattr(self.packet_path, name)

    def write(self: WorkerCounters, value: int) -> None:
        setattr(self.packet_path, name, value)

    return property(read, write, doc=f"{name} (counted in C, mcu/_fanout.c)")


@dataclass(slots=True)
class WorkerCounters:
    rtcp_malformed: int = 0
    handler_errors: int = 0
    keyframe_requests: int = 0
    nacks_received: int = 0
    retransmissions: int = 0
    padding_packets: int = 0  # padding probes' copies (mcu/congestion.py)
    # The pipe between workers (mcu/pipe.py): datagrams dropped there (garbage, unknown
    # SSRC, RTCP it has no use for), and feedback the other workers sent up it.
    pipe_dropped: int = 0
    pipe_keyframe_requests: int = 0
    pipe_nacks_received: int = 0
    pipe_layer_reports: int = 0  # which layers of a camera we pipe another worker uses there
    # Datagrams for a connection whose DTLS has not started reading (no answer yet), or
    # not yet keyed, dropped beyond a small bound (mcu/aiortc_adapter.py, tap_transport).
    datagrams_dropped_unkeyed: int = 0
    # Room units on plain RTP (mcu/unit.py): datagrams dropped (not RTP, not from the
    # unit's address, not authentic SRTP).
    unit_dropped: int = 0
    packet_path: Counters = field(default_factory=Counters)

    packets_received = _packet_path_counter("packets_received")
    packets_forwarded = _packet_path_counter("packets_forwarded")
    bytes_forwarded = _packet_path_counter("bytes_forwarded")
    packets_malformed = _packet_path_counter("packets_malformed")
    packets_unroutable = _packet_path_counter("packets_unroutable")
    send_errors = _packet_path_counter("send_errors")

    def as_dict(self) -> dict[str, int]:
        counts = {name: getattr(self, name) for name in PACKET_PATH_COUNTERS}
        counts.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "packet_path"})
        counts["stun_malformed"] = self.stun_malformed
        return counts

    @property
    def stun_malformed(self) -> int:
        """Malformed STUN datagrams dropped in this process (counted by the adapter)."""
        from mcu.aiortc_adapter import malformed_stun_count

        return malformed_stun_count()
