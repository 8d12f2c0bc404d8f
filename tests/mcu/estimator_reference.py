"""The send-side estimator's rate control in Python, for the tests alone.

The service runs it in C (mcu/_fanout.c, ``SendSideEstimator``; the why of each rule is
in mcu/congestion.py's docstring); this is what the C code is checked against, number
for number, on simulated links (tests/mcu/test_congestion.py). It was the service's own
until it moved to C.
"""

from __future__ import annotations

import math
from collections import deque

from mcu._fanout import DelayTrend, summarize

from mcu.congestion import PacketResult

BURST_S = 0.005
DECREASE_FACTOR = 0.85
INCREASE_PER_S = 0.08
MAX_OVER_RECEIVED = 1.5
RATE_WINDOW_S = 0.5
START_BPS = 1_000_000
MIN_BPS = 50_000
MAX_BPS = 20_000_000
START_RTT_S = 0.1  # a typical round trip, until one is measured
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
LOSS_WINDOW_S = 1.0
CAPACITY_MEMORY_S = 10.0  # how long the rate of the last overuse is remembered
BASE_DELAY_WINDOW_S = 5.0  # the path's delay with no queue: the least seen this recently
# What summarize() makes of one feedback (mcu/_fanout.c): groups of
# packets sent together (first send, last send, latest arrival), packets sent and lost,
# bytes that arrived, first and last arrival, the least one-way delay and its arrival.
FeedbackSummary = tuple[list[tuple[float, float, float]], int, int, int,
                        float | None, float | None, float | None, float | None]


class ReferenceEstimator:
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
        self.rtt_s = START_RTT_S  # the subscriber's round trip, set from RTCP
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
                self._hold_until = now_s + self.rtt_s + 0.2
            return
        if state == "underuse":  # a queue draining: the rate that built it is no guide
            return
        if now_s < self._hold_until:
            return
        if self._capacity_bps is not None and now_s - self._overused_at > CAPACITY_MEMORY_S:
            self._capacity_bps = None  # long without a queue: the path may have changed
        if self._capacity_bps is not None and self.delay_bps > 0.9 * self._capacity_bps:
            # Near where it last overused: about one packet more per round trip.
            increased = self.delay_bps + 1200 * 8 / (self.rtt_s + 0.1) * elapsed
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
