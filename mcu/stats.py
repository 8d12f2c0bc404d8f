"""Counters of one media worker, read by /metrics at scrape time.

Plain integers: the forwarding path increments them per packet, so they must cost
nothing more than an attribute update.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class WorkerCounters:
    packets_received: int = 0
    packets_forwarded: int = 0
    bytes_forwarded: int = 0
    packets_malformed: int = 0
    rtcp_malformed: int = 0
    packets_unroutable: int = 0
    send_errors: int = 0
    handler_errors: int = 0
    keyframe_requests: int = 0
    nacks_received: int = 0
    retransmissions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
