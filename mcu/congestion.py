"""A send-side bandwidth estimate per subscriber connection, from transport-cc feedback.

GCC-like (draft-ietf-rmcat-gcc-02, in our own reduced form), over plain values so it
is tested without media. What is done per packet or per group of packets is in C
(mcu/_fanout.c: ``Sink.feedback`` and ``summarize`` sum each feedback up, ``DelayTrend``
follows the delay): in Python it cost more per packet than forwarding it; the rate
control, once per feedback, is here:

* delay: packets sent within :data:`BURST_S` of each other form a group; for each pair
  of groups the change in one-way delay (inter-arrival minus inter-departure time) is
  accumulated, smoothed, and a line fitted through the last 20 points; its slope,
  compared with an adaptive threshold, says whether a queue is building (overuse),
  draining (underuse) or neither;
* rate: on overuse the estimate drops to :data:`DECREASE_FACTOR` times what the
  subscriber actually received; while normal it grows, multiplicatively (8 % a
  second) until it nears the rate where it last had to drop, additively (about a
  packet per round trip) near it, so it does not swing around the link's capacity;
  it never runs far ahead of what was received (1.5 times), and, when no overuse was
  seen for :data:`CAPACITY_MEMORY_S`, never stays below what was received with no
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
from collections import deque
from typing import NamedTuple

from mcu._fanout import DelayTrend, summarize

BURST_S = 0.005
DECREASE_FACTOR = 0.85
INCREASE_PER_S = 0.08
MAX_OVER_RECEIVED = 1.5
RATE_WINDOW_S = 0.5
START_BPS = 1_000_000
MIN_BPS = 50_000
MAX_BPS = 20_000_000
ASSUMED_RTT_S = 0.1  # we do not measure the subscriber's round trip; a typical one
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
LOSS_WINDOW_S = 1.0
CAPACITY_MEMORY_S = 10.0  # how long the rate of the last overuse is remembered
BASE_DELAY_WINDOW_S = 5.0  # the path's delay with no queue: the least seen this recently
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


# What Sink.feedback() and summarize() make of one feedback (mcu/_fanout.c): groups of
# packets sent together (first send, last send, latest arrival), packets sent and lost,
# bytes that arrived, first and last arrival, the least one-way delay and its arrival.
FeedbackSummary = tuple[list[tuple[float, float, float]], int, int, int,
                        float | None, float | None, float | None, float | None]


class SendSideEstimator:
    """One subscriber connection's estimate, updated from each feedback packet."""

    def __init__(self, start_bps: int = START_BPS) -> None:
        self.detector = DelayTrend(BURST_S)
        self.delay_bps = float(start_bps)
        self.loss_bps = float(start_bps)
        self.decreases = 0  # overuse responses (for tests and the operator)
        self.received_bps = 0.0
        self.loss = 0.0
        # Per feedback within RATE_WINDOW_S: (first arrival, last arrival, bytes).
        self._received: deque[tuple[float, float, int]] = deque()
        self._newest_arrival = -math.inf
        self._losses: deque[tuple[float, int, int]] = deque()  # (when, sent, lost) per feedback
        self._last_change: float | None = None
        self._hold_until = 0.0
        self._capacity_bps: float | None = None  # the received rate at the last decrease
        self._loss_cut_at = -math.inf
        self._overused_at = -math.inf
        # (arrival, one-way delay) minima, oldest first, for the path's delay with no
        # queue (the clocks differ by a constant: only changes in it mean anything).
        self._delays: deque[tuple[float, float]] = deque()

    @property
    def estimate_bps(self) -> int:
        return int(max(MIN_BPS, min(self.delay_bps, self.loss_bps)))

    def on_feedback(self, now_s: float, packets: list[PacketResult]) -> int:
        """Take one feedback's packets (in the order sent); returns the new estimate."""
        return self.on_summary(now_s, summarize(packets, BURST_S))

    def on_summary(self, now_s: float, summary: FeedbackSummary) -> int:
        """Take one feedback as the C path sums it up (``Sink.feedback``, or
        ``summarize`` of packets: mcu/_fanout.c), per group of packets rather than per
        packet, which in Python cost more than forwarding them; returns the new
        estimate."""
        groups, sent, lost, size, first_arrival, last_arrival, least_delay, least_delay_at = summary
        if first_arrival is not None and last_arrival is not None:
            self._received.append((first_arrival, last_arrival, size))
            self._newest_arrival = max(self._newest_arrival, last_arrival)
            assert least_delay is not None and least_delay_at is not None
            self._note_delay(least_delay_at, least_delay)
        self.detector.add(groups)
        if self._received:
            received = self._received
            while received and received[0][1] < self._newest_arrival - RATE_WINDOW_S:
                received.popleft()
            if received:
                span = max(self._newest_arrival - min(first for first, _, _ in received), RATE_WINDOW_S / 2)
                self.received_bps = sum(size for _, _, size in received) * 8 / span
        self._update_delay_rate(now_s)
        self._update_loss_rate(now_s, sent, lost)
        return self.estimate_bps

    @property
    def base_delay_s(self) -> float | None:
        """The least one-way delay seen lately (plus the clocks' offset): the path with
        no queue on it. None before any feedback."""
        return self._delays[0][1] if self._delays else None

    def _note_delay(self, arrival_s: float, delay_s: float) -> None:
        # A deque of increasing delays: the front is the least within the window.
        delays = self._delays
        while delays and delays[-1][1] >= delay_s:
            delays.pop()
        delays.append((arrival_s, delay_s))
        while delays[0][0] < arrival_s - BASE_DELAY_WINDOW_S:
            delays.popleft()

    def probed(self, bps: float) -> None:
        """A padding probe showed that the link carries ``bps`` with no queue: the
        estimate is at least that now, and the rate of the last overuse is forgotten
        (the path has changed)."""
        self.delay_bps = max(self.delay_bps, min(bps, MAX_BPS))
        self.loss_bps = max(self.loss_bps, min(bps, MAX_BPS))
        self._capacity_bps = None

    def _update_delay_rate(self, now_s: float) -> None:
        elapsed = 0.0 if self._last_change is None else min(now_s - self._last_change, 1.0)
        self._last_change = now_s
        state = self.detector.state
        if state == "overuse":
            if now_s >= self._hold_until and self.received_bps > 0:
                # Below what got through: the queue that built up drains.
                target = DECREASE_FACTOR * self.received_bps
                if target < self.delay_bps:
                    self.delay_bps = target
                    self.decreases += 1
                    self._capacity_bps = self.received_bps
                self._overused_at = now_s
                # One decrease per round trip and feedback interval: the next feedback
                # still shows the queue this one saw.
                self._hold_until = now_s + ASSUMED_RTT_S + 0.2
            return
        if state == "underuse":  # a queue draining: the rate that built it is no guide
            return
        if now_s < self._hold_until:
            return
        if self._capacity_bps is not None and now_s - self._overused_at > CAPACITY_MEMORY_S:
            self._capacity_bps = None  # long without a queue: the path may have changed
        if self._capacity_bps is not None and self.delay_bps > 0.9 * self._capacity_bps:
            # Near where it last overused: about one packet more per round trip.
            increased = self.delay_bps + 1200 * 8 / (ASSUMED_RTT_S + 0.1) * elapsed
            if increased > 1.5 * self._capacity_bps:
                self._capacity_bps = None  # far past it: the path has changed
        else:
            increased = self.delay_bps * (1 + INCREASE_PER_S) ** elapsed
        # Growth stops at 1.5 times what got through (capacity it has not seen is only
        # a guess); it is a limit on growing, not a reason to drop.
        ceiling = max(self.delay_bps, MAX_OVER_RECEIVED * self.received_bps + 10_000)
        self.delay_bps = max(min(increased, ceiling, MAX_BPS), MIN_BPS)
        if self._capacity_bps is None:
            # Unlike a browser's sender, we do not choose how fast we send: the
            # publishers do. Away from a recent overuse, what got through with no queue
            # building up is carried, whatever the estimate said before (a probe that
            # worked: mcu/lastn.py resumes one video at a time after a quiet spell).
            # Near one, only the slow climb above: the way up stays careful.
            self.delay_bps = max(self.delay_bps, self.received_bps)

    def _update_loss_rate(self, now_s: float, sent: int, lost: int) -> None:
        self._losses.append((now_s, sent, lost))
        while self._losses and self._losses[0][0] < now_s - LOSS_WINDOW_S:
            self._losses.popleft()
        total = sum(s for _, s, _ in self._losses)
        self.loss = sum(lost for _, _, lost in self._losses) / total if total else 0.0
        elapsed = 0.0 if len(self._losses) < 2 else now_s - self._losses[-2][0]
        if self.loss > LOSS_HIGH:
            # As GCC: lower in proportion to the loss, at most once a window.
            # Relative to what gets through, not to the last estimate: loss that goes on
            # at a link's capacity settles the estimate there instead of at the floor.
            if now_s - self._loss_cut_at >= LOSS_WINDOW_S / 3:
                cut = max(MIN_BPS, self.received_bps * (1 - 0.5 * self.loss))
                self.loss_bps = min(self.loss_bps, cut)
                self._loss_cut_at = now_s
        elif self.loss < LOSS_LOW:
            # As the delay estimate: what got through with hardly a loss is carried.
            self.loss_bps = max(self.loss_bps * (1 + INCREASE_PER_S) ** min(elapsed, 1.0),
                                self.received_bps)
            # Loss says nothing about capacity it has not seen: it never leads delay.
            self.loss_bps = min(self.loss_bps, max(self.delay_bps, MIN_BPS))


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
