"""A send-side bandwidth estimate per subscriber connection, from transport-cc feedback.

GCC-like (draft-ietf-rmcat-gcc-02, in our own reduced form), over plain values so it
is tested without media. It runs in C (mcu/_fanout.c: ``SendSideEstimator``, which
reads each feedback packet straight into a summary, ``DelayTrend`` and the rate control
below): in Python it cost more per forwarded packet than forwarding it, first per
reported packet, then, summed up in C, about 8 us per feedback for the rate control
alone (tests/mcu/estimator_reference.py keeps that Python, which the C is checked
against). What it does:

* delay: packets sent within 5 ms of each other form a group; for each pair
  of groups the change in one-way delay (inter-arrival minus inter-departure time) is
  accumulated, smoothed, and a line fitted through the last 20 points; its slope,
  compared with an adaptive threshold, says whether a queue is building (overuse),
  draining (underuse) or neither;
* rate: on overuse the estimate drops to 0.85 times what the
  subscriber actually received; while normal it grows, multiplicatively (8 % a
  second) until it nears the rate where it last had to drop, additively (about a
  packet per round trip) near it, so it does not swing around the link's capacity;
  it never runs far ahead of what was received (1.5 times), and, when no overuse was
  seen for 10 s, never stays below what was received with no
  queue building (we do not choose our sending rate: the publishers do, and last-N's
  probes are how a paused video comes back);
* loss: over 10 % lost lowers the estimate, under 2 % lets it grow, in between holds.

The estimate is the lower of the delay and the loss estimates. It feeds the same
structures REMB does (mcu/lastn.py): we cannot make publishers send faster, so a
subscriber's estimate is what pauses its videos when its link is congested.

Nor can it climb past what the videos carry, so before a subscriber's video steps up a
simulcast layer (mcu/room.py) its link is tried with padding: :class:`PaddingProbe`
judges a short spell in which what the subscriber receives is padded up to the rate the
higher layer needs (redundant retransmissions of packets it already has, which its
decoder ignores). A link that cannot carry it shows a queue or loss within a few hundred
milliseconds, and the probe stops there: padding lost costs no picture, where a layer
switched up onto a link too thin for it costs freezes until it is switched back.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Padding probes: how long one pads, how far behind the path's own delay a packet may
# arrive (a queue building), and how many such packets or losses end it as failed. The
# queue a small office router keeps is 50 ms or so; a packet or two late is jitter.
PROBE_DURATION_S = 1.5
PROBE_QUEUE_S = 0.025
PROBE_LATE_PACKETS = 5
PROBE_LOST_PACKETS = 3
PROBE_LOST_SHARE = 0.1
PROBE_RATE_SHARE = 0.85  # what must arrive, of the rate tried, for the probe to pass


class PacketResult(NamedTuple):
    """One packet we sent: when (our clock, seconds), how big, and when it arrived
    (the receiver's clock, seconds; None: lost)."""

    sent_at: float
    size: int
    arrived_at: float | None


class PaddingProbe:
    """One try of whether a subscriber's link carries ``target_bps`` (see the module's
    docstring): what was sent from ``started_at`` on is judged by its feedback.

    Failed as soon as :data:`PROBE_LATE_PACKETS` packets arrived more than
    :data:`PROBE_QUEUE_S` behind the path's own delay, or :data:`PROBE_LOST_PACKETS`
    were lost and more than :data:`PROBE_LOST_SHARE` of them; passed once it has padded
    for :data:`PROBE_DURATION_S` and feedback for all of that says what arrived came at
    :data:`PROBE_RATE_SHARE` of the rate or more.
    """

    def __init__(self, started_at: float, target_bps: float, base_delay_s: float | None) -> None:
        self.started_at = started_at
        self.target_bps = target_bps
        self.base_delay_s = base_delay_s
        self.packets = 0  # sent since it started, that feedback has covered
        self.late = 0
        self.lost = 0
        self.failed = False
        self.received_bps = 0.0
        self._bytes = 0
        self._first_arrival: float | None = None
        self._last_arrival: float | None = None
        self._last_sent = -math.inf  # the newest send time feedback has covered

    @property
    def open(self) -> bool:
        """Whether feedback still says anything to it (not yet failed or covered)."""
        return not self.failed and self._last_sent < self.started_at + PROBE_DURATION_S

    def on_feedback(self, packets: list[PacketResult]) -> None:
        if not self.open:
            return  # judged: what comes after is no business of this probe
        for packet in packets:
            if packet.sent_at < self.started_at:
                continue
            self._last_sent = max(self._last_sent, packet.sent_at)
            self.packets += 1
            if packet.arrived_at is None:
                self.lost += 1
                continue
            if self.base_delay_s is not None and \
                    packet.arrived_at - packet.sent_at - self.base_delay_s > PROBE_QUEUE_S:
                self.late += 1
            if packet.sent_at <= self.started_at + PROBE_DURATION_S:
                self._bytes += packet.size
                arrived = packet.arrived_at
                if self._first_arrival is None or arrived < self._first_arrival:
                    self._first_arrival = arrived
                if self._last_arrival is None or arrived > self._last_arrival:
                    self._last_arrival = arrived
        # Loss at random (a lossy radio link) is not a full link: a share of losses is.
        if self.late >= PROBE_LATE_PACKETS or (
                self.lost >= PROBE_LOST_PACKETS and self.lost > PROBE_LOST_SHARE * self.packets):
            self.failed = True
        if self._first_arrival is not None and self._last_arrival is not None:
            span = max(self._last_arrival - self._first_arrival, 0.1)
            self.received_bps = self._bytes * 8 / span

    def verdict(self, now: float) -> str | None:
        """``"failed"``, ``"passed"``, or None while it is still out. One whose feedback
        stops coming (the link went) fails after twice its length."""
        if self.failed:
            return "failed"
        if self._last_sent >= self.started_at + PROBE_DURATION_S:
            return "passed" if self.received_bps >= PROBE_RATE_SHARE * self.target_bps else "failed"
        if now - self.started_at > 2 * PROBE_DURATION_S + 1.0:
            return "failed"
        return None
